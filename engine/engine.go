// Package engine runs drops: it takes claims through the gate, makes winners
// durable in the record with group commit before anyone is told they won,
// and answers losers and retries from memory.
//
// It depends only on the dibs interfaces; cmd/dibs chooses the gate and the
// store.
package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/startstop"
)

// Config is what an Engine needs. Store and Gate are required.
type Config struct {
	Store    dibs.Store
	Gate     dibs.Gate
	Recorder RecorderConfig
	Metrics  *Metrics         // NewMetrics() if nil
	Logger   *slog.Logger     // discards if nil
	Now      func() time.Time // time.Now if nil
	NewID    func() string    // NewClaimID if nil

	// Background, if set, is the store the engine's background work reads
	// through: loading drops (Open, Refresh), the gate's rebuild scans and
	// the Reconciler. A store with a pool per workload gives one on its
	// background pool, so that this work neither waits for nor holds the
	// connections claims and drop reads need. Store if nil.
	Background dibs.Store

	// Admissions guards the claims of queued drops; without it they are
	// refused.
	Admissions Admissions
}

// Admissions guards the claims of queued drops. The waiting room
// (room.Service) implements it.
type Admissions interface {
	// Check verifies the admission userID presents to claim d at now.
	// Errors: EADMISSIONREQUIRED, EADMISSIONINVALID, EUNAVAILABLE.
	Check(ctx context.Context, d *dibs.Drop, userID, admission string, now time.Time) (dibs.Pass, error)
	// Used records that a pass won a new claim.
	Used(ctx context.Context, p dibs.Pass)
	// Released tells that n slots of a drop came back to the gate.
	Released(ctx context.Context, dropID string, n int)
}

// Engine runs the drops of one dibs process. Safe for concurrent use.
type Engine struct {
	store   dibs.Store
	bg      dibs.Store // background reads; see Config.Background
	gate    dibs.Gate
	admit   Admissions
	rec     *recorder
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
	newID   func() string

	mu    sync.RWMutex
	drops map[string]*entry

	// conflicts names drops whose record refused a claim the gate gave
	// out: the gate and the record disagree, and a Reconciler looks soon.
	conflicts chan string

	// run is the recorder's committers and the retry of drops the gate
	// could not prepare at Start.
	run startstop.Service
}

// entry is a drop as the engine serves it, with its claim counters.
type entry struct {
	drop     atomic.Pointer[dibs.Drop]
	outcomes [len(outcomeNames)]atomic.Int64
	left     atomic.Pointer[int64] // the gate's count last read by View

	// refusing: the gate's last answer refused everyone (sold out, not
	// open, paused, closed), so the next request asks without minting a
	// claim id. See reserve.
	refusing atomic.Bool
}

// Outcomes of a claim request, in the order of outcomeNames.
const (
	outcomeWon = iota
	outcomeExisting
	outcomeSoldOut
	outcomeLimit
	outcomeClosed
	outcomeNotOpen
	outcomePaused
	outcomeAdmission
	outcomeUnavailable
	outcomeError
)

var outcomeNames = [...]string{"won", "existing", "sold_out", "limit_reached", "closed", "not_open", "paused", "admission", "unavailable", "error"}

func outcomeOf(err error) int {
	switch dibs.ErrorCode(err) {
	case "":
		return outcomeWon
	case dibs.ESOLDOUT:
		return outcomeSoldOut
	case dibs.ELIMIT:
		return outcomeLimit
	case dibs.ECLOSED:
		return outcomeClosed
	case dibs.ENOTOPEN:
		return outcomeNotOpen
	case dibs.EPAUSED:
		return outcomePaused
	case dibs.EADMISSIONREQUIRED, dibs.EADMISSIONINVALID:
		return outcomeAdmission
	case dibs.EUNAVAILABLE, dibs.EOVERLOADED:
		return outcomeUnavailable
	}
	return outcomeError
}

