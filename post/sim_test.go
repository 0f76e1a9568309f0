package post_test

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash"
	"hash/fnv"
	"iter"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
)

// TestSim is the deterministic simulation of post-processing.
// Each seed builds a small world (a coupon drop and a purchase drop, a few
// slots each, users who claim, pay and come late) and runs the real
// workers (Runner.Work) in it, with the events in a seeded random order:
// jobs run in any order and interleave call by call; deliveries repeat
// (at least once); workers die between any two calls; the gateway
// declines, times out before or after charging, goes down and answers
// slowly; the record and the gate fail before or after committing; the
// clock jumps past hold deadlines; jobs run early. The invariants are
// checked after every event, then the faults stop, the jobs drain, and the
// end state is checked. A failure names its seed and the command that
// replays it.
var (
	flagSeed  = flag.Uint64("seed", 0, "TestSim: run this one seed and log its trace")
	flagSeeds = flag.Int("seeds", 0, "TestSim: how many seeds to run (default 4000, 1000 under -race; a tenth with -short)")
)

var simStart = time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC)

var errKilled = errors.New("sim: worker killed")

func TestSim(t *testing.T) {
	if *flagSeed != 0 {
		res := simulate(*flagSeed, variant{}, true)
		for _, line := range res.trace {
			t.Log(line)
		}
		t.Logf("seed %d: %d steps, trace hash %016x", *flagSeed, res.steps, res.hash)
		if res.err != nil {
			t.Fatal(res.err)
		}
		return
	}
	seeds := *flagSeeds
	if seeds == 0 {
		seeds = defaultSeeds
		if testing.Short() {
			seeds /= 10
		}
	}
	start := time.Now()
	stats, failed := simulateMany(uint64(seeds))
	if failed != 0 {
		res := simulate(failed, variant{}, true) // the same run again, traced
		t.Fatalf("%v\nreplay: go test ./post -run 'TestSim$' -seed %d", res.err, failed)
	}
	t.Logf("%d seeds in %s: %s", seeds, time.Since(start).Round(time.Millisecond), stats)
}

// simulateMany runs seeds 1..n on every core and returns what they did,
// or a seed that failed.
func simulateMany(n uint64) (simStats, uint64) {
	var (
		next   atomic.Uint64
		mu     sync.Mutex
		total  simStats
		failed uint64
		wg     sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			var stats simStats
			for seed := next.Add(1); seed <= n; seed = next.Add(1) {
				res := simulate(seed, variant{}, false)
				if res.err != nil {
					mu.Lock()
					if failed == 0 || seed < failed {
						failed = seed
					}
					mu.Unlock()
					next.Store(n) // the others stop
					break
				}
				stats.add(res)
			}
			mu.Lock()
			total.merge(stats)
			mu.Unlock()
		})
	}
	wg.Wait()
	return total, failed
}

// TestSimReplay: a seed replays to the same trace.
func TestSimReplay(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{7, 1234, 99991} {
		a, b := simulate(seed, variant{}, true), simulate(seed, variant{}, true)
		if a.hash != b.hash || a.steps != b.steps {
			t.Errorf("seed %d: trace hash %016x then %016x (%d then %d steps)", seed, a.hash, b.hash, a.steps, b.steps)
		}
	}
	if a, b := simulate(1, variant{}, true), simulate(2, variant{}, true); a.hash == b.hash {
		t.Errorf("seeds 1 and 2 have the same trace hash %016x", a.hash)
	}
}

// TestSimCanary proves the simulation can fail: each variant breaks the
// workers the way real code gets it wrong, and the simulation must catch
// it within the seed budget.
func TestSimCanary(t *testing.T) {
	t.Parallel()
	const budget = 1000
	for _, v := range canaries {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			for seed := uint64(1); seed <= budget; seed++ {
				if res := simulate(seed, v, false); res.err != nil {
					t.Logf("caught at seed %d: %v", seed, firstLine(res.err.Error()))
					return
				}
			}
			t.Errorf("%d seeds did not catch %q", budget, v.name)
		})
	}
}

func firstLine(s string) string { line, _, _ := strings.Cut(s, "\n"); return line }

// variant breaks the workers for TestSimCanary by wrapping what they call.
type variant struct {
	name     string
	payer    func(post.Payer) post.Payer
	store    func(post.Store, post.Releaser) post.Store
	releaser func(post.Releaser) post.Releaser
}

