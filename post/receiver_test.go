package post_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/sqlite"
	"github.com/dibs-io/dibs/storetest"
	"github.com/dibs-io/dibs/webhook"
	"github.com/dibs-io/dibs/webhook/webhooktest"
)

// signed sends notices as signed webhooks, as dibs serve does.
type signed struct{ s *webhook.Sender }

func (n signed) Notify(ctx context.Context, no post.Notice) error {
	err := n.s.Send(ctx, webhook.Event{ID: no.ID, Type: no.Type, Time: no.Time, Data: no.Data})
	if err != nil && webhook.Permanent(err) {
		return fmt.Errorf("%w: %w", post.ErrPermanent, err)
	}
	return err
}

type noRelease struct{}

func (noRelease) ReleaseSlot(context.Context, string, string) (bool, error) { return false, nil }

// A receiver that is down for a while gets every notification once it is
// back: coupons are issued and their winners told, each event verified by
// its signature and received once by its id, whatever was retried.
func TestReceiverDownForAWhile(t *testing.T) {
	const winners = 40
	secret := []byte("0123456789abcdef-webhooks")
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	d := storetest.MustCreateDrop(t, store, winners, 1)
	for i := range winners {
		storetest.MustRecord(t, store, storetest.NewClaim(d, fmt.Sprintf("u%d", i), int64(i+1), 1))
	}

	rcv := webhooktest.NewReceiver(t, secret)
	rcv.Down(true)
	sender, err := webhook.New(webhook.Config{URL: rcv.URL, Secret: secret, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r, err := post.NewRunner(post.Config{
		Store: store, JobClient: func(cfg *river.Config) (post.JobClient, error) { return sqlite.NewJobClient(store, cfg) }, Release: noRelease{}, Notifier: signed{sender},
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })

	// Down: attempts arrive and are refused; nothing counts as received.
	testenv.WaitFor(t, "refused webhook attempts", func() bool { return rcv.Requests() >= winners/2 })
	if rcv.Requests() == 0 || len(rcv.Events()) != 0 {
		t.Fatalf("while down: %d requests, %d events", rcv.Requests(), len(rcv.Events()))
	}
	rcv.Down(false)
	events := rcv.WaitFor(winners, 60*time.Second)
	time.Sleep(300 * time.Millisecond) // late retries, if any, come in as duplicates
	if got := rcv.Count(post.KindNotifyWinner); got != winners || len(rcv.Events()) != winners {
		t.Fatalf("%d notify_winner events of %d, want %d", got, len(events), winners)
	}
	t.Logf("%d requests while down and after, %d events, %d duplicate deliveries", rcv.Requests(), len(rcv.Events()), rcv.Duplicates())
}