// New returns an engine. Call Start before use and Stop after.
func New(cfg Config) *Engine {
	e := &Engine{
		store: cfg.Store, gate: cfg.Gate, admit: cfg.Admissions, metrics: cfg.Metrics, log: cfg.Logger,
		now: cfg.Now, newID: cfg.NewID,
		drops:     make(map[string]*entry),
		conflicts: make(chan string, 256),
	}
	if e.bg = cfg.Background; e.bg == nil {
		e.bg = cfg.Store
	}
	if e.metrics == nil {
		e.metrics = NewMetrics()
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.newID == nil {
		e.newID = NewClaimID
	}
	e.rec = newRecorder(cfg.Store, cfg.Gate, cfg.Recorder, recordHooks{failed: e.failed, conflict: e.conflict}, e.metrics, e.log)
	return e
}

// NewClaimID returns a claim id: a ULID in lower case, 48 bits of
// milliseconds then 80 random bits from crypto/rand. The time prefix makes
// the record's id index grow at its end instead of everywhere (fewer pages
// written per commit); the random part keeps ids unguessable.
func NewClaimID() string {
	return strings.ToLower(ulid.MustNew(ulid.Now(), rand.Reader).String())
}

// Prepare retries after Open: the first wait, doubled up to the last.
const (
	prepareRetryMin = 100 * time.Millisecond
	prepareRetryMax = 5 * time.Second
)

// Start loads every drop from the record, rebuilds the gate from the
// active claims, and starts the recorder; it returns once claims can be
// taken. Only a record that cannot list its drops fails it, before anything
// runs. A drop the gate cannot prepare (Redis is down) is served all the
// same: its claims answer EUNAVAILABLE (503 with Retry-After) while the
// engine goes on preparing it in the background, until the gate takes it
// or the engine stops. A node started during a gate outage comes up, and
// heals by itself.
//
// The engine runs until ctx ends or Stop is called; then it takes no more
// claims and commits those already queued. A node that answers requests
// until it shuts down passes a context that outlives them.
func (e *Engine) Start(ctx context.Context) error {
	drops, err := e.bg.ListDrops(ctx)
	if err != nil {
		return fmt.Errorf("load drops: %w", err)
	}
	var failed []*dibs.Drop
	for _, d := range drops {
		if err := e.install(ctx, d); err != nil {
			e.log.Warn("gate not ready for a drop; its claims answer unavailable until it is", "drop", d.ID, "err", err)
			failed = append(failed, d)
		}
	}
	e.rec.start()
	return e.run.Start(ctx, func(ctx context.Context) error {
		e.retryPrepare(ctx, failed)
		<-ctx.Done()
		e.rec.close()
		return nil
	})
}

// Stop stops taking claims and waits until every claim already queued is
// committed (or failed). Safe to call twice, and before Start.
func (e *Engine) Stop() error {
	err := e.run.Stop()
	e.rec.close() // a recorder started by a Start whose ctx was never used
	return err
}

// Open is Start with a context that only bounds the loading of the
// drops: the engine runs until Close.
func (e *Engine) Open(ctx context.Context) error {
	return e.Start(context.WithoutCancel(ctx))
}

// Close is Stop.
func (e *Engine) Close() error { return e.Stop() }

// Committed delivers a signal after group commits that made claims
// durable: what follows a commit (post-processing's outbox) listens here.
// Signals coalesce: one may stand for several commits, and a commit while
// a signal waits unread adds none. The recorder never waits for a reader.
// The channel is closed once the engine has stopped and committed its
// last claims.
func (e *Engine) Committed() <-chan struct{} { return e.rec.committed }

// retryPrepare installs the drops of failed until each succeeds, backing
// off between rounds. A drop Refresh or the reconciler installed meanwhile
// is installed once more, which changes nothing.
func (e *Engine) retryPrepare(ctx context.Context, failed []*dibs.Drop) {
	wait := prepareRetryMin
	for len(failed) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, prepareRetryMax)
		var still []*dibs.Drop
		for _, d := range failed {
			if err := e.install(ctx, d); err != nil {
				still = append(still, d)
				continue
			}
			e.log.Info("gate ready for the drop; claims go on", "drop", d.ID)
		}
		failed = still
	}
}

