package post_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
	_ "modernc.org/sqlite"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
)

// riverStore is a record with River's tables in SQLite and nothing else:
// enough to run the Runner on a real River client. The stores' own tests
// run it against their records.
type riverStore struct {
	*pumpStore
	driver *riversqlite.Driver

	mu     sync.Mutex
	claims map[string]*dibs.Claim
}

func (s *riverStore) NewJobClient(cfg *river.Config) (post.JobClient, error) {
	return river.NewClient(s.driver, cfg)
}

func (s *riverStore) FindClaim(ctx context.Context, id string) (*dibs.Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[id]
	if !ok {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	}
	cp := *c
	return &cp, nil
}

func (s *riverStore) FindDrop(ctx context.Context, id string) (*dibs.Drop, error) {
	return &dibs.Drop{ID: id, Kind: dibs.KindPurchase, Price: 5000, Currency: "KRW"}, nil
}

func (s *riverStore) SettlePayment(ctx context.Context, id string, paid bool, now time.Time) (*dibs.Claim, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.claims[id]
	changed := c.State == dibs.ClaimHeld
	if changed {
		c.State = dibs.ClaimPaid
		if !paid {
			c.State = dibs.ClaimReleased
		}
	}
	cp := *c
	return &cp, changed, nil
}

func newRiverStore(t *testing.T) *riverStore {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(filepath.Join(t.TempDir(), "river.db"))+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	driver := riversqlite.New(db)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migrator.Migrate(context.Background(), rivermigrate.DirectionUp, nil); err != nil {
		t.Fatal(err)
	}
	return &riverStore{pumpStore: newPumpStore(0, 0), driver: driver, claims: make(map[string]*dibs.Claim)}
}

// TestRunnerOnRiver runs webhook jobs on a River client over SQLite: one is
// delivered, one is refused for good and listed as failed until an
// operator retries it.
func TestRunnerOnRiver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newRiverStore(t)
	for _, id := range []string{"c1", "c2"} {
		s.claims[id] = &dibs.Claim{ID: id, DropID: "drop", UserID: "u-" + id, Slot: 1, State: dibs.ClaimConfirmed}
	}
	var (
		mu        sync.Mutex
		delivered = make(map[string]int)
		refuse    = true
	)
	notifier := notifyFunc(func(_ context.Context, n post.Notice) error {
		mu.Lock()
		defer mu.Unlock()
		if n.ID == post.KindNotifyWinner+":c2" && refuse {
			return fmt.Errorf("400: %w", post.ErrPermanent)
		}
		delivered[n.ID]++
		return nil
	})
	r, err := post.NewRunner(post.Config{Store: s, Release: simGate{}, Notifier: notifier, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := r.Stop(stopCtx); err != nil {
			t.Error(err)
		}
	})

	// The stores insert jobs in their own transactions; a bare client
	// stands in for them here.
	inserter, err := river.NewClient(s.driver, &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2", "c1"} { // the second c1 is a duplicate: unique by args
		if _, err := inserter.Insert(ctx, post.NotifyWinnerArgs{ClaimRef: post.ClaimRef{ClaimID: id, DropID: "drop"}}, nil); err != nil {
			t.Fatal(err)
		}
	}

	var failed []post.FailedJob
	waitFor(t, "the refused webhook to be listed", func() bool {
		failed, err = r.FailedWebhooks(ctx, "drop", 10)
		return err == nil && len(failed) == 1
	})
	if f := failed[0]; f.ClaimID != "c2" || f.Kind != post.KindNotifyWinner || f.Attempts != 1 || f.LastError == "" || f.FinalizedAt.IsZero() {
		t.Errorf("failed job %+v: want c2's notify_winner after 1 attempt, with its error and time", f)
	}
	if got, _ := r.FailedWebhooks(ctx, "other-drop", 10); len(got) != 0 {
		t.Errorf("another drop's failed webhooks: %+v, want none", got)
	}
	if err := r.Retry(ctx, failed[0].ID+1000); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Errorf("Retry of no such job: %v, want %s", err, dibs.ENOTFOUND)
	}

	mu.Lock()
	refuse = false
	mu.Unlock()
	if err := r.Retry(ctx, failed[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both webhooks to be delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return delivered[post.KindNotifyWinner+":c1"] == 1 && delivered[post.KindNotifyWinner+":c2"] == 1
	})
	if got, _ := r.FailedWebhooks(ctx, "", 10); len(got) != 0 {
		t.Errorf("failed webhooks after the retry: %+v, want none", got)
	}
	if err := r.Retry(ctx, failed[0].ID); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Errorf("Retry of a completed job: %v, want %s", err, dibs.ENOTFOUND)
	}

	var rows []*rivertype.JobRow
	waitFor(t, "both jobs to complete", func() bool {
		res, err := inserter.JobList(ctx, river.NewJobListParams().Kinds(post.KindNotifyWinner))
		if err != nil {
			t.Fatal(err)
		}
		rows = res.Jobs
		return !slices.ContainsFunc(rows, func(row *rivertype.JobRow) bool { return row.State != rivertype.JobStateCompleted })
	})
	if len(rows) != 2 {
		t.Errorf("%d notify_winner jobs, want 2 (one per claim)", len(rows))
	}
	for _, row := range rows {
		if row.Queue != post.KindNotifyWinner {
			t.Errorf("job %d ran in queue %q, want %q", row.ID, row.Queue, post.KindNotifyWinner)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scriptedPayer answers with the errors it was given, then with the truth
// (paid) to a lookup.
type scriptedPayer struct {
	mu     sync.Mutex
	script []error
	calls  []string
}

func (p *scriptedPayer) Charge(ctx context.Context, key string, req payment.ChargeRequest) (*payment.Charge, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "charge")
	if len(p.script) > 0 {
		err := p.script[0]
		p.script = p.script[1:]
		return nil, err
	}
	return &payment.Charge{Key: key, Status: payment.StatusPaid}, nil
}

func (p *scriptedPayer) Lookup(ctx context.Context, key string) (*payment.Charge, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "lookup")
	return &payment.Charge{Key: key, Status: payment.StatusPaid}, nil
}

