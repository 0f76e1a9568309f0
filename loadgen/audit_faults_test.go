package loadgen_test

import (
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

// allChecks are the audit's checks; every one of them must be able to fail.
var allChecks = []string{
	loadgen.AuditWithinStock, loadgen.AuditEqualStock, loadgen.AuditUniqueSlots,
	loadgen.AuditPerUserLimit, loadgen.AuditAckedPresent, loadgen.AuditUnacked,
	loadgen.AuditStockConserved, loadgen.AuditIdempotent, loadgen.AuditServerErrors,
	loadgen.AuditFinalStates, loadgen.AuditPayments,
}

// TestAuditCatchesEachFault runs a spike against a fake server broken in
// one way at a time and asserts that exactly the checks that fault breaks
// fail, and that the same runs against a sound server fail none. Nothing
// depends on timing: the outcomes come from the order the server sees, and
// where a check needs claims after a payment settled (an undersell), the
// fake's waiting room admits them only then.
func TestAuditCatchesEachFault(t *testing.T) {
	t.Parallel()
	decline := func(every int) func(int) bool { return func(n int) bool { return n%every == 0 } }
	tests := []struct {
		name  string
		opts  loadgentest.Options
		kind  string
		setup func(*testing.T, *loadgen.Config, *loadgentest.Server)
		fails []string // exactly these checks fail
	}{
		{name: "sound coupon drop", kind: "coupon"},
		{name: "sound purchase drop with declines and a ledger", kind: "purchase",
			opts: loadgentest.Options{Decline: decline(4), Price: 1000}},

		// More winners than stock cannot have unique slots in 1..stock,
		// nor add up with a remaining stock that is never negative.
		{name: "an extra winner", kind: "coupon", opts: loadgentest.Options{OverIssue: 1},
			fails: []string{loadgen.AuditWithinStock, loadgen.AuditUniqueSlots, loadgen.AuditStockConserved}},
		{name: "two winners with one slot", kind: "coupon", opts: loadgentest.Options{DuplicateSlot: true},
			fails: []string{loadgen.AuditUniqueSlots}},
		{name: "sold out with slots left", kind: "coupon", opts: loadgentest.Options{SoldOutEarly: 2},
			fails: []string{loadgen.AuditEqualStock}},
		{name: "a released slot never sold again while users claim", kind: "purchase",
			opts:  undersell(true),
			setup: underselling,
			fails: []string{loadgen.AuditEqualStock}},
		{name: "a released slot sold again", kind: "purchase",
			opts:  undersell(false),
			setup: underselling},
		{name: "a user with two claims", kind: "coupon", opts: loadgentest.Options{DoubleClaim: true},
			setup: func(_ *testing.T, cfg *loadgen.Config, _ *loadgentest.Server) {
				cfg.RetryFraction = 1 // the user whose claim never got an answer claims again
				// The claim the fake never answers ends at this timeout;
				// others that end there on a starved machine are answered
				// unknown, which no check counts against the server.
				cfg.RequestTimeout = 2 * time.Second
			},
			fails: []string{loadgen.AuditPerUserLimit}},
		{name: "an acknowledged winner lost", kind: "coupon", opts: loadgentest.Options{LoseWinner: true},
			setup: noSecondClaims,
			fails: []string{loadgen.AuditAckedPresent}},
		{name: "winners exported with each other's slot", kind: "coupon", opts: loadgentest.Options{SwapSlots: true},
			fails: []string{loadgen.AuditAckedPresent}},
		{name: "a winner told sold out", kind: "coupon", opts: loadgentest.Options{PhantomWinner: true},
			setup: noSecondClaims,
			fails: []string{loadgen.AuditUnacked}},
		{name: "stats off by one slot", kind: "coupon", opts: loadgentest.Options{RemainingOff: 1},
			fails: []string{loadgen.AuditStockConserved}},
		{name: "a winner claiming again told sold out", kind: "coupon", opts: loadgentest.Options{ForgetWinner: true},
			fails: []string{loadgen.AuditIdempotent}},
		{name: "503 without Retry-After", kind: "coupon", opts: loadgentest.Options{ShedEvery: 7, NoRetryAfter: true},
			fails: []string{loadgen.AuditServerErrors}},
		{name: "coupons held", kind: "coupon", opts: loadgentest.Options{State: "held"},
			fails: []string{loadgen.AuditFinalStates}},
		{name: "a paid claim without a charge", kind: "purchase",
			opts:  loadgentest.Options{Decline: decline(4), Price: 1000, PaidWithoutCharge: true},
			fails: []string{loadgen.AuditPayments}},
		{name: "a charge without a live claim", kind: "purchase",
			opts:  loadgentest.Options{Decline: decline(4), Price: 1000, ChargeWithoutClaim: true},
			fails: []string{loadgen.AuditPayments}},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		for _, name := range tt.fails {
			covered[name] = true
		}
	}
	for _, name := range allChecks {
		if !covered[name] {
			t.Errorf("no fault makes %s fail", name)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, cfg := setup(t, tt.opts, tt.kind, 20, 0)
			cfg.Users = 100
			cfg.Profile = loadgen.Profile{Shape: loadgen.Spike, Duration: 200 * time.Millisecond}
			cfg.RetryFraction = 0.5
			cfg.PollInterval = 10 * time.Millisecond
			cfg.PGSim = srv.URL // the fake keeps the ledger too
			if tt.setup != nil {
				tt.setup(t, &cfg, srv)
			}
			rep := MustRun(t, cfg)
			t.Log(summary(rep))
			var failed, names []string
			for _, c := range rep.Audit.Checks {
				names = append(names, c.Name)
				if c.Status == loadgen.CheckFail {
					failed = append(failed, c.Name)
				}
			}
			want := slices.Clone(tt.fails)
			sort.Strings(failed)
			sort.Strings(want)
			if !slices.Equal(failed, want) {
				t.Errorf("failed checks %v, want %v", failed, want)
			}
			if rep.Audit.OK != (len(want) == 0) {
				t.Errorf("audit OK = %v with %d failed checks", rep.Audit.OK, len(failed))
			}
			if tt.kind == "purchase" && !slices.Contains(names, loadgen.AuditPayments) {
				t.Errorf("no %s check for a purchase drop", loadgen.AuditPayments)
			}
		})
	}
}

func noSecondClaims(_ *testing.T, cfg *loadgen.Config, _ *loadgentest.Server) { cfg.RetryFraction = 0 }

// undersell is a purchase drop of 2 behind a waiting room that admits its
// first user, then everyone once that user asked to pay twice: the user
// wins both slots (per-user limit 2, every user claims twice), its first
// payment is declined and the second asked for only after the user saw the
// first released, so every other claim is sent after a release was seen.
// With lose, the released slot is never offered again.
func undersell(lose bool) loadgentest.Options {
	return loadgentest.Options{AdmitAfterPays: 2, Decline: func(n int) bool { return n == 0 }, LoseReleased: lose}
}

func underselling(t *testing.T, cfg *loadgen.Config, srv *loadgentest.Server) {
	// The drop of the table's setup is replaced by one of its own.
	srv.MustCreateDrop(t, "undersell", "purchase", 2, 2, 1)
	cfg.DropID = "undersell"
	cfg.Users = 20
	cfg.RetryFraction = 1
}