// Refresh loads drops from the record: new ones are prepared in the gate,
// known ones take the record's settings and status. Other nodes' drops and
// operator actions arrive this way; a gate that lost a drop's state
// rebuilds it. A drop that fails does not keep the others from refreshing.
func (e *Engine) Refresh(ctx context.Context) error {
	drops, err := e.bg.ListDrops(ctx)
	if err != nil {
		return fmt.Errorf("load drops: %w", err)
	}
	var errs []error
	for _, d := range drops {
		if err := e.install(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// install serves d and prepares it in the gate (rebuilding it from the
// record if the gate has no state). A copy of the record read before this
// node's latest change of the drop does not undo that change. The drop is
// served even if the gate fails: its claims then answer what the gate says
// (EUNAVAILABLE), not "no such drop".
func (e *Engine) install(ctx context.Context, d *dibs.Drop) error {
	e.mu.Lock()
	ent := e.drops[d.ID]
	if ent == nil {
		ent = &entry{}
		e.drops[d.ID] = ent
		ent.drop.Store(d)
	} else if cur := ent.drop.Load(); d.UpdatedAt.Before(cur.UpdatedAt) {
		d = cur
	} else {
		ent.drop.Store(d)
	}
	e.mu.Unlock()

	scan := func(ctx context.Context, fn func(*dibs.Claim) error) error {
		return e.bg.ScanActiveClaims(ctx, d.ID, fn)
	}
	if err := e.gate.Prepare(ctx, d, scan); err != nil {
		return fmt.Errorf("prepare drop %s: %w", d.ID, err)
	}
	return nil
}

func (e *Engine) entry(id string) (*entry, error) {
	e.mu.RLock()
	ent := e.drops[id]
	e.mu.RUnlock()
	if ent == nil {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	return ent, nil
}

func (e *Engine) entries() []*entry {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]*entry, 0, len(e.drops))
	for _, ent := range e.drops {
		out = append(out, ent)
	}
	return out
}

// CreateDrop fills d's defaults, validates it, records it and opens it in
// the gate. Errors: EINVALID, ECONFLICT (id taken). A gate that cannot take
// the drop yet (Redis slow or down) does not fail it: the drop is recorded,
// and served once the gate takes it.
func (e *Engine) CreateDrop(ctx context.Context, d *dibs.Drop) error {
	d.Normalize(e.now().UTC().Truncate(time.Microsecond))
	if err := d.Validate(); err != nil {
		return err
	}
	if err := e.store.CreateDrop(ctx, d); err != nil {
		return err
	}
	if err := e.install(ctx, d); err != nil {
		// The drop is recorded and served: its claims answer what the
		// gate says (EUNAVAILABLE) until Refresh or the reconciler
		// prepares it.
		e.log.Warn("gate not ready for a new drop; its claims answer unavailable until it is", "drop", d.ID, "err", err)
	}
	return nil
}

// Drop returns the drop id as this node serves it. ENOTFOUND if unknown.
func (e *Engine) Drop(id string) (*dibs.Drop, error) {
	ent, err := e.entry(id)
	if err != nil {
		return nil, err
	}
	return ent.drop.Load(), nil
}

// Drops returns every drop this node serves.
func (e *Engine) Drops() []*dibs.Drop {
	ents := e.entries()
	out := make([]*dibs.Drop, len(ents))
	for i, ent := range ents {
		out[i] = ent.drop.Load()
	}
	return out
}

// View returns the drop's public state. It reads the gate, never the record.
func (e *Engine) View(ctx context.Context, id string) (dibs.DropView, error) {
	ent, err := e.entry(id)
	if err != nil {
		return dibs.DropView{}, err
	}
	d := ent.drop.Load()
	left, err := e.viewRemaining(ctx, ent, id)
	if err != nil {
		return dibs.DropView{}, e.gateError(id, err)
	}
	return dibs.DropView{Drop: d, State: d.StateAt(d.Status, e.now(), left), Remaining: left}, nil
}

// ViewDeadline bounds how long a drop read waits for the gate's count of
// the remaining stock. A gate that answers late (Redis slow) must not
// slow the public drop page: past the deadline the read shows the count
// this node read last, and fails only if it never read one
// (TestFaultSlowRedis).
const ViewDeadline = 50 * time.Millisecond

func (e *Engine) viewRemaining(ctx context.Context, ent *entry, id string) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, ViewDeadline)
	defer cancel()
	left, err := e.gate.Remaining(cctx, id)
	if err == nil {
		ent.left.Store(&left)
		return left, nil
	}
	if last := ent.left.Load(); last != nil && ctx.Err() == nil {
		return *last, nil
	}
	return 0, err
}

// Stats returns the drop's view, the record's claim counts and this node's
// claim outcomes.
func (e *Engine) Stats(ctx context.Context, id string) (dibs.DropStats, error) {
	v, err := e.View(ctx, id)
	if err != nil {
		return dibs.DropStats{}, err
	}
	counts, err := e.store.CountClaims(ctx, id)
	if err != nil {
		return dibs.DropStats{}, err
	}
	ent, _ := e.entry(id)
	st := dibs.DropStats{DropView: v, Claims: counts, Outcomes: make(map[string]int64, len(outcomeNames))}
	for i, name := range outcomeNames {
		n := ent.outcomes[i].Load()
		st.Outcomes[name] = n
		st.ClaimsTotal += n
	}
	return st, nil
}

