package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dibs-io/dibs"
)

// Group-commit defaults. A batch never waits to fill: it closes when it
// holds MaxBatch claims or as soon as no more claims are waiting, whichever
// comes first. Under load, claims pile up during each commit and the next
// batch takes them all; a lone claim is committed at once.
const (
	DefaultMaxBatch   = 512
	DefaultQueue      = 8192
	DefaultCommitWait = 10 * time.Second
)

// releaseWorkers bounds the gate calls in flight that give back the slots
// of failed writes, across all failed batches: enough to return a batch of
// 512 in a few dozen round trips, few enough not to crowd out the claims.
const releaseWorkers = 16

// RecorderConfig tunes group commit.
type RecorderConfig struct {
	MaxBatch   int           // claims per transaction
	Queue      int           // claims waiting for a batch; beyond it, EOVERLOADED
	Committers int           // transactions in flight at once (1 for SQLite)
	CommitWait time.Duration // deadline of one commit
}

func (c *RecorderConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Queue <= 0 {
		c.Queue = DefaultQueue
	}
	if c.Committers <= 0 {
		c.Committers = 1
	}
	if c.CommitWait <= 0 {
		c.CommitWait = DefaultCommitWait
	}
}

// recordHooks run inside the recorder after a batch, before its waiters
// wake: claims whose write failed (with whether the failure is known to
// have left nothing behind), and drops whose record refused a claim the
// gate gave out.
type recordHooks struct {
	failed   func(ctx context.Context, claims []*dibs.Claim, definite bool)
	conflict func(dropID string)
}

// confirmer is the part of dibs.Gate the recorder uses: after a commit it
// marks the batch's holds durable, one call per drop, before their waiters
// wake, so that retries are answered from the gate alone.
type confirmer interface {
	Confirm(ctx context.Context, dropID string, claimIDs ...string) error
}

// recorder batches concurrent claim writes into one transaction each (group
// commit), so that durability costs one fsync per batch, not per claim.
// Writes of the same claim id share one pending write.
type recorder struct {
	store   claimWriter
	gate    confirmer
	cfg     RecorderConfig
	hooks   recordHooks
	metrics *Metrics
	log     *slog.Logger

	queue     chan *pending
	stop      chan struct{}
	wg        sync.WaitGroup
	startOnce sync.Once
	committed chan struct{} // Engine.Committed

	// returning counts the failed writes whose slots are going back to the
	// gate; releasers holds a token per gate call they have in flight.
	returning sync.WaitGroup
	releasers chan struct{}

	mu      sync.Mutex
	closed  bool
	pending map[string]*pending // by claim id, from queueing until done

	// lastCommit is when the last batch was committed (unix nanoseconds),
	// for Engine.RecordBusy.
	lastCommit atomic.Int64
}

type pending struct {
	claim *dibs.Claim
	fresh bool // a request created this hold; its slot goes back on a definite failure
	given bool // its slot was handed back to the gate (once at most)
	done  chan struct{}
	err   error
}

// claimWriter is the part of dibs.Store the recorder uses.
type claimWriter interface {
	RecordClaims(ctx context.Context, claims []*dibs.Claim) ([]error, error)
}

func newRecorder(store claimWriter, gate confirmer, cfg RecorderConfig, hooks recordHooks, m *Metrics, log *slog.Logger) *recorder {
	cfg.setDefaults()
	return &recorder{
		store: store, gate: gate, cfg: cfg, hooks: hooks, metrics: m, log: log,
		committed: make(chan struct{}, 1),
		queue:     make(chan *pending, cfg.Queue),
		stop:      make(chan struct{}),
		pending:   make(map[string]*pending),
		releasers: make(chan struct{}, releaseWorkers),
	}
}

// start runs the committers, once.
func (r *recorder) start() {
	r.startOnce.Do(func() {
		for range r.cfg.Committers {
			r.wg.Go(r.loop)
		}
	})
}

// close stops taking claims, commits every claim already queued, and waits
// until the slots of failed writes are back in the gate.
func (r *recorder) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	r.wg.Wait()
	close(r.committed) // no commit follows
	r.returning.Wait()
}

// enqueue queues c for the next batch, or joins the write of c already
// queued. It fails at once if the recorder is closed (EUNAVAILABLE) or its
// queue is full (EOVERLOADED); the slot of a fresh hold then goes back.
func (r *recorder) enqueue(c *dibs.Claim, fresh bool) (*pending, error) {
	r.mu.Lock()
	p := r.pending[c.ID]
	switch {
	case p != nil:
		p.fresh = p.fresh || fresh
	case r.closed:
		p = r.refuse(c, fresh, dibs.Errorf(dibs.EUNAVAILABLE, "The server is shutting down."))
		r.mu.Unlock()
		r.giveBack([]*pending{p}, true)
		return nil, p.err
	default:
		p = &pending{claim: c, fresh: fresh, done: make(chan struct{})}
		select {
		case r.queue <- p:
			r.pending[c.ID] = p
		default:
			p = r.refuse(c, fresh, dibs.Errorf(dibs.EOVERLOADED, "Too many claims are waiting to be recorded."))
			r.returning.Add(1) // before close's Wait: r.closed is false under r.mu
			r.mu.Unlock()
			r.metrics.recorderRejected.Inc()
			r.giveBack([]*pending{p}, true)
			r.returning.Done()
			return nil, p.err
		}
	}
	r.mu.Unlock()
	return p, nil
}