var canaries = []variant{
	{
		// "A timeout means it failed": the slot goes back while the
		// gateway may have taken the money.
		name:  "unknown outcome taken for a decline",
		payer: func(p post.Payer) post.Payer { return declineOnUnknown{p} },
	},
	{
		// A fresh idempotency key per request: a retry after a lost
		// answer charges again.
		name:  "new idempotency key per request",
		payer: func(p post.Payer) post.Payer { return &keyPerCall{Payer: p} },
	},
	{
		// Compensation first: for a moment the record has an active claim
		// whose slot someone else can take; a crash makes it last.
		name:  "slot released before the decline is recorded",
		store: func(s post.Store, g post.Releaser) post.Store { return releaseFirst{s, g} },
	},
	{
		// "Release is best effort": a failed release is never retried,
		// so the slot is lost to the drop.
		name:     "release errors ignored",
		releaser: func(g post.Releaser) post.Releaser { return ignoreErrors{g} },
	},
	{
		// "Paid after the hold ended: log it": the money a late charge
		// took is kept.
		name:  "late payment only logged",
		store: func(s post.Store, _ post.Releaser) post.Store { return lateIgnored{s} },
	},
}

type lateIgnored struct{ post.Store }

func (s lateIgnored) RecordLatePayment(ctx context.Context, id string, now time.Time) (*dibs.Claim, bool, error) {
	c, err := s.Store.FindClaim(ctx, id)
	return c, false, err
}

type declineOnUnknown struct{ post.Payer }

func (p declineOnUnknown) Charge(ctx context.Context, key string, req payment.ChargeRequest) (*payment.Charge, error) {
	ch, err := p.Payer.Charge(ctx, key, req)
	if errors.Is(err, payment.ErrOutcomeUnknown) {
		return &payment.Charge{Key: key, Status: payment.StatusDeclined}, nil
	}
	return ch, err
}

type keyPerCall struct {
	post.Payer
	n int
}

func (p *keyPerCall) Charge(ctx context.Context, key string, req payment.ChargeRequest) (*payment.Charge, error) {
	p.n++
	return p.Payer.Charge(ctx, fmt.Sprintf("%s#%d", key, p.n), req)
}

type releaseFirst struct {
	post.Store
	gate post.Releaser
}

func (s releaseFirst) SettlePayment(ctx context.Context, id string, paid bool, now time.Time) (*dibs.Claim, bool, error) {
	if !paid {
		c, err := s.Store.FindClaim(ctx, id)
		if err != nil {
			return nil, false, err
		}
		if _, err := s.gate.ReleaseSlot(ctx, c.DropID, id); err != nil {
			return nil, false, err
		}
	}
	return s.Store.SettlePayment(ctx, id, paid, now)
}

type ignoreErrors struct{ post.Releaser }

func (g ignoreErrors) ReleaseSlot(ctx context.Context, dropID, claimID string) (bool, error) {
	ok, _ := g.Releaser.ReleaseSlot(ctx, dropID, claimID)
	return ok, nil
}

// --- the scheduler ---

type simResult struct {
	err   error
	steps int
	hash  uint64   // of the trace, when traced
	trace []string // every event, when traced

	claims, charges, refunds, deliveries, runs, kills int
}

type simStats struct{ seeds, steps, claims, charges, refunds, deliveries, runs, kills int }

func (s *simStats) add(r simResult) {
	s.seeds++
	s.steps += r.steps
	s.claims += r.claims
	s.charges += r.charges
	s.refunds += r.refunds
	s.deliveries += r.deliveries
	s.runs += r.runs
	s.kills += r.kills
}

func (s *simStats) merge(o simStats) {
	s.seeds += o.seeds
	s.steps += o.steps
	s.claims += o.claims
	s.charges += o.charges
	s.refunds += o.refunds
	s.deliveries += o.deliveries
	s.runs += o.runs
	s.kills += o.kills
}

func (s simStats) String() string {
	return fmt.Sprintf("%d events, %d claims, %d charges, %d refunds of late charges, %d webhook deliveries, %d job runs of which %d killed",
		s.steps, s.claims, s.charges, s.refunds, s.deliveries, s.runs, s.kills)
}