// SetStatus pauses, resumes or closes a drop. A closed drop stays closed:
// ECONFLICT for any later change.
func (e *Engine) SetStatus(ctx context.Context, id string, s dibs.Status) error {
	ent, err := e.entry(id)
	if err != nil {
		return err
	}
	cur := ent.drop.Load()
	if cur.Status == dibs.StatusClosed && s != dibs.StatusClosed {
		return dibs.Errorf(dibs.ECONFLICT, "drop %s is closed for good", id)
	}
	now := e.now().UTC().Truncate(time.Microsecond)
	if err := e.store.SetDropStatus(ctx, id, s, now); err != nil {
		return err
	}
	if err := e.gate.SetStatus(ctx, id, s); err != nil {
		return err
	}
	next := *cur
	next.Status, next.UpdatedAt = s, now
	ent.drop.Store(&next)
	return nil
}

var (
	_ dibs.DropService  = (*Engine)(nil)
	_ dibs.ClaimService = (*Engine)(nil)
)

// Claim takes a slot for the user. It returns once the gate has answered:
// losers get their error, everyone else a dibs.Claiming whose Wait returns
// the claim once it is durable (created false when the user already held
// it: a retry). Between the two the caller may give back what it holds
// (the HTTP layer's share of the CPU): Wait needs none.
//
// Losers are answered from the gate alone: ESOLDOUT, ELIMIT, ECLOSED,
// ENOTOPEN, EPAUSED, ENOTFOUND. EUNAVAILABLE or EOVERLOADED, from Claim or
// Wait, mean the claim could not be recorded: nothing was won, retry later.
//
// A queued drop takes claims with a valid admission only
// (EADMISSIONREQUIRED, EADMISSIONINVALID), and the admission is the
// claim's idempotency key: every claim with it gets the same claim back.
//
// An idempotency key names its first claim for good: once that claim is
// released (a declined payment, an expired hold), a claim with the key
// gets it back as the record has it (released or expired, created false)
// and takes no slot. Only a key whose claim never reached the record (its
// write failed) may claim again.
//
// Each request counts once in the drop's outcomes and the claim latency,
// from the start of Claim to the moment its outcome is known: in Claim for
// losers and retries answered from memory, in Wait for the others.
func (e *Engine) Claim(ctx context.Context, req dibs.ClaimRequest) (dibs.Claiming, error) {
	start := time.Now()
	ent, err := e.entry(req.DropID)
	if err != nil {
		return nil, err
	}
	d := ent.drop.Load()
	now := e.now().UTC().Truncate(time.Microsecond)
	var pass *dibs.Pass
	if d.Admission.Mode == dibs.AdmissionQueue {
		p, err := e.checkAdmission(ctx, d, req, now)
		if err != nil {
			e.count(ent, outcomeOf(err), start)
			return nil, err
		}
		pass, req.IdempotencyKey = &p, p.ClaimKey()
	}
	rr := dibs.ReserveRequest{Drop: d, UserID: req.UserID, IdempotencyKey: req.IdempotencyKey, Now: now}
	h, err := e.reserve(ctx, ent, &rr)
	if err == nil && h.Released {
		var c *dibs.Claim
		if c, h, err = e.released(ctx, rr, h); c != nil {
			e.count(ent, outcomeExisting, start)
			return held{c}, nil
		}
	}
	if err != nil {
		err = e.gateError(d.ID, err)
		e.count(ent, outcomeOf(err), start)
		return nil, err
	}
	c := claimOf(d, req.UserID, h)
	if h.Existing && h.Durable {
		e.count(ent, outcomeExisting, start)
		return held{c}, nil
	}
	// A fresh hold, or a retry of a hold whose write has not been seen to
	// finish (in flight here, or its node died): write it. Writes are
	// idempotent by claim id.
	p, err := e.rec.enqueue(c, !h.Existing)
	if err != nil {
		e.count(ent, outcomeOf(err), start)
		return nil, err
	}
	return &claiming{e: e, ent: ent, start: start, c: c, p: p, existing: h.Existing, pass: pass}, nil
}

