package loadgen

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runner is one run of the generator.
type runner struct {
	cfg     Config
	log     *slog.Logger
	targets []*target    // the nodes, without a trailing slash
	admin   atomic.Int32 // index of the target the setup and the audit read from
	drop    adminDrop
	sched   schedule
	// claimPath is the drop's claims, built once: a spike sends it
	// hundreds of thousands of times.
	claimPath string

	passports []string
	rec       *recorder
	book      *book
	spike     *dispatcher
	regular   *dispatcher

	start      time.Time // time 0 of the report's series
	spikeStart time.Time // the first arrival's intended time

	samplesMu sync.Mutex
	samples   []RemainingSample
}

// Run sends the configured load to the drop, waits for every user to finish,
// then audits the drop's winners over the admin API. It returns an error when
// the run could not happen (bad config, no such drop, unreachable admin API)
// or was stopped by ctx; a broken invariant is not an error of Run but a
// failed check in the report (see Report.Err).
//
// The report is returned whenever there is one, also with an error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	lean := cfg.Client == nil // a caller's Client sends everything
	r := &runner{cfg: cfg.withDefaults()}
	r.log = r.cfg.Logger
	perTarget := (r.cfg.MaxConns + len(r.cfg.targets()) - 1) / len(r.cfg.targets())
	wireCtx, closeConns := context.WithCancel(ctx) // the lean client's connections close with the run
	defer closeConns()
	for _, u := range r.cfg.targets() {
		t := &target{url: strings.TrimRight(u, "/")}
		if lean {
			t.wire, _ = newWireClient(wireCtx, t.url, perTarget)
		}
		r.targets = append(r.targets, t)
	}
	r.sched = newSchedule(r.cfg.Profile, r.cfg.Users)
	if err := r.getAdmin(ctx, "/v1/admin/drops/"+r.cfg.DropID, &r.drop); err != nil {
		return nil, fmt.Errorf("read drop: %w", err)
	}
	if r.drop.PerUserLimit == 0 {
		r.drop.PerUserLimit = 1
	}
	r.claimPath = "/v1/drops/" + r.drop.ID + "/claims"
	exp := r.cfg.Now().Add(r.sched.span() + r.cfg.QueueWait + r.cfg.PayWait + time.Hour)
	var err error
	r.passports, err = mintPassports(r.cfg.PassportSecret, r.userID, r.cfg.Users, exp, r.cfg.Shard.owns)
	if err != nil {
		return nil, err
	}
	r.book = newBook(r.cfg.Users)
	r.spike = &dispatcher{name: "spike", slots: newLimiter(r.cfg.MaxInFlight), slack: r.cfg.StartSlack, log: r.log, now: r.cfg.Now}
	r.regular = &dispatcher{name: "regular", slots: newLimiter(r.cfg.Regular.MaxInFlight), slack: r.cfg.StartSlack, log: r.log, now: r.cfg.Now}

	if len(r.targets) > 1 {
		r.awaitDrop(ctx)
	}
	r.warmUp(ctx)
	r.log.Info("load starting", "target", r.targetList(), "drop", r.drop.ID, "kind", r.drop.Kind,
		"admission", r.drop.Admission.Mode, "stock", r.drop.Stock, "users", r.cfg.Users,
		"span", r.sched.span(), "peak_rate", int(r.sched.peakRate()))
	stopped := r.run(ctx)
	rep := r.report()
	if r.cfg.Shard.on() {
		rep.shard = r.shardResult(rep, stopped == nil)
	}
	if stopped != nil {
		rep.Audit = Audit{Checks: []Check{{Name: "audit", Status: CheckSkip, Detail: "the run was stopped before its end"}}}
		return rep, fmt.Errorf("run stopped: %w", stopped)
	}
	if r.cfg.Shard.on() {
		rep.Audit = Audit{OK: true, Checks: []Check{{Name: "audit", Status: CheckSkip,
			Detail: fmt.Sprintf("shard %s: audited with the other shards by dibs load merge", r.cfg.Shard)}}}
		return rep, nil
	}
	if unknown := rep.unknownClaims(); unknown > 0 && r.cfg.SettleWait > 0 {
		r.settle(ctx, unknown)
	}
	rep.Audit, err = r.audit(ctx)
	if err != nil {
		return rep, fmt.Errorf("audit: %w", err)
	}
	return rep, nil
}