// wait returns once p's claim is durable (nil), refused by the record
// (ECONFLICT), or its batch failed. It returns early if ctx ends; the
// write goes on.
func (p *pending) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *recorder) loop() {
	batch := make([]*pending, 0, r.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-r.queue:
			batch = append(batch, p)
		case <-r.stop:
			r.drain(batch)
			return
		}
	fill:
		for len(batch) < r.cfg.MaxBatch {
			select {
			case p := <-r.queue:
				batch = append(batch, p)
				continue
			default:
			}
			// Nothing waiting: let claims already on their way arrive, and
			// commit if none did. Waiting longer would only add latency;
			// claims that come during the commit batch anyway.
			runtime.Gosched()
			select {
			case p := <-r.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		r.commit(batch)
	}
}

// drain commits what is left in the queue after stop.
func (r *recorder) drain(batch []*pending) {
	for {
		select {
		case p := <-r.queue:
			batch = append(batch, p)
			if len(batch) == r.cfg.MaxBatch {
				r.commit(batch)
				batch = batch[:0]
			}
		default:
			if len(batch) > 0 {
				r.commit(batch)
			}
			return
		}
	}
}

func (r *recorder) commit(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CommitWait)
	defer cancel()
	claims := make([]*dibs.Claim, len(batch))
	for i, p := range batch {
		claims[i] = p.claim
	}

	start := time.Now()
	results, err := r.store.RecordClaims(ctx, claims)
	r.lastCommit.Store(time.Now().UnixNano())
	r.metrics.recorderBatch.Observe(float64(len(batch)))
	r.metrics.recorderCommit.Observe(time.Since(start).Seconds())

	if err != nil {
		definite := !errors.Is(err, dibs.ErrOutcomeUnknown)
		r.metrics.recorderFailures.Inc()
		r.log.Error("record claims", "claims", len(batch), "definite", definite, "err", err)
		failure := dibs.WrapError(dibs.EUNAVAILABLE, "Your claim could not be recorded; please retry.", err)
		for _, p := range batch {
			p.err = failure
		}
		// The slots go back in the background: this committer goes on with
		// the next batch meanwhile, and the batch's waiters wake once their
		// slots are back. The loop reuses batch's array, hence the copy.
		failed := slices.Clone(batch)
		r.returning.Go(func() { r.giveBack(failed, definite) })
		return
	}
	var ok []*dibs.Claim
	for i, p := range batch {
		if p.err = results[i]; p.err == nil {
			ok = append(ok, p.claim)
			continue
		}
		r.metrics.recordConflicts.Inc()
		r.log.Error("record refused a claim the gate gave out", "claim", p.claim.ID, "drop", p.claim.DropID, "slot", p.claim.Slot, "err", p.err)
		if r.hooks.conflict != nil {
			r.hooks.conflict(p.claim.DropID)
		}
		p.err = dibs.WrapError(dibs.EUNAVAILABLE, "Your claim could not be recorded; please retry.", fmt.Errorf("record: %w", p.err))
	}
	r.confirm(ctx, ok)
	r.mu.Lock()
	r.retire(batch)
	r.mu.Unlock()
	for _, p := range batch {
		close(p.done)
	}
}

// confirm marks the committed claims durable in the gate, one call per
// drop, and signals Engine.Committed. A failed Confirm only costs retries
// of those claims a write.
func (r *recorder) confirm(ctx context.Context, claims []*dibs.Claim) {
	if len(claims) == 0 {
		return
	}
	select {
	case r.committed <- struct{}{}:
	default:
	}
	for dropID, ids := range claimIDsByDrop(claims) {
		if err := r.gate.Confirm(ctx, dropID, ids...); err != nil {
			r.log.Warn("confirm holds", "drop", dropID, "claims", len(ids), "err", err)
		}
	}
}

// writing reports whether a write of the claim is queued or in flight here.
func (r *recorder) writing(claimID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending[claimID] != nil
}

// refuse makes the pending write of a claim that was never queued, failed
// with err, for giveBack. Callers hold r.mu.
func (r *recorder) refuse(c *dibs.Claim, fresh bool, err error) *pending {
	p := &pending{claim: c, fresh: fresh, done: make(chan struct{}), err: err}
	r.pending[c.ID] = p
	return p
}

// giveBack returns the slots of the fresh claims of ps, whose writes failed,
// then forgets ps and wakes their waiters. ps stay pending until their slots
// are back, so a retry of one of them meanwhile shares its failure instead
// of starting a write of a claim whose slot is on its way back. r.mu is not
// held across the gate calls: claims of other users go on meanwhile. A
// retry that marks a claim fresh during the calls has its slot returned in
// the next round; each slot is returned once (pending.given).
func (r *recorder) giveBack(ps []*pending, definite bool) {
	for {
		r.mu.Lock()
		var fresh []*pending
		for _, p := range ps {
			if p.fresh && !p.given {
				p.given = true
				fresh = append(fresh, p)
			}
		}
		if len(fresh) == 0 {
			r.retire(ps)
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		r.release(fresh, definite)
	}
	for _, p := range ps {
		close(p.done)
	}
}

// release hands the slots of ps to the failed hook, one claim per call, with
// up to releaseWorkers calls in flight across the recorder. Each call gets
// its own deadline, so that the last of a large batch is not out of time
// before it starts.
func (r *recorder) release(ps []*pending, definite bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(ps), releaseWorkers) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(ps)); i = next.Add(1) - 1 {
				r.releasers <- struct{}{}
				ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CommitWait)
				r.hooks.failed(ctx, []*dibs.Claim{ps[i].claim}, definite)
				cancel()
				<-r.releasers
			}
		})
	}
	wg.Wait()
}

// retire forgets the batch's pending writes. Callers hold r.mu.
func (r *recorder) retire(batch []*pending) {
	for _, p := range batch {
		delete(r.pending, p.claim.ID)
	}
}