// ClaimAndWait is Claim and then Wait, for callers that hold nothing worth
// giving back in between.
func (e *Engine) ClaimAndWait(ctx context.Context, req dibs.ClaimRequest) (c *dibs.Claim, created bool, err error) {
	w, err := e.Claim(ctx, req)
	if err != nil {
		return nil, false, err
	}
	return w.Wait(ctx)
}

// count records a claim request's outcome and its latency since start.
func (e *Engine) count(ent *entry, outcome int, start time.Time) {
	ent.outcomes[outcome].Add(1)
	e.metrics.claimLatencyBy[outcome].Observe(time.Since(start).Seconds())
}

// held is a claim the user already holds durably: Wait has nothing to wait
// for.
type held struct{ c *dibs.Claim }

func (h held) Wait(context.Context) (*dibs.Claim, bool, error) { return h.c, false, nil }

// claiming is a claim on its way to the record.
type claiming struct {
	e        *Engine
	ent      *entry
	start    time.Time
	c        *dibs.Claim
	p        *pending
	existing bool       // a retry of a hold whose write was not seen to finish
	pass     *dibs.Pass // the admission it was claimed with, if queued
}

func (w *claiming) Wait(ctx context.Context) (*dibs.Claim, bool, error) {
	if err := w.p.wait(ctx); err != nil {
		w.e.count(w.ent, outcomeOf(err), w.start)
		return nil, false, err
	}
	c := w.c
	if w.existing {
		w.e.count(w.ent, outcomeExisting, w.start)
		return c, false, nil
	}
	if w.pass != nil {
		w.e.admit.Used(ctx, *w.pass)
	}
	w.e.count(w.ent, outcomeWon, w.start)
	return c, true, nil
}

// reserve asks the gate for a slot for rr, which gets a claim id only if
// it may get a new hold. Minting an id (a clock read, 80 random bits, the
// encoding) costs about as much as the rest of a loser's answer, and the
// losers of a spike outnumber the winners by far: while the drop refuses
// everyone, the engine asks without an id, and the gate's ErrNeedClaimID
// (a slot came back) costs one more ask.
func (e *Engine) reserve(ctx context.Context, ent *entry, rr *dibs.ReserveRequest) (dibs.Hold, error) {
	if !ent.refusing.Load() {
		rr.ClaimID = e.newID()
	}
	h, err := e.gate.Reserve(ctx, *rr)
	if errors.Is(err, dibs.ErrNeedClaimID) {
		ent.refusing.Store(false)
		rr.ClaimID = e.newID()
		h, err = e.gate.Reserve(ctx, *rr)
	}
	switch dibs.ErrorCode(err) {
	case dibs.ESOLDOUT, dibs.ENOTOPEN, dibs.EPAUSED, dibs.ECLOSED:
		if !ent.refusing.Load() { // a load first: losers share the line without writing it
			ent.refusing.Store(true)
		}
	}
	return h, err
}

// released answers a claim whose idempotency key named a released hold h:
// with the claim as the record has it, or, if the record never got it,
// with a new hold for the key (c nil).
func (e *Engine) released(ctx context.Context, rr dibs.ReserveRequest, h dibs.Hold) (*dibs.Claim, dibs.Hold, error) {
	if rr.ClaimID == "" {
		rr.ClaimID = e.newID() // the key may take a new hold below
	}
	// A second release of the key between two reads is possible only if
	// another request won with it meanwhile: a few rounds settle it.
	for range 3 {
		c, err := e.store.FindClaim(ctx, h.ClaimID)
		switch {
		case err == nil:
			return c, dibs.Hold{}, nil
		case dibs.ErrorCode(err) != dibs.ENOTFOUND:
			if ctx.Err() != nil {
				return nil, dibs.Hold{}, ctx.Err()
			}
			return nil, dibs.Hold{}, dibs.WrapError(dibs.EUNAVAILABLE, "The record is unavailable; please retry.", fmt.Errorf("find released claim %s: %w", h.ClaimID, err))
		}
		rr.Unrecorded = h.ClaimID
		if rr.ClaimID == "" {
			rr.ClaimID = e.newID()
		}
		if h, err = e.gate.Reserve(ctx, rr); err != nil || !h.Released {
			return nil, h, err
		}
	}
	return nil, dibs.Hold{}, dibs.Errorf(dibs.EUNAVAILABLE, "Your claim with this key is changing; please retry.")
}