type sched struct {
	rng    *rand.Rand
	w      *world
	runner *post.Runner
	runs   []*simRun
	idle   []*coro
	cur    *simRun
	step   int
	err    error

	traced bool // keep the trace; off, tracef costs nothing
	hash   hash.Hash64
	trace  []string

	maxUsers  []int // per drop: claims still to come
	grace     time.Duration
	codes     int
	runCount  int
	killCount int
}

// coro is a coroutine that runs jobs one after another. The worker's call
// stack lives in it while the scheduler does other things; the scheduler
// resumes it one world call at a time.
type coro struct {
	next  func() (struct{}, bool)
	stop  func()
	yield func(struct{}) bool
	run   *simRun // the run it does, nil while idle
}

// simRun is one run of a job.
type simRun struct {
	job      *simJob
	attempt  int
	began    time.Time // River ends the run's context JobTimeout after this
	co       *coro
	kill     bool // the scheduler killed it: it dies at its next world call
	result   error
	finished bool
	killed   bool
	panicked any
}

func simulate(seed uint64, v variant, traced bool) simResult {
	s := &sched{rng: rand.New(rand.NewPCG(seed, 0x5eed)), traced: traced}
	if traced {
		s.hash = fnv.New64a()
	}
	w := newWorld(s, simStart)
	s.w = w
	w.faults = true
	s.setup()

	var store post.Store = simStore{w}
	var gate post.Releaser = simGate{w}
	var payer post.Payer = simPG{w}
	if v.releaser != nil {
		gate = v.releaser(gate)
	}
	if v.store != nil {
		store = v.store(store, gate)
	}
	if v.payer != nil {
		payer = v.payer(payer)
	}
	limits := make(map[string]post.Limit)
	for _, q := range post.Queues {
		limits[q] = post.Limit{} // no rate limit: rate.Limiter reads the wall clock
	}
	runner, err := post.NewRunner(post.Config{
		Store:     store,
		JobClient: noJobs,
		Release:   gate,
		Payer:     payer,
		Notifier:  simReceiver{w},
		Limits:    limits,
		RetryMin:  time.Second,
		RetryMax:  time.Minute,
		// Pending payments keep their holds for the grace, then expire:
		// a charge answered after that (a slow answer, a lost one looked
		// up later) is money taken late, to refund.
		PaymentGrace: s.grace,
		Now:          func() time.Time { return w.now },
		NewCode: func() (string, error) {
			s.codes++
			return "CODE-" + strconv.Itoa(s.codes), nil
		},
		Rand: rand.New(rand.NewPCG(seed, 0x717)),
	})
	if err != nil {
		return simResult{err: err}
	}
	s.runner = runner

	steps := 100 + s.rng.IntN(200)
	for s.step = 0; s.step < steps && s.err == nil; s.step++ {
		s.event()
		s.check()
	}
	if s.err == nil {
		s.quiesce()
	}
	for _, r := range s.runs { // a failure leaves runs behind
		r.co.stop()
	}
	for _, co := range s.idle {
		co.stop()
	}
	res := simResult{
		err: s.err, steps: s.step, trace: s.trace,
		claims: len(w.order), charges: len(w.ledger), refunds: w.refunds(), deliveries: w.deliveries,
		runs: s.runCount, kills: s.killCount,
	}
	if traced {
		res.hash = s.hash.Sum64()
	}
	if res.err != nil {
		res.err = fmt.Errorf("seed %d, step %d: %w", seed, s.step, res.err)
		if traced {
			res.err = fmt.Errorf("%w\nlast events:\n  %s", res.err, strings.Join(s.trace[max(0, len(s.trace)-40):], "\n  "))
		}
	}
	return res
}

// refunds counts the charges the gateway refunded.
func (w *world) refunds() int {
	n := 0
	for _, ch := range w.ledger {
		n += ch.refunds
	}
	return n
}

// setup makes the drops: one coupon drop and one purchase drop (free one
// time in five), with a few slots and a few more users than slots.
func (s *sched) setup() {
	w := s.w
	price := int64(1000 * (1 + s.rng.IntN(50)))
	if s.rng.IntN(5) == 0 {
		price = 0
	}
	for _, d := range []*dibs.Drop{
		{ID: "coupons", Title: "coupons", Kind: dibs.KindCoupon, Stock: 1 + s.rng.Int64N(4)},
		{ID: "tickets", Title: "tickets", Kind: dibs.KindPurchase, Stock: 1 + s.rng.Int64N(4), HoldTTL: time.Minute, Price: price},
	} {
		d.Normalize(w.now)
		w.drops = append(w.drops, &simDrop{Drop: d, slots: make([]string, d.Stock)})
		s.maxUsers = append(s.maxUsers, int(d.Stock)+s.rng.IntN(5))
	}
	s.grace = time.Duration(s.rng.IntN(4)-1) * 10 * time.Second // negative: until it settles
	s.tracef("drops: coupons stock %d, tickets stock %d price %d, payment grace %s", w.drops[0].Stock, w.drops[1].Stock, price, s.grace)
}

