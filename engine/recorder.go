package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dibs-io/dibs"
)

// Group-commit defaults: a batch closes when it holds MaxBatch claims,
// Linger after its first claim arrived, or as soon as no more claims are
// waiting, whichever comes first. Under load, claims pile up during each
// commit and the next batch takes them all.
const (
	DefaultMaxBatch   = 512
	DefaultLinger     = time.Millisecond
	DefaultQueue      = 8192
	DefaultCommitWait = 10 * time.Second
)

// RecorderConfig tunes group commit.
type RecorderConfig struct {
	MaxBatch   int           // claims per transaction
	Linger     time.Duration // how long a batch waits to fill
	Queue      int           // claims waiting for a batch; beyond it, EOVERLOADED
	Committers int           // transactions in flight at once (1 for SQLite)
	CommitWait time.Duration // deadline of one commit
}

func (c *RecorderConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
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
// wake: committed claims, claims whose write failed (with whether the
// failure is known to have left nothing behind), and drops whose record
// refused a claim the gate gave out.
type recordHooks struct {
	committed func(ctx context.Context, claims []*dibs.Claim)
	failed    func(ctx context.Context, claims []*dibs.Claim, definite bool)
	conflict  func(dropID string)
}

// recorder batches concurrent claim writes into one transaction each (group
// commit), so that durability costs one fsync per batch, not per claim.
// Writes of the same claim id share one pending write.
type recorder struct {
	store   claimWriter
	cfg     RecorderConfig
	hooks   recordHooks
	metrics *Metrics
	log     *slog.Logger

	queue chan *pending
	stop  chan struct{}
	wg    sync.WaitGroup

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
	done  chan struct{}
	err   error
}

// claimWriter is the part of dibs.Store the recorder uses.
type claimWriter interface {
	RecordClaims(ctx context.Context, claims []*dibs.Claim) ([]error, error)
}

func newRecorder(store claimWriter, cfg RecorderConfig, hooks recordHooks, m *Metrics, log *slog.Logger) *recorder {
	cfg.setDefaults()
	return &recorder{
		store: store, cfg: cfg, hooks: hooks, metrics: m, log: log,
		queue:   make(chan *pending, cfg.Queue),
		stop:    make(chan struct{}),
		pending: make(map[string]*pending),
	}
}

func (r *recorder) start() {
	for range r.cfg.Committers {
		r.wg.Go(r.loop)
	}
}

// close stops taking claims, commits every claim already queued, and waits.
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
}

// record waits until c is durable (nil), refused by the record (ECONFLICT),
// or its batch failed. It returns early if ctx ends; the write goes on.
func (r *recorder) record(ctx context.Context, c *dibs.Claim, fresh bool) error {
	r.mu.Lock()
	p := r.pending[c.ID]
	switch {
	case p != nil:
		p.fresh = p.fresh || fresh
	case r.closed:
		r.refuse(c, fresh)
		r.mu.Unlock()
		return dibs.Errorf(dibs.EUNAVAILABLE, "The server is shutting down.")
	default:
		p = &pending{claim: c, fresh: fresh, done: make(chan struct{})}
		select {
		case r.queue <- p:
			r.pending[c.ID] = p
		default:
			r.refuse(c, fresh)
			r.mu.Unlock()
			r.metrics.recorderRejected.Inc()
			return dibs.Errorf(dibs.EOVERLOADED, "Too many claims are waiting to be recorded.")
		}
	}
	r.mu.Unlock()

	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *recorder) loop() {
	batch := make([]*pending, 0, r.cfg.MaxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		batch = batch[:0]
		select {
		case p := <-r.queue:
			batch = append(batch, p)
		case <-r.stop:
			r.drain(batch)
			return
		}
		timer.Reset(r.cfg.Linger)
	fill:
		for len(batch) < r.cfg.MaxBatch {
			select {
			case p := <-r.queue:
				batch = append(batch, p)
				continue
			default:
			}
			// Nothing waiting: let claims already on their way arrive, and
			// commit if none did. Waiting out the linger here would only
			// add latency; claims that come during the commit batch anyway.
			runtime.Gosched()
			select {
			case p := <-r.queue:
				batch = append(batch, p)
			case <-timer.C:
				break fill
			case <-r.stop:
				break fill
			default:
				break fill
			}
		}
		timer.Stop()
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
		// Slots go back while no new write of these claims can start, so a
		// retry either shares this failure or finds the slot released.
		r.mu.Lock()
		var fresh []*dibs.Claim
		for _, p := range batch {
			p.err = failure
			if p.fresh {
				fresh = append(fresh, p.claim)
			}
		}
		r.hooks.failed(ctx, fresh, definite)
		r.retire(batch)
		r.mu.Unlock()
	} else {
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
		r.hooks.committed(ctx, ok)
		r.mu.Lock()
		r.retire(batch)
		r.mu.Unlock()
	}
	for _, p := range batch {
		close(p.done)
	}
}

// writing reports whether a write of the claim is queued or in flight here.
func (r *recorder) writing(claimID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending[claimID] != nil
}

// refuse gives back the slot of a fresh claim that was never queued.
// Callers hold r.mu.
func (r *recorder) refuse(c *dibs.Claim, fresh bool) {
	if fresh {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CommitWait)
		defer cancel()
		r.hooks.failed(ctx, []*dibs.Claim{c}, true)
	}
}

// retire forgets the batch's pending writes. Callers hold r.mu.
func (r *recorder) retire(batch []*pending) {
	for _, p := range batch {
		delete(r.pending, p.claim.ID)
	}
}
