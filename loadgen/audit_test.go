package loadgen_test

import (
	"testing"
	"time"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

func TestAuditPasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      loadgentest.Options
		kind      string
		queueRate int
		keys      bool
		checks    []string // must pass
	}{
		{name: "coupon", kind: "coupon",
			checks: []string{loadgen.AuditEqualStock, loadgen.AuditIdempotent, loadgen.AuditAckedPresent}},
		{name: "coupon with idempotency keys", kind: "coupon", keys: true,
			checks: []string{loadgen.AuditEqualStock, loadgen.AuditIdempotent}},
		{name: "purchase with declines", kind: "purchase",
			opts:   loadgentest.Options{Decline: func(n int) bool { return n%4 == 0 }},
			checks: []string{loadgen.AuditEqualStock, loadgen.AuditFinalStates, loadgen.AuditPayments}},
		{name: "queued", kind: "coupon", queueRate: 2000,
			checks: []string{loadgen.AuditEqualStock, loadgen.AuditAckedPresent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, cfg := setup(t, tt.opts, tt.kind, 40, tt.queueRate)
			cfg.Users = 300
			cfg.Profile = loadgen.Profile{Shape: loadgen.Spike, Duration: 300 * time.Millisecond}
			cfg.RetryFraction = 0.5
			cfg.IdempotencyKeys = tt.keys
			cfg.PollInterval = 20 * time.Millisecond
			rep := MustRun(t, cfg)
			if !rep.Audit.OK || rep.Err() != nil {
				t.Fatalf("audit failed (%v):\n%s", rep.Err(), summary(rep))
			}
			for _, name := range tt.checks {
				if c := check(t, rep, name); c.Status != loadgen.CheckPass {
					t.Errorf("%s = %s (%s), want pass", name, c.Status, c.Detail)
				}
			}
		})
	}
}

// Claims the client never got an answer to can leave the gate holding
// slots the record never got; the audit waits (SettleWait) for the server
// to give them back before it judges the stock, and fails it when the
// server does not settle in time.
func TestAuditSettles(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		grace  time.Duration // when the fake gives the slots back
		settle time.Duration
		want   loadgen.CheckStatus
	}{
		// The wait ends as soon as the stock adds up: its bound only has
		// to outlast a starved machine.
		{"waits for the slots to come back", 500 * time.Millisecond, time.Minute, loadgen.CheckPass},
		// The slots come back long after the test, however slow the run.
		{"does not wait", time.Hour, -1, loadgen.CheckFail},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, cfg := setup(t, loadgentest.Options{Orphans: 5, OrphanGrace: tt.grace}, "coupon", 50, 0)
			cfg.Users = 30 // fewer than the stock: every slot is not expected to go
			cfg.Profile = loadgen.Profile{Shape: loadgen.Spike, Duration: 100 * time.Millisecond}
			cfg.RetryFraction = 0
			cfg.SettleWait = tt.settle
			rep := MustRun(t, cfg)
			if c := check(t, rep, loadgen.AuditStockConserved); c.Status != tt.want {
				t.Errorf("%s = %s (%s), want %s", c.Name, c.Status, c.Detail, tt.want)
			}
		})
	}
}