// TestChargeOnRiver: on River, a snooze spends no attempt (the next run
// charges without a lookup) and an unknown outcome does (the next run
// looks the key up).
func TestChargeOnRiver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newRiverStore(t)
	s.claims["c1"] = &dibs.Claim{ID: "c1", DropID: "drop", UserID: "u1", Slot: 1, State: dibs.ClaimHeld, PayRequestedAt: simStart}
	pg := &scriptedPayer{script: []error{payment.ErrUnavailable, payment.ErrCircuitOpen, payment.ErrOutcomeUnknown}}
	r, err := post.NewRunner(post.Config{
		Store: s, Release: simGate{}, Payer: pg,
		PollInterval: 20 * time.Millisecond, RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(ctx) })
	inserter, err := river.NewClient(s.driver, &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inserter.Insert(ctx, post.ChargePaymentArgs{ClaimRef: post.ClaimRef{ClaimID: "c1", DropID: "drop"}}, nil); err != nil {
		t.Fatal(err)
	}
	var row *rivertype.JobRow
	waitFor(t, "the charge to complete", func() bool {
		res, err := inserter.JobList(ctx, river.NewJobListParams().Kinds(post.KindChargePayment))
		if err != nil {
			t.Fatal(err)
		}
		row = res.Jobs[0]
		return row.State == rivertype.JobStateCompleted
	})
	if c, _ := s.FindClaim(ctx, "c1"); c.State != dibs.ClaimPaid {
		t.Errorf("claim is %s, want paid", c.State)
	}
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if want := []string{"charge", "charge", "charge", "lookup"}; !slices.Equal(pg.calls, want) {
		t.Errorf("gateway calls %v, want %v", pg.calls, want)
	}
	if row.Attempt != 2 {
		t.Errorf("the job spent %d attempts, want 2 (snoozes spend none)", row.Attempt)
	}
	// The River worker reads the count of snoozes from this key.
	var meta struct {
		Snoozes int `json:"snoozes"`
	}
	if err := json.Unmarshal(row.Metadata, &meta); err != nil || meta.Snoozes != 2 {
		t.Errorf("metadata %s: want snoozes 2", row.Metadata)
	}
}