// settle waits, up to SettleWait, until the drop's live stats add up to its
// stock: claims without a definite answer may have left holds in the gate
// that the record never got, and the server gives their slots back after
// a grace period. The audit then judges what the server settled on.
func (r *runner) settle(ctx context.Context, unknown int64) {
	deadline := r.cfg.Now().Add(r.cfg.SettleWait)
	for logged := false; ; {
		var st adminDrop
		err := r.getAdmin(ctx, "/v1/admin/drops/"+r.drop.ID, &st)
		if err == nil && st.Remaining+st.Held+st.Confirmed+st.Paid == r.drop.Stock {
			return
		}
		if !r.cfg.Now().Before(deadline) || ctx.Err() != nil {
			r.log.Warn("the drop's stock did not add up within the settle wait", "wait", r.cfg.SettleWait, "err", err)
			return
		}
		if !logged {
			logged = true
			r.log.Info("waiting for the server to settle claims whose outcome the client never learnt", "claims", unknown, "up_to", r.cfg.SettleWait)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (r *runner) userID(i int) string { return r.cfg.UserPrefix + strconv.Itoa(i) }

// run drives the spike, the regular traffic, the sampler and the progress
// line, and returns when the last user is done. It returns ctx's error if
// ctx ended first.
func (r *runner) run(ctx context.Context) error {
	ext := r.cfg.RegularProcess
	if r.cfg.Regular.Rate <= 0 || r.cfg.Shard.Index != 0 {
		ext = nil
	}
	r.start = r.cfg.Now()
	if ext != nil && r.cfg.StartAt.IsZero() {
		r.start = r.start.Add(regularStartup)
	}
	if !r.cfg.StartAt.IsZero() {
		r.start = r.cfg.StartAt
	}
	if ext != nil {
		if err := ext.Start(r.start); err != nil {
			r.log.Warn("regular traffic process did not start; sending it from this one", "err", err)
			ext = nil
		}
	}
	if !r.sleepUntil(ctx, r.start) {
		if ext != nil {
			_, _ = ext.Stop()
		}
		return ctx.Err()
	}
	r.spikeStart = r.start
	if r.cfg.Regular.Rate > 0 {
		r.spikeStart = r.start.Add(r.cfg.Regular.Lead)
	}
	r.rec = newRecorder(r.start, r.cfg.SeriesStep)

	bgCtx, stopBackground := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() { r.sample(bgCtx) })
	if r.cfg.Progress != nil {
		bg.Go(func() { r.showProgress(bgCtx) })
	}

	regularCtx, stopRegular := context.WithCancel(ctx)
	var regular sync.WaitGroup
	if r.cfg.Regular.Rate > 0 && r.cfg.Shard.Index == 0 && ext == nil {
		regular.Go(func() { r.runRegular(ctx, regularCtx) })
	}

	// A shard's k-th arrival is user Index + k×Count, at that user's time.
	n, first, stride := r.cfg.Users, 0, 1
	if sh := r.cfg.Shard; sh.on() {
		n, first, stride = (r.cfg.Users-sh.Index+sh.Count-1)/sh.Count, sh.Index, sh.Count
	}
	var users sync.WaitGroup
	r.spike.run(ctx, r.spikeStart, n, func(k int) time.Duration { return r.sched.at(first + k*stride) }, func(k int, intended time.Time, missed bool) {
		r.rec.arrival(intended)
		users.Go(func() { r.user(ctx, first+k*stride, intended, missed) })
	})
	users.Wait()
	r.book.setEnd(r.cfg.Now())

	if r.cfg.Regular.Rate > 0 {
		r.sleepUntil(ctx, r.cfg.Now().Add(r.cfg.Regular.Tail))
	}
	stopRegular()
	regular.Wait()
	if ext != nil {
		res, err := ext.Stop()
		if err == nil {
			err = r.rec.foldRegular(res)
			r.regular.missed.Add(res.MissedStarts)
		}
		if err != nil {
			r.log.Warn("regular traffic process: no result", "err", err)
		}
	}
	stopBackground()
	bg.Wait()
	r.takeSample(context.WithoutCancel(ctx)) // the final remaining stock
	return ctx.Err()
}

// warmUp opens connections before the first arrival, about one per 100
// arrivals/s of the peak: otherwise the spike begins with a storm of
// handshakes that only the generator causes, and its first second measures
// the generator's dialling. Its requests are not counted.
func (r *runner) warmUp(ctx context.Context) {
	n := min(r.cfg.MaxConns, max(8*len(r.targets), int(r.sched.peakRate()/100)))
	var wg sync.WaitGroup
	for i, t := range r.targets {
		if t.wire != nil {
			share := n/len(r.targets) + min(1, max(0, n%len(r.targets)-i))
			wg.Go(func() { t.wire.warm(ctx, share, "/v1/drops/"+r.drop.ID) })
		}
	}
	for i := range n {
		if t := r.targets[i%len(r.targets)]; t.wire == nil {
			wg.Go(func() { _, _ = r.readDropAt(ctx, t.url) })
		}
	}
	wg.Wait()
}

// regularStartup is how far ahead of now a run starts when a process of
// its own sends the regular traffic: time for it to start and connect.
const regularStartup = 2 * time.Second

// maxAwaitDrop bounds the wait for every node to serve the drop.
const maxAwaitDrop = 10 * time.Second

// awaitDrop waits until every target serves the drop: a drop created on
// one node reaches the others within their refresh interval (500ms by
// default), and a user sent to a node that does not know it yet would be
// told 404. A node still without it after maxAwaitDrop is logged, and the
// run goes ahead; so it does at once past a node that refuses connections
// (its users go to the next node).
func (r *runner) awaitDrop(ctx context.Context) {
	deadline := r.cfg.Now().Add(maxAwaitDrop)
	for _, t := range r.targets {
		for {
			_, err := r.readDropAt(ctx, t.url)
			if err == nil {
				break
			}
			if refused(err) {
				r.log.Warn("a target refuses connections; its users go to the next", "target", t.url)
				break
			}
			if r.cfg.Now().After(deadline) || !r.sleepUntil(ctx, r.cfg.Now().Add(50*time.Millisecond)) {
				r.log.Warn("a target does not serve the drop; going ahead", "target", t.url, "drop", r.drop.ID)
				break
			}
		}
	}
}

// targetList names the targets for a log line.
func (r *runner) targetList() string {
	urls := make([]string, len(r.targets))
	for i, t := range r.targets {
		urls[i] = t.url
	}
	return strings.Join(urls, ",")
}

// runRegular sends regular traffic at a constant rate until stop ends.
// Requests use ctx, so the last ones finish after stop.
func (r *runner) runRegular(ctx, stop context.Context) {
	interval := time.Duration(float64(time.Second) / r.cfg.Regular.Rate)
	rng := rand.New(rand.NewPCG(uint64(r.cfg.Seed), 1<<63))
	var wg sync.WaitGroup
	r.regular.run(stop, r.start, -1, func(i int) time.Duration { return time.Duration(i) * interval },
		func(i int, intended time.Time, _ bool) {
			req := request{op: opDropRead, method: "GET", path: "/v1/drops/" + r.drop.ID, intended: intended, node: i % len(r.targets)}
			if rng.Float64() < r.cfg.Regular.ClaimReadFraction {
				if c, ok := r.book.randomClaim(rng); ok {
					req.op, req.path, req.bearer = opClaimRead, "/v1/claims/"+c.id, r.passports[c.user]
				}
			}
			wg.Go(func() {
				defer r.regular.slots.release()
				r.send(ctx, req)
			})
		})
	wg.Wait()
}

// sample reads the drop's remaining stock every SampleInterval, for the
// sell-out curve.
func (r *runner) sample(ctx context.Context) {
	t := time.NewTicker(r.cfg.SampleInterval)
	defer t.Stop()
	for {
		r.takeSample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *runner) takeSample(ctx context.Context) {
	d, err := r.readDrop(ctx)
	if err != nil {
		return
	}
	now := r.cfg.Now()
	if d.Remaining <= 0 && d.State != "upcoming" {
		r.book.soldOut(now)
	}
	r.samplesMu.Lock()
	r.samples = append(r.samples, RemainingSample{T: now.Sub(r.start).Seconds(), Remaining: d.Remaining})
	r.samplesMu.Unlock()
}

// readDrop reads the drop's public view from the admin node, outside the
// measured load.
func (r *runner) readDrop(ctx context.Context) (publicDrop, error) {
	var d publicDrop
	err := r.adminCall(func(base string) (err error) {
		d, err = r.readDropAt(ctx, base)
		return err
	})
	return d, err
}

// readDropAt reads the drop's public view from the node at base.
func (r *runner) readDropAt(ctx context.Context, base string) (publicDrop, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	var d publicDrop
	err := doJSON(ctx, r.cfg.Client, base+"/v1/drops/"+r.drop.ID, "", http.MethodGet, nil, &d)
	return d, err
}

// dispatcher starts arrivals on schedule, whatever became of earlier ones:
// the open model. It bounds the requests in flight; an arrival that finds no
// free place, or that starts more than slack after its intended time,
// counts as a missed start and is still measured from its intended time.
type dispatcher struct {
	name  string
	slots limiter
	slack time.Duration
	log   *slog.Logger
	now   func() time.Time

	missed  atomic.Int64
	arrived atomic.Int64
	maxLag  atomic.Int64 // nanoseconds
	// Missed starts by cause: the generator's own lag (its dispatcher or a
	// user's goroutine started late), or the server's backlog (no free
	// in-flight place or connection: earlier requests still unanswered).
	missedOwn, missedBacklog atomic.Int64
	// Written by run's goroutine only, read after it returns.
	first, last time.Time
	blocked     time.Duration // time spent waiting for in-flight places
	maxOwnLag   time.Duration // the dispatcher's lag beyond the time it was blocked
}

// late notes that an arrival's first request started lag after its intended
// time; beyond slack, or when it had to wait for a place, it is a missed
// start. It reports whether it counted one.
//
// backlog says whose the lag is: the server's (the arrival waited for an
// in-flight place or a connection, or was due while the dispatcher was
// blocked waiting for one) or the generator's own.
func (d *dispatcher) late(lag time.Duration, waited, backlog bool) bool {
	for {
		old := d.maxLag.Load()
		if int64(lag) <= old || d.maxLag.CompareAndSwap(old, int64(lag)) {
			break
		}
	}
	if waited || lag > d.slack {
		d.missed.Add(1)
		if waited || backlog {
			d.missedBacklog.Add(1)
		} else {
			d.missedOwn.Add(1)
		}
		return true
	}
	return false
}

// run launches arrival i at start+at(i), for i < n (n < 0: until ctx ends),
// holding one in-flight place that launch must release; missed tells launch
// whether the arrival already counts as a missed start. It returns when the
// last arrival was launched or ctx ended.
func (d *dispatcher) run(ctx context.Context, start time.Time, n int, at func(int) time.Duration, launch func(i int, intended time.Time, missed bool)) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var warnedFull, warnedLate bool
	for i := 0; n < 0 || i < n; i++ {
		intended := start.Add(at(i))
		if wait := intended.Sub(d.now()); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		// Its own lag: how late the dispatcher got here, less the time it
		// spent blocked on the server's backlog, which shifted the rest.
		reached := d.now()
		own := reached.Sub(intended) - d.blocked
		d.maxOwnLag = max(d.maxOwnLag, own)
		full := !d.slots.tryAcquire()
		if full {
			if !warnedFull {
				warnedFull = true
				d.log.Warn("in-flight bound reached: arrivals wait for a free place (missed starts)", "traffic", d.name, "max_in_flight", d.slots.size())
			}
			if !d.slots.acquire(ctx) {
				return
			}
		}
		now := d.now()
		if full {
			d.blocked += now.Sub(reached)
		}
		lag := now.Sub(intended)
		missed := d.late(lag, full, own <= d.slack)
		if missed && !full && !warnedLate {
			warnedLate = true
			d.log.Warn("generator behind schedule (missed starts)", "traffic", d.name, "lag", lag)
		}
		if d.first.IsZero() {
			d.first = now
		}
		d.last = now
		d.arrived.Add(1)
		launch(i, intended, missed)
	}
}

// limiter bounds concurrent requests.
type limiter chan struct{}

func newLimiter(n int) limiter { return make(limiter, n) }

func (l limiter) size() int { return cap(l) }

func (l limiter) tryAcquire() bool {
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l limiter) acquire(ctx context.Context) bool {
	select {
	case l <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (l limiter) release() { <-l }
