package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/startstop"
)

// Reconciler defaults.
const (
	DefaultReconcileInterval = 15 * time.Second
	// DefaultReconcileGrace is longer than any commit (DefaultCommitWait),
	// so a hold that old with no record will never get one from the write
	// that took it.
	DefaultReconcileGrace = 30 * time.Second
	DefaultReconcileSoon  = 100 * time.Millisecond
	DefaultFullEvery      = 20
)

// ReconcilerConfig tunes a Reconciler. Zero values take the defaults.
type ReconcilerConfig struct {
	// Interval between passes over every drop.
	Interval time.Duration
	// Grace is how old a hold with no record must be before its slot goes
	// back to the pool.
	Grace time.Duration
	// Soon is how long after the record refused a claim the reconciler
	// looks at its drop: conflicts come in bursts, one pass answers them.
	Soon time.Duration
	// FullEvery: a periodic pass over a drop whose gate and record hold as
	// many claims as each other is skipped, except every FullEvery-th
	// interval. A full pass reads every hold and every claim of the drop.
	FullEvery int
	// Logger is the engine's if nil.
	Logger *slog.Logger
}

// Reconciler heals the gate from the record, which is the arbiter:
//
//   - a hold with no record, older than the grace period, is a claim whose
//     node died between gate and record (or whose write failed with an
//     unknown outcome): its slot goes back;
//   - an active claim of the record that the gate lacks (a failover lost
//     it) is restored, and holds in its way are dropped;
//   - a drop whose gate state is missing is rebuilt from the record.
//
// It passes over every open drop each Interval (skipping, most of the time,
// a drop whose gate and record count as many claims), and over a drop soon
// after the record refused a claim of it. Every node may run one; their
// work is idempotent.
type Reconciler struct {
	e   *Engine
	cfg ReconcilerConfig
	log *slog.Logger
	run startstop.Service
}

// ReconcileResult is what one pass over a drop did.
type ReconcileResult struct {
	Released int // holds with no record whose slots went back
	Restored int // claims of the record put back into the gate
}

// NewReconciler returns a reconciler of e's drops. Start runs it.
func NewReconciler(e *Engine, cfg ReconcilerConfig) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultReconcileInterval
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultReconcileGrace
	}
	if cfg.Soon <= 0 {
		cfg.Soon = DefaultReconcileSoon
	}
	if cfg.FullEvery <= 0 {
		cfg.FullEvery = DefaultFullEvery
	}
	log := cfg.Logger
	if log == nil {
		log = e.log
	}
	return &Reconciler{e: e, cfg: cfg, log: log}
}

// Start runs the reconciler in the background until ctx ends or Stop is
// called. It returns at once; starting a running reconciler does nothing.
func (r *Reconciler) Start(ctx context.Context) error {
	return r.run.Start(ctx, r.loop)
}

// Stop ends the reconciler and waits for a pass in progress. Safe to call
// twice, or without Start.
func (r *Reconciler) Stop() error { return r.run.Stop() }

func (r *Reconciler) loop(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	dirty := map[string]bool{}
	var soon <-chan time.Time
	for n := 1; ; {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			full := n%r.cfg.FullEvery == 0
			n++
			for _, d := range r.e.Drops() {
				if d.Status == dibs.StatusClosed || (!full && r.agrees(ctx, d)) {
					continue
				}
				r.pass(ctx, d.ID)
			}
		case id := <-r.e.conflicts:
			dirty[id] = true
			if soon == nil {
				soon = time.After(r.cfg.Soon)
			}
		case <-soon:
			soon = nil
			for id := range dirty {
				r.pass(ctx, id)
			}
			clear(dirty)
		}
	}
}

// agrees reports whether the gate holds as many slots of d as the record
// has active claims: two cheap counts instead of reading every claim.
func (r *Reconciler) agrees(ctx context.Context, d *dibs.Drop) bool {
	left, err := r.e.gate.Remaining(ctx, d.ID)
	if err != nil {
		return false
	}
	counts, err := r.e.bg.CountClaims(ctx, d.ID)
	return err == nil && d.Stock-left == counts.Active()
}

// pass reconciles one drop and logs what it did or why it could not.
func (r *Reconciler) pass(ctx context.Context, dropID string) {
	res, err := r.Reconcile(ctx, dropID)
	switch {
	case errors.Is(err, context.Canceled):
	case err != nil:
		r.e.metrics.reconcileErrors.Inc()
		r.log.Warn("reconcile drop", "drop", dropID, "err", err)
	case res != ReconcileResult{}:
		r.log.Warn("reconciled the gate with the record", "drop", dropID, "released", res.Released, "restored", res.Restored)
	}
}

// Reconcile makes one pass over a drop: its gate state (rebuilt if
// missing), then its holds against the record's active claims.
func (r *Reconciler) Reconcile(ctx context.Context, dropID string) (ReconcileResult, error) {
	var res ReconcileResult
	e := r.e
	d, err := e.bg.FindDrop(ctx, dropID)
	if err != nil {
		return res, fmt.Errorf("find drop: %w", err)
	}
	if err := e.install(ctx, d); err != nil {
		return res, err
	}
	r.e.metrics.reconcilePasses.Inc()

	// The gate first, then the record: a hold taken between the two reads
	// is not judged, and a claim recorded between them is found in both.
	holds := map[string]dibs.Hold{}
	if err := e.gate.Holds(ctx, dropID, func(h dibs.Hold) error { holds[h.ClaimID] = h; return nil }); err != nil {
		return res, fmt.Errorf("gate holds: %w", err)
	}
	active := map[string]*dibs.Claim{}
	if err := e.bg.ScanActiveClaims(ctx, dropID, func(c *dibs.Claim) error { active[c.ID] = c; return nil }); err != nil {
		return res, fmt.Errorf("record claims: %w", err)
	}

	for id, c := range active {
		if _, ok := holds[id]; ok {
			continue
		}
		// Released in the record since the scan? Then it stays out.
		if cur, err := e.bg.FindClaim(ctx, id); err != nil || !cur.State.Active() {
			continue
		}
		ok, err := e.gate.Restore(ctx, c)
		if err != nil {
			return res, fmt.Errorf("restore claim %s: %w", id, err)
		}
		if ok {
			res.Restored++
			e.metrics.reconcileRestored.Inc()
			r.log.Warn("restored a recorded claim the gate had lost", "drop", dropID, "claim", id, "slot", c.Slot, "user", c.UserID)
		}
	}

	cutoff := e.now().Add(-r.cfg.Grace)
	for id, h := range holds {
		// Young holds, and holds this node is still writing (a recorder
		// backed up past the grace period), may yet be recorded.
		if _, ok := active[id]; ok || h.CreatedAt.After(cutoff) || e.rec.writing(id) {
			continue
		}
		// Recorded since the scan (a retry finished the write)? Then it stays.
		cur, err := e.bg.FindClaim(ctx, id)
		switch {
		case err == nil && cur.State.Active():
			continue
		case err != nil && dibs.ErrorCode(err) != dibs.ENOTFOUND:
			return res, fmt.Errorf("find claim %s: %w", id, err)
		}
		ok, err := e.ReleaseSlot(ctx, dropID, id) // the waiting room admits one more in its place
		if err != nil {
			return res, fmt.Errorf("release claim %s: %w", id, err)
		}
		if ok {
			res.Released++
			e.metrics.reconcileReleased.Inc()
			r.log.Warn("released a hold the record never got", "drop", dropID, "claim", id, "slot", h.Slot, "user", h.UserID, "age", e.now().Sub(h.CreatedAt).Round(time.Second))
		}
	}
	return res, nil
}
