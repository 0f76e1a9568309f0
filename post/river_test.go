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
	"github.com/dibs-io/dibs/internal/testenv"
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

// TestRunnerOnRiver runs jobs on a River client over SQLite. It is not
// parallel: it waits on River's own timers, and runs before the
// simulation takes every core.
func TestRunnerOnRiver(t *testing.T) {
	ctx := context.Background()
	s := newRiverStore(t)
	for _, id := range []string{"c1", "c2"} {
		s.claims[id] = &dibs.Claim{ID: id, DropID: "drop", UserID: "u-" + id, Slot: 1, State: dibs.ClaimConfirmed}
	}
	s.claims["c3"] = &dibs.Claim{ID: "c3", DropID: "drop", UserID: "u-c3", Slot: 2, State: dibs.ClaimHeld, PayRequestedAt: simStart}
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
	pg := &scriptedPayer{script: []error{payment.ErrUnavailable, payment.ErrCircuitOpen, payment.ErrOutcomeUnknown}}
	r, err := post.NewRunner(post.Config{
		Store: s, JobClient: s.NewJobClient, Release: simGate{}, Payer: pg, Notifier: notifier,
		PollInterval: riverPoll, RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	})
	// The stores insert jobs in their own transactions; a bare client
	// stands in for them here.
	inserter, err := river.NewClient(s.driver, &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	insert := func(args river.JobArgs) {
		t.Helper()
		if _, err := inserter.Insert(ctx, args, nil); err != nil {
			t.Fatal(err)
		}
	}
	jobs := func(kind string) []*rivertype.JobRow {
		t.Helper()
		res, err := inserter.JobList(ctx, river.NewJobListParams().Kinds(kind))
		if err != nil {
			t.Fatal(err)
		}
		return res.Jobs
	}
	completed := func(rows []*rivertype.JobRow) bool {
		return len(rows) > 0 && !slices.ContainsFunc(rows, func(row *rivertype.JobRow) bool { return row.State != rivertype.JobStateCompleted })
	}

	// A snooze spends no attempt (the next run charges without a lookup),
	// an unknown outcome does (the next run looks the key up).
	t.Run("charge", func(t *testing.T) {
		insert(post.ChargePaymentArgs{ClaimRef: post.ClaimRef{ClaimID: "c3", DropID: "drop"}})
		var rows []*rivertype.JobRow
		testenv.WaitFor(t, "the charge to complete", func() bool { rows = jobs(post.KindChargePayment); return completed(rows) })
		if c, _ := s.FindClaim(ctx, "c3"); c.State != dibs.ClaimPaid {
			t.Errorf("claim is %s, want paid", c.State)
		}
		pg.mu.Lock()
		if want := []string{"charge", "charge", "charge", "lookup"}; !slices.Equal(pg.calls, want) {
			t.Errorf("gateway calls %v, want %v", pg.calls, want)
		}
		pg.mu.Unlock()
		if rows[0].Attempt != 2 || rows[0].Queue != post.KindChargePayment {
			t.Errorf("the job spent %d attempts in queue %q, want 2 (snoozes spend none) in %q", rows[0].Attempt, rows[0].Queue, post.KindChargePayment)
		}
		// The River worker reads the count of snoozes from this key.
		var meta struct {
			Snoozes int `json:"snoozes"`
		}
		if err := json.Unmarshal(rows[0].Metadata, &meta); err != nil || meta.Snoozes != 2 {
			t.Errorf("metadata %s: want snoozes 2", rows[0].Metadata)
		}
	})

	// One webhook is delivered; one is refused for good and listed as
	// failed until an operator retries it.
	t.Run("webhooks", func(t *testing.T) {
		for _, id := range []string{"c1", "c2", "c1"} { // the second c1 adds nothing: unique by args
			insert(post.NotifyWinnerArgs{ClaimRef: post.ClaimRef{ClaimID: id, DropID: "drop"}})
		}
		var failed []post.FailedJob
		testenv.WaitFor(t, "the refused webhook to be listed", func() bool {
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
		var rows []*rivertype.JobRow
		testenv.WaitFor(t, "both webhooks to be delivered", func() bool { rows = jobs(post.KindNotifyWinner); return completed(rows) })
		mu.Lock()
		if delivered[post.KindNotifyWinner+":c1"] != 1 || delivered[post.KindNotifyWinner+":c2"] != 1 {
			t.Errorf("deliveries %v, want one of each", delivered)
		}
		mu.Unlock()
		if len(rows) != 2 {
			t.Errorf("%d notify_winner jobs, want 2 (one per claim)", len(rows))
		}
		if got, _ := r.FailedWebhooks(ctx, "", 10); len(got) != 0 {
			t.Errorf("failed webhooks after the retry: %+v, want none", got)
		}
		if err := r.Retry(ctx, failed[0].ID); dibs.ErrorCode(err) != dibs.ENOTFOUND {
			t.Errorf("Retry of a completed job: %v, want %s", err, dibs.ENOTFOUND)
		}
	})
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

func (p *scriptedPayer) Refund(ctx context.Context, key string) (*payment.Charge, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "refund")
	return &payment.Charge{Key: key, Status: payment.StatusRefunded}, nil
}

func (p *scriptedPayer) Lookup(ctx context.Context, key string) (*payment.Charge, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "lookup")
	return &payment.Charge{Key: key, Status: payment.StatusPaid}, nil
}