// tracef records an event when the run is traced.
func (s *sched) tracef(format string, args ...any) {
	if !s.traced {
		return
	}
	line := fmt.Sprintf("%d %s ", s.step, s.w.clock(s.w.now)) + fmt.Sprintf(format, args...)
	s.hash.Write([]byte(line))
	s.hash.Write([]byte{'\n'})
	s.trace = append(s.trace, line)
}

func (s *sched) failf(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf(format, args...)
		s.tracef("VIOLATION: %v", s.err)
	}
}

// yield hands control back to the scheduler from a worker's world call;
// it returns when the scheduler resumes the worker, and does not return
// if the scheduler killed it.
func (s *sched) yield(what string) {
	r := s.cur
	if r == nil { // the scheduler's own call (a user paying, the pump)
		return
	}
	if !r.co.yield(struct{}{}) || r.kill {
		panic(errKilled)
	}
}

func (s *sched) event() {
	w := s.w
	switch n := s.rng.IntN(100); {
	case n < 10:
		s.claim()
	case n < 18:
		s.pump()
	case n < 40:
		s.fetch(false)
	case n < 70:
		if len(s.runs) > 0 {
			r := s.runs[s.rng.IntN(len(s.runs))]
			if w.chance(0.08) {
				s.killCount++
				s.tracef("kill #%d %s %s", r.job.id, r.job.kind, r.job.ref.ClaimID)
				r.kill = true
			}
			s.resume(r)
		}
	case n < 78:
		s.pay()
	case n < 88:
		s.tick(time.Duration(s.rng.Int64N(int64(5 * time.Second))))
	case n < 92:
		s.jump()
	case n < 95:
		if w.faults && w.now.After(w.downTill) {
			w.downTill = w.now.Add(5*time.Second + time.Duration(s.rng.Int64N(int64(2*time.Minute))))
			w.downMode = s.rng.IntN(downModes)
			s.tracef("gateway down until %s, mode %d", w.clock(w.downTill), w.downMode)
		}
	case n < 97:
		s.rescue()
	case n < 99:
		s.fetch(true)
	default:
		// The operator changes the price while charges are under way.
		if d := w.drops[1]; d.Price > 0 && s.rng.IntN(3) == 0 {
			d.Price = int64(1000 * (1 + s.rng.IntN(50)))
			s.tracef("tickets price %d", d.Price)
		}
	}
}

// claim: a new user wins a slot the gate has free.
func (s *sched) claim() {
	i := s.rng.IntN(len(s.w.drops))
	if s.maxUsers[i] > 0 && s.w.addClaim(s.w.drops[i]) != nil {
		s.maxUsers[i]--
	}
}

// addClaim records a win of d's first free slot, as the engine does: the
// gate's hold, then the claim with its outbox flag, in one step. It
// returns nil if the gate has no slot free.
func (w *world) addClaim(d *simDrop) *simClaim {
	slot := slices.Index(d.slots, "") + 1
	if slot == 0 {
		return nil
	}
	n := len(w.order) + 1
	c := &simClaim{outbox: true, drop: d, Claim: dibs.Claim{
		ID: "c" + strconv.Itoa(n), DropID: d.ID, UserID: "u" + strconv.Itoa(n),
		Slot: int64(slot), Nth: 1, State: dibs.InitialClaimState(d.Kind), CreatedAt: w.now, UpdatedAt: w.now,
	}}
	if d.Kind == dibs.KindPurchase {
		c.HoldExpiresAt = w.now.Add(d.HoldTTL)
	}
	c.seen = c.State
	w.claims[c.ID] = c
	w.order = append(w.order, c)
	d.slots[slot-1] = c.ID
	w.sched.tracef("claim %s: %s slot %d by %s, %s", c.ID, d.ID, slot, c.UserID, c.State)
	return c
}

func (s *sched) pump() {
	n, err := s.runner.Pump(context.Background())
	s.tracef("pump: %d, err %v", n, err)
}

