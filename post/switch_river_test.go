package post_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/payment/pgsim"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/sqlite"
	"github.com/dibs-io/dibs/storetest"
	"github.com/dibs-io/dibs/webhook"
	"github.com/dibs-io/dibs/webhook/webhooktest"
)

// The switches on a SQLite record and a River client: what arrives while a
// switch is off waits, and all of it is done once, after it is on again.

// switchRiverBundle is a SQLite record, a Runner over it with the
// switches of board, and its metrics.
type switchRiverBundle struct {
	store  *sqlite.Store
	board  *switchBoard
	reg    *prometheus.Registry
	runner *post.Runner
}

func newSwitchRiver(t *testing.T, opts ...func(*post.Config)) *switchRiverBundle {
	t.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b := &switchRiverBundle{store: store, board: &switchBoard{}, reg: prometheus.NewRegistry()}
	cfg := post.Config{
		Store:     store,
		JobClient: func(cfg *river.Config) (post.JobClient, error) { return sqlite.NewJobClient(store, cfg) },
		Release:   noRelease{},
		Switches:  b.board, Registerer: b.reg, Logger: slog.New(slog.DiscardHandler),
		SwitchRecheck: 50 * time.Millisecond,
		RetryMin:      20 * time.Millisecond, RetryMax: 200 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	b.runner, err = post.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *switchRiverBundle) start(t *testing.T) {
	t.Helper()
	if err := b.runner.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.runner.Stop(); err != nil {
			t.Error(err)
		}
	})
}

// snoozed is how many job runs of queue the switches held so far.
func (b *switchRiverBundle) snoozed(t *testing.T, queue string) float64 {
	t.Helper()
	return counters(t, b.reg)["dibs_post_switched_off_total "+queue]
}

// settled reports whether every job of the drop is completed.
func (b *switchRiverBundle) settled(t *testing.T, dropID string) bool {
	t.Helper()
	for key := range storetest.MustJobCounts(t, b.store, dropID) {
		_, state, _ := strings.Cut(key, "/")
		if state != string(rivertype.JobStateCompleted) {
			return false
		}
	}
	return true
}

// Payments off: no charge reaches the gateway and no hold whose payment
// was asked for expires, however long past its deadline; holds never
// asked to pay expire as usual. Back on: one charge per claim at the
// gateway, and every one of those claims paid.
func TestPaymentsSwitchOnRiver(t *testing.T) {
	const asked, unasked = 12, 4
	ctx := context.Background()
	sim, err := pgsim.New(pgsim.Config{Seed: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	pg, err := payment.New(payment.Config{BaseURL: srv.URL, RateLimit: -1, MaxAttempts: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	var deadline time.Time
	b := newSwitchRiver(t, func(c *post.Config) {
		c.Payer = pg
		// Every hold is an hour past its deadline, with no payment grace.
		c.Now = func() time.Time { return deadline.Add(time.Hour) }
	})
	d := storetest.MustCreatePurchaseDrop(t, b.store, asked+unasked, 1)
	var claims []*dibs.Claim
	for i := range asked + unasked {
		claims = append(claims, storetest.NewHold(d, fmt.Sprintf("u%d", i), int64(i+1), 1))
	}
	storetest.MustRecordAll(t, b.store, claims...)
	deadline = claims[0].HoldExpiresAt
	if _, err := b.runner.Pump(ctx); err != nil {
		t.Fatal(err)
	}
	b.board.set(dibs.SwitchPayments, false)
	// Requests are taken while payments are off: their charges wait.
	pay := &post.Payments{Store: b.store, Gateway: true, Now: func() time.Time { return deadline.Add(-time.Minute) }}
	for _, c := range claims[:asked] {
		if _, err := pay.RequestPayment(ctx, c.ID, c.UserID); err != nil {
			t.Fatalf("request payment of %s while payments are off: %v", c.ID, err)
		}
	}
	b.start(t)

	state := func(c *dibs.Claim) dibs.ClaimState {
		t.Helper()
		got, err := b.store.FindClaim(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.State
	}
	testenv.WaitFor(t, "the holds never asked to pay to expire, the others to wait on the switch", func() bool {
		for _, c := range claims[asked:] {
			if state(c) != dibs.ClaimExpired {
				return false
			}
		}
		// Each charge and each expiry snoozed a few times.
		return b.snoozed(t, post.QueueCharge) >= 3*asked && b.snoozed(t, post.QueueExpire) >= 3*asked
	})
	if got := sim.Ledger(); len(got) != 0 {
		t.Fatalf("while payments are off the gateway recorded %d charges, want none", len(got))
	}
	for _, c := range claims[:asked] {
		if s := state(c); s != dibs.ClaimHeld {
			t.Errorf("claim %s is %s while payments are off, want held", c.ID, s)
		}
	}

	b.board.set(dibs.SwitchPayments, true)
	testenv.WaitFor(t, "every job of the drop to be done", func() bool { return b.settled(t, d.ID) })
	var paid []string
	for _, c := range claims[:asked] {
		if s := state(c); s != dibs.ClaimPaid {
			t.Errorf("claim %s is %s after payments came back, want paid", c.ID, s)
		}
		paid = append(paid, c.ID)
	}
	var keys []string
	for _, e := range sim.Ledger() {
		keys = append(keys, e.Key)
		if e.Attempts != 1 || e.Status != payment.StatusPaid {
			t.Errorf("charge %s: %d requests, %s; want 1, paid", e.Key, e.Attempts, e.Status)
		}
	}
	slices.Sort(keys)
	slices.Sort(paid)
	if !slices.Equal(keys, paid) {
		t.Errorf("the gateway charged %v, want one charge per claim asked to pay: %v", keys, paid)
	}
}

// Webhooks off: nothing reaches the receiver. Back on: each notice is
// delivered once.
func TestWebhooksSwitchOnRiver(t *testing.T) {
	const winners = 20
	secret := []byte("0123456789abcdef-webhooks")
	rcv := webhooktest.NewReceiver(t, secret)
	sender, err := webhook.New(webhook.Config{URL: rcv.URL, Secret: secret, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b := newSwitchRiver(t, func(c *post.Config) { c.Notifier = signed{sender} })
	d := storetest.MustCreateDrop(t, b.store, winners, 1)
	for i := range winners {
		storetest.MustRecord(t, b.store, storetest.NewClaim(d, fmt.Sprintf("u%d", i), int64(i+1), 1))
	}
	b.board.set(dibs.SwitchWebhooks, false)
	b.start(t)

	testenv.WaitFor(t, "every delivery to wait on the switch a few times", func() bool {
		return b.snoozed(t, post.QueueWebhook) >= 3*winners
	})
	if n := rcv.Requests(); n != 0 {
		t.Fatalf("%d requests reached the receiver while webhooks were off, want none", n)
	}

	b.board.set(dibs.SwitchWebhooks, true)
	testenv.WaitFor(t, "every notify_winner job to be done", func() bool { return b.settled(t, d.ID) })
	if got := rcv.Count(post.KindNotifyWinner); got != winners || rcv.Duplicates() != 0 || rcv.Requests() != winners {
		t.Errorf("%d notify_winner events, %d duplicates, %d requests; want %d, 0, %d", got, rcv.Duplicates(), rcv.Requests(), winners, winners)
	}
}