// gateError is err from the gate about drop id, which this node serves: a
// gate that does not know the drop (its Prepare failed) is not ready yet.
func (e *Engine) gateError(id string, err error) error {
	if dibs.ErrorCode(err) == dibs.ENOTFOUND {
		return dibs.WrapError(dibs.EUNAVAILABLE, "The drop is not ready on this node; please retry.", fmt.Errorf("gate: %w", err))
	}
	return err
}

// checkAdmission verifies the admission of a claim on a queued drop.
func (e *Engine) checkAdmission(ctx context.Context, d *dibs.Drop, req dibs.ClaimRequest, now time.Time) (dibs.Pass, error) {
	switch {
	case req.Admission == "":
		return dibs.Pass{}, dibs.Errorf(dibs.EADMISSIONREQUIRED, "Drop %s admits claims from its waiting room only: join the queue and claim with the admission it gives you (Dibs-Admission header).", d.ID)
	case e.admit == nil:
		return dibs.Pass{}, dibs.Errorf(dibs.EADMISSIONINVALID, "Drop %s queues, but this node has no waiting room.", d.ID)
	}
	return e.admit.Check(ctx, d, req.UserID, req.Admission, now)
}

// claimOf is the claim a hold stands for.
func claimOf(d *dibs.Drop, user string, h dibs.Hold) *dibs.Claim {
	c := &dibs.Claim{
		ID: h.ClaimID, DropID: d.ID, UserID: user, Slot: h.Slot, Nth: h.Nth,
		State: dibs.InitialClaimState(d.Kind), IdempotencyKey: h.IdempotencyKey,
		CreatedAt: h.CreatedAt, UpdatedAt: h.CreatedAt,
	}
	if d.Kind == dibs.KindPurchase {
		c.HoldExpiresAt = h.CreatedAt.Add(d.HoldTTL)
	}
	return c
}

// failed returns the slots of claims whose write certainly left nothing
// behind. After an unknown outcome the holds stay; the record decides later.
func (e *Engine) failed(ctx context.Context, claims []*dibs.Claim, definite bool) {
	if !definite {
		return
	}
	for _, c := range claims {
		if _, err := e.ReleaseSlot(ctx, c.DropID, c.ID); err != nil {
			e.log.Error("release slot after failed write", "drop", c.DropID, "claim", c.ID, "err", err)
		}
	}
}

// conflict tells a Reconciler to look at the drop soon. It never blocks:
// with the queue full, the next periodic pass finds the drop anyway.
func (e *Engine) conflict(dropID string) {
	select {
	case e.conflicts <- dropID:
	default:
	}
}

// ReleaseSlot returns the slot of the hold claimID to the gate and tells
// the waiting room, which admits one more person in its place. It reports
// false if the gate has no such hold. Whatever gives a slot back (a failed
// write, a declined payment, an expired hold) goes through here.
func (e *Engine) ReleaseSlot(ctx context.Context, dropID, claimID string) (bool, error) {
	ok, err := e.gate.Release(ctx, dropID, claimID)
	if ok && e.admit != nil {
		e.admit.Released(ctx, dropID, 1)
	}
	return ok, err
}

func claimIDsByDrop(claims []*dibs.Claim) map[string][]string {
	out := make(map[string][]string)
	for _, c := range claims {
		out[c.DropID] = append(out[c.DropID], c.ID)
	}
	return out
}

// FindClaim returns the claim id if userID owns it; ENOTFOUND otherwise, so
// that nobody learns of other users' claims.
func (e *Engine) FindClaim(ctx context.Context, id, userID string) (*dibs.Claim, error) {
	c, err := e.store.FindClaim(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.UserID != userID {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	}
	return c, nil
}

// Winners streams the drop's active claims in slot order.
func (e *Engine) Winners(ctx context.Context, dropID string, fn func(*dibs.Claim) error) error {
	if _, err := e.entry(dropID); err != nil {
		return err
	}
	return e.store.ScanActiveClaims(ctx, dropID, fn)
}

// pinger is a gate with a dependency of its own to check (Redis).
type pinger interface {
	Ping(ctx context.Context) error
}

// Ready reports whether the engine's dependencies answer: the record, and
// the gate if it lives outside the process.
func (e *Engine) Ready(ctx context.Context) error {
	if err := e.store.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if p, ok := e.gate.(pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return fmt.Errorf("gate: %w", err)
		}
	}
	return nil
}