// pay: the owner of a purchase claim asks to pay: mostly a holder who has
// not asked yet, in time; sometimes anyone, late or again.
func (s *sched) pay() {
	var cs []*simClaim
	inTime := s.rng.IntN(4) > 0
	for _, c := range s.w.order {
		if c.drop.Kind == dibs.KindPurchase && (!inTime || c.State == dibs.ClaimHeld && c.PayRequestedAt.IsZero() && s.w.now.Before(c.HoldExpiresAt)) {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return
	}
	c := cs[s.rng.IntN(len(cs))]
	pay := &post.Payments{Store: simStore{s.w}, Gateway: true, Now: func() time.Time { return s.w.now }}
	_, err := pay.RequestPayment(context.Background(), c.ID, c.UserID)
	s.tracef("pay %s: %s", c.ID, cmp.Or(dibs.ErrorCode(err), "ok"))
}

func (s *sched) tick(d time.Duration) {
	s.w.now = s.w.now.Add(d)
	s.tracef("tick %s", d)
}

// jump moves the clock to around a hold's deadline: just before it, or
// past it.
func (s *sched) jump() {
	var deadlines []time.Time
	for _, c := range s.w.order {
		if c.State == dibs.ClaimHeld && c.HoldExpiresAt.After(s.w.now) {
			deadlines = append(deadlines, c.HoldExpiresAt)
		}
	}
	if len(deadlines) == 0 {
		return
	}
	to := deadlines[s.rng.IntN(len(deadlines))].Add(time.Duration(s.rng.Int64N(int64(7*time.Second))) - 2*time.Second)
	if to.After(s.w.now) {
		s.tick(to.Sub(s.w.now))
	}
}

// fetch starts a job that is due, or with early, one due within ten
// seconds (a node whose clock runs ahead).
func (s *sched) fetch(early bool) {
	if early && !s.w.faults {
		return
	}
	horizon := s.w.now
	if early {
		horizon = horizon.Add(10 * time.Second)
	}
	var due []*simJob
	for _, j := range s.w.jobs {
		if j.state == jobAvailable && !j.at.After(horizon) {
			due = append(due, j)
		}
	}
	if len(due) > 0 {
		s.start(due[s.rng.IntN(len(due))])
	}
}

// simJobTimeout is the runner's River JobTimeout (three quarters of the
// default RescueAfter): a run whose context has ended sends the gateway
// nothing more.
const simJobTimeout = post.DefaultRescueAfter * 3 / 4

// rescue starts a second run of a job whose first run is still going, as
// River does when it believes the first worker dead (a job runs at most
// twice at once here; River rescues a job once per RescueStuckJobsAfter).
func (s *sched) rescue() {
	if !s.w.faults {
		return
	}
	var running []*simJob
	for _, j := range s.w.jobs {
		if j.state == jobRunning && j.inFlight == 1 {
			running = append(running, j)
		}
	}
	if len(running) > 0 {
		j := running[s.rng.IntN(len(running))]
		s.tracef("rescue #%d while it runs", j.id)
		s.start(j)
	}
}

func (s *sched) start(j *simJob) {
	j.attempt++
	j.state = jobRunning
	j.inFlight++
	s.runCount++
	r := &simRun{job: j, attempt: j.attempt, began: s.w.now}
	if n := len(s.idle); n > 0 {
		r.co, s.idle = s.idle[n-1], s.idle[:n-1]
	} else {
		r.co = s.newCoro()
	}
	r.co.run = r
	s.runs = append(s.runs, r)
	s.tracef("run #%d %s %s attempt %d", j.id, j.kind, j.ref.ClaimID, j.attempt)
	s.resume(r)
}

func (s *sched) newCoro() *coro {
	co := &coro{}
	co.next, co.stop = iter.Pull(func(yield func(struct{}) bool) {
		co.yield = yield
		for {
			s.work(co.run)
			if !yield(struct{}{}) { // idle until the next run
				return
			}
		}
	})
	return co
}

// work runs r in its coroutine.
func (s *sched) work(r *simRun) {
	defer func() {
		if p := recover(); p != nil {
			r.killed = true
			if p != errKilled {
				r.panicked = p
			}
		}
	}()
	j := r.job
	r.result = s.runner.Work(context.Background(), post.Job{Kind: j.kind, Claim: j.ref, Attempt: r.attempt, Snoozes: j.snoozes})
	r.finished = true
}

func (s *sched) resume(r *simRun) {
	s.cur = r
	r.co.next()
	s.cur = nil
	if r.finished || r.killed {
		r.co.run = nil
		s.idle = append(s.idle, r.co)
		s.finish(r)
	}
}

// finish records how a run ended, as River does: only a job that is still
// running takes the result (a rescued job's first run finds it taken).
func (s *sched) finish(r *simRun) {
	s.runs = slices.DeleteFunc(s.runs, func(x *simRun) bool { return x == r })
	j := r.job
	j.inFlight--
	if r.panicked != nil {
		s.failf("worker %s %s panicked: %v", j.kind, j.ref.ClaimID, r.panicked)
		return
	}
	if j.state != jobRunning {
		s.tracef("#%d attempt %d ended (%v); the job is %s already", j.id, r.attempt, r.result, j.state)
		return
	}
	var snooze *river.JobSnoozeError
	var cancel *river.JobCancelError
	switch {
	case r.killed:
		if j.inFlight > 0 {
			return // the other run decides
		}
		if j.attempt >= j.maxAttempts {
			j.state = jobDiscarded
		} else {
			j.state, j.at = jobAvailable, s.w.now.Add(time.Duration(1+s.rng.IntN(30))*time.Second)
		}
		s.tracef("#%d rescued: %s at %s", j.id, j.state, s.w.clock(j.at))
	case r.result == nil:
		if s.w.chance(0.05) {
			j.state, j.at = jobAvailable, s.w.now
			s.tracef("#%d done, but the completion is lost: it runs again", j.id)
		} else {
			j.state = jobCompleted
			s.tracef("#%d done", j.id)
		}
	case errors.As(r.result, &snooze):
		j.state, j.at = jobAvailable, s.w.now.Add(snooze.Duration)
		j.attempt--
		j.snoozes++
		s.tracef("#%d snoozed %s", j.id, snooze.Duration)
	case errors.As(r.result, &cancel):
		j.state = jobCancelled
		s.tracef("#%d cancelled: %v", j.id, r.result)
	default:
		j.errors++
		if j.attempt >= j.maxAttempts {
			j.state = jobDiscarded
		} else {
			wait := time.Duration(1+s.rng.Int64N(int64(min(1<<j.errors, 300)))) * time.Second
			j.state, j.at = jobAvailable, s.w.now.Add(wait)
		}
		s.tracef("#%d failed: %v; %s at %s", j.id, r.result, j.state, s.w.clock(j.at))
	}
}

// quiesce turns the faults off and drains: every run finishes, the
// outbox empties, every job runs when it is due, the operator retries the
// webhooks that failed for good. Then it checks the end state.
func (s *sched) quiesce() {
	w := s.w
	w.faults = false
	w.downTill = time.Time{}
	s.tracef("faults off")
	for range 100_000 {
		if s.err != nil {
			return
		}
		if len(s.runs) > 0 {
			s.resume(s.runs[s.rng.IntN(len(s.runs))])
			s.check()
			continue
		}
		if slices.ContainsFunc(w.order, func(c *simClaim) bool { return c.outbox }) {
			s.pump()
			continue
		}
		var due, next, failed *simJob
		for _, j := range w.jobs {
			switch {
			case j.state == jobAvailable && !j.at.After(w.now):
				due = j
			case j.state == jobAvailable && (next == nil || j.at.Before(next.at)):
				next = j
			case (j.state == jobCancelled || j.state == jobDiscarded) && slices.Contains(post.WebhookKinds, j.kind):
				failed = j
			}
		}
		switch {
		case due != nil:
			s.start(due)
			s.check()
		case failed != nil:
			failed.state, failed.at = jobAvailable, w.now
			failed.maxAttempts = max(failed.maxAttempts, failed.attempt+1)
			s.tracef("operator retries #%d %s %s", failed.id, failed.kind, failed.ref.ClaimID)
		case next != nil:
			s.tick(next.at.Sub(w.now))
		default:
			s.final()
			return
		}
	}
	s.failf("the jobs did not drain")
}

// check verifies the invariants that hold at every moment.
func (s *sched) check() {
	w := s.w
	var active [2]int64
	for _, c := range w.order {
		if c.State != c.seen {
			if c.seen != dibs.ClaimHeld || c.State == dibs.ClaimConfirmed {
				s.failf("claim %s went from %s to %s", c.ID, c.seen, c.State)
			}
			c.seen = c.State
		}
		if c.paid > 1 {
			s.failf("claim %s was charged %d times", c.ID, c.paid)
		}
		ch := w.ledger[c.ID]
		switch {
		case c.State == dibs.ClaimPaid && c.drop.Price > 0 && c.paid == 0:
			s.failf("claim %s is paid without a paid charge", c.ID)
		case !c.State.Active() && c.paid > 0 && c.PayRequestedAt.IsZero():
			s.failf("claim %s is %s and never asked to pay, yet the gateway took its money", c.ID, c.State)
		case c.State.Active() && (!c.LatePaidAt.IsZero() || !c.RefundedAt.IsZero()):
			s.failf("claim %s is %s, yet a late payment or a refund is recorded for it", c.ID, c.State)
		case !c.RefundedAt.IsZero() && (ch == nil || ch.Status != payment.StatusRefunded):
			s.failf("claim %s has a refund recorded that the gateway never made", c.ID)
		case ch != nil && ch.refunds > 1:
			s.failf("the gateway refunded the charge of claim %s %d times", c.ID, ch.refunds)
		}
		if c.State.Active() {
			if c.drop == w.drops[0] {
				active[0]++
			} else {
				active[1]++
			}
			if !c.held() {
				s.failf("claim %s is %s, yet the gate gave its slot back", c.ID, c.State)
			}
		}
		if c.released > 1 {
			s.failf("the gate got the slot of claim %s back %d times", c.ID, c.released)
		}
	}
	for i, d := range w.drops {
		if active[i] > d.Stock {
			s.failf("drop %s: %d active claims, stock %d", d.ID, active[i], d.Stock)
		}
	}
}

// final verifies the end state once everything drained.
func (s *sched) final() {
	w := s.w
	s.tracef("drained")
	paidClaims, paidCharges := 0, 0
	for _, key := range w.keys {
		ch := w.ledger[key]
		c := w.claims[ch.claimID]
		switch {
		case ch.Status == payment.StatusPaid:
			paidCharges++
			if c != nil && !c.State.Active() {
				s.failf("claim %s is %s, yet the gateway kept its money (charge %s)", c.ID, c.State, key)
			}
		case ch.Status == payment.StatusRefunded && c != nil && (c.State.Active() || c.RefundedAt.IsZero()):
			s.failf("the gateway refunded charge %s of claim %s, which is %s with no refund recorded", key, c.ID, c.State)
		}
	}
	expected := make(map[string]bool)
	for _, c := range w.order {
		var notice string
		switch c.State {
		case dibs.ClaimConfirmed:
			if c.CouponCode == "" {
				s.failf("claim %s is confirmed without a coupon", c.ID)
			}
			notice = post.KindNotifyWinner
		case dibs.ClaimPaid:
			if c.drop.Price > 0 {
				paidClaims++
			}
			notice = post.KindNotifyWinner
		case dibs.ClaimReleased:
			notice = post.KindPaymentFailed
		case dibs.ClaimExpired:
			notice = post.KindHoldExpired
		default:
			s.failf("claim %s is still %s", c.ID, c.State)
		}
		switch {
		case c.State.Active() && (!c.held() || c.released != 0):
			s.failf("claim %s is %s, yet its slot is not held", c.ID, c.State)
		case !c.State.Active() && (c.held() || c.released != 1):
			s.failf("claim %s is %s; its slot came back %d times, the gate holds it: %v", c.ID, c.State, c.released, c.held())
		}
		notices := []string{notice + ":" + c.ID}
		if !c.RefundedAt.IsZero() {
			notices = append(notices, post.KindPaymentRefunded+":"+c.ID)
		}
		for _, n := range notices {
			expected[n] = true
			if _, ok := w.delivered[n]; !ok {
				s.failf("notice %s was never delivered", n)
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(w.delivered)) {
		if !expected[id] {
			s.failf("notice %s was delivered for a claim in another state", id)
		}
	}
	if paidClaims != paidCharges {
		s.failf("the gateway took %d payments for %d paid claims", paidCharges, paidClaims)
	}
	for _, j := range w.jobs {
		if j.state != jobCompleted {
			s.failf("job #%d %s %s ended %s", j.id, j.kind, j.ref.ClaimID, j.state)
		}
	}
}
