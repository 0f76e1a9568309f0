package post

import (
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
)

// The kill switches (dibs.SwitchPayments, dibs.SwitchWebhooks) stop work
// without losing it: a job whose switch is off snoozes, which spends no
// attempt, and looks again every Config.SwitchRecheck; once the switch is
// on it runs as it would have. Nothing is dropped and nothing runs twice:
// the job is the same job, kept by River until it runs.
//
// Payments off stops everything that reaches the payment gateway:
// charge_payment and refund_payment wait. So that a payment nobody could
// make does not cost its owner the hold, the expiry of a hold whose owner
// asked to pay waits too, while payments are off and, after they are back,
// until the claim's charge has run once past the switch (whatever its
// outcome: paid, declined, the gateway down). Each node knows that of the
// charges and expiries it saw wait on the switch; what it saw lapses
// SwitchHoldLapse after the last wait, so a charge that ran on another node
// holds an expiry here no longer than that. Holds whose owner never asked to
// pay expire as usual: nothing waits on the gateway for them.

// Defaults of the switches' waits.
const (
	// DefaultSwitchRecheck is how often a job held by an off switch looks
	// at it again: the work goes on within seconds of the switch.
	DefaultSwitchRecheck = 2 * time.Second
	// SwitchHoldLapse is how long after its last wait on the payments
	// switch a node keeps a hold from expiring for the sake of its charge.
	SwitchHoldLapse = 5 * time.Minute
)

// on reports whether sw is on; without a switch service everything is.
func (r *Runner) on(sw dibs.Switch) bool {
	return r.switches == nil || r.switches.Switches().On(sw)
}

// switchedOff is the snooze of a job of kind held by an off switch: a
// random time in the upper half of SwitchRecheck, so that the jobs that
// waited together do not all come back in the same instant.
func (r *Runner) switchedOff(kind string) error {
	r.metrics.switchedOff.WithLabelValues(QueueOf(kind)).Inc()
	half := r.switchRecheck / 2
	r.rngMu.Lock()
	j := time.Duration(r.rng.Int64N(int64(half) + 1))
	r.rngMu.Unlock()
	return river.JobSnooze(r.switchRecheck - half + j)
}

// paused remembers the claims whose charge waits on the payments switch,
// with when it last did: their holds do not expire until the charge has
// run once with payments on, or the entry lapsed (SwitchHoldLapse). Safe
// for concurrent use.
type paused struct {
	mu     sync.Mutex
	claims map[string]time.Time
	swept  time.Time // the last sweep of lapsed entries
}

// wait notes that claimID's charge or expiry waited on the switch at now.
func (p *paused) wait(claimID string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.claims == nil {
		p.claims = make(map[string]time.Time)
	}
	p.claims[claimID] = now
	if now.Sub(p.swept) > SwitchHoldLapse {
		// Entries of charges that ran on another node are never
		// cleared by one that ran here.
		for id, at := range p.claims {
			if now.Sub(at) > SwitchHoldLapse {
				delete(p.claims, id)
			}
		}
		p.swept = now
	}
}

// ran notes that claimID's charge ran with payments on.
func (p *paused) ran(claimID string) {
	p.mu.Lock()
	delete(p.claims, claimID)
	p.mu.Unlock()
}

// waiting reports whether claimID's charge waited on the switch and has not
// run since, within SwitchHoldLapse of its last wait.
func (p *paused) waiting(claimID string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.claims[claimID]
	if ok && now.Sub(at) > SwitchHoldLapse {
		delete(p.claims, claimID)
		return false
	}
	return ok
}
