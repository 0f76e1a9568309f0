package room

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/startstop"
)

// Defaults of Config.
const (
	DefaultTick        = 100 * time.Millisecond
	DefaultLeaseTTL    = 2 * time.Second
	DefaultBatchWindow = time.Second
)

// Polling advice bounds: a ticket holder is told to come back after at
// least MinPollAfter and at most MaxPollAfter while waiting.
const (
	MinPollAfter = 250 * time.Millisecond
	MaxPollAfter = 5 * time.Second
)

// LastCall is the advice while every free slot is promised to admissions
// outstanding and the sell-out may come at any moment: between LastCallMin
// and LastCallMax, spread by ticket number. Its longest, plus a tick and a
// poll's time, stays within the second in which people are to learn of
// the sell-out.
const (
	LastCallMin = 550 * time.Millisecond
	LastCallMax = 800 * time.Millisecond
)

// expiryGrace is how long after its admissions expire a batch still keeps
// their slots: a claim that passed the admission check just before the
// expiry finishes within it, so the slot it takes is never promised to the
// next person too.
const expiryGrace = 5 * time.Second

// rateTau is the time constant of the measured admission rate: how fast it
// follows a change.
const rateTau = 3 * time.Second

// Config is what a Service needs. Backend and Secret are required.
type Config struct {
	Backend dibs.Room
	// Secret keys tickets, admissions and the per-person entries; every
	// node of a deployment must share it (see DeriveSecret).
	Secret []byte
	// AdmissionTTL is how long an admitted person has to claim (default
	// dibs.DefaultAdmissionTTL). After it, the turn is lost and the slot it
	// kept goes to the next person.
	AdmissionTTL time.Duration
	// Tick spaces the node's steps: each one syncs every queued drop's room
	// once, advances the rooms this node leads, and wakes this node's
	// streams (default 100ms).
	Tick time.Duration
	// LeaseTTL is how long a room's leadership lasts without renewal
	// (default 2s): the longest pause in admissions when a leader dies.
	LeaseTTL time.Duration
	// BatchWindow groups admissions into batches that expire together
	// (default 1s).
	BatchWindow time.Duration
	// Node names this node in leases (default: host name and a random
	// suffix).
	Node   string
	Now    func() time.Time // default time.Now
	Rand   io.Reader        // seeds and epochs; default crypto/rand
	Logger *slog.Logger     // default discards

	// Pacer, if set, sets the rate of the auto-paced rooms this node
	// leads; without it their rate stays where it is.
	Pacer Pacer
}

// Pacer sets the admission rate of auto-paced drops (dibs.PaceAuto). The
// leader of a room calls it on each of its steps, with the people waiting
// and the free stock; the new rate reaches the room through the drop, as
// an operator's change does.
//
// A pacer may read and write the record, which can be slow while it is
// busy: the leader calls it beside its step, never inside it, so that
// admissions go on meanwhile. It calls it once at a time per drop (a step
// that finds the last call still running skips it), and Leader.Stop waits
// for the calls in flight.
type Pacer interface {
	Pace(ctx context.Context, d *dibs.Drop, waiting, remaining int64, now time.Time) error
}

// Source is what a room reads of the drops it queues for.
type Source interface {
	// Drops lists the drops this node serves; the queued ones have rooms.
	Drops() []*dibs.Drop
	// Remaining is the number of free slots of a drop (the gate's).
	Remaining(ctx context.Context, dropID string) (int64, error)
	// Returning is the number of a drop's held slots that may still come
	// back: unpaid holds of a purchase drop; zero for coupon drops.
	Returning(ctx context.Context, d *dibs.Drop) (int64, error)
}

// Service runs the waiting rooms of one node: joining, status, the
// admission checks of claims, and a loop that advances the rooms this node
// leads and refreshes the node's view of every room once per tick. Status
// reads and streams are answered from that view, never from the backend.
//
// Safe for concurrent use.
type Service struct {
	backend     dibs.Room
	keys        *Keys
	ttl         time.Duration
	tick        time.Duration
	lease       time.Duration
	batchWindow time.Duration
	node        string
	now         func() time.Time
	log         *slog.Logger
	pacer       Pacer

	randMu sync.Mutex
	rand   io.Reader // nil: crypto/rand

	mu    sync.RWMutex
	rooms map[string]*entry

	tickMu sync.Mutex // one step at a time
	wake   chan struct{}
	paces  sync.WaitGroup // Pacer calls in flight
}

var _ dibs.QueueService = (*Service)(nil)

// entry is one room as this node sees it.
type entry struct {
	snap    atomic.Pointer[snapshot]
	refresh sync.Mutex // one synchronous reload at a time

	mu      sync.Mutex
	changed chan struct{} // closed at the next publish

	// Leader state, guarded by Service.tickMu.
	allowance   float64
	returning   int64
	returningAt time.Time
	warnedAt    time.Time

	pacing atomic.Bool // a Pacer call for this room is in flight
}

// snapshot is a room's state as read at a moment, with what is derived
// from it.
type snapshot struct {
	dibs.RoomState
	outstanding int64 // admissions alive and not yet used
	at          time.Time
	leader      bool // this node led the room when it read it
}

// New returns a service. Its Leader runs its loop; the other methods work
// without it, on state read when first needed.
func New(cfg Config) (*Service, error) {
	if cfg.Backend == nil {
		return nil, errors.New("room: no backend")
	}
	keys, err := NewKeys(cfg.Secret)
	if err != nil {
		return nil, err
	}
	s := &Service{
		backend: cfg.Backend, keys: keys,
		ttl: cfg.AdmissionTTL, tick: cfg.Tick, lease: cfg.LeaseTTL, batchWindow: cfg.BatchWindow,
		node: cfg.Node, now: cfg.Now, log: cfg.Logger, rand: cfg.Rand, pacer: cfg.Pacer,
		rooms: make(map[string]*entry),
		wake:  make(chan struct{}, 1),
	}
	setDefault(&s.ttl, dibs.DefaultAdmissionTTL)
	setDefault(&s.tick, DefaultTick)
	setDefault(&s.lease, DefaultLeaseTTL)
	setDefault(&s.batchWindow, DefaultBatchWindow)
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.node == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		s.node = host + "-" + hex.EncodeToString(b[:])
	}
	return s, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Keys returns the service's token keys.
func (s *Service) Keys() *Keys { return s.keys }

// AdmissionTTL is how long an admitted person has to claim.
func (s *Service) AdmissionTTL() time.Duration { return s.ttl }

// Leader is the service's loop over src's queued drops, a dibs.Background:
// once per tick (or sooner, when the service is woken) it syncs every room,
// advances the rooms this node leads and publishes the node's view (Tick).
// A service runs one leader.
func (s *Service) Leader(src Source) *Leader {
	return &Leader{s: s, src: src}
}

// Leader runs a Service's loop; see Service.Leader.
type Leader struct {
	s   *Service
	src Source
	run startstop.Service
}

var _ dibs.Background = (*Leader)(nil)

// Start runs the loop until ctx ends or Stop is called. It returns at
// once; a second Start does nothing.
func (l *Leader) Start(ctx context.Context) error {
	return l.run.Start(ctx, l.loop)
}

// Stop ends the loop and waits for it. Safe to call twice, and without
// Start.
func (l *Leader) Stop() error { return l.run.Stop() }

func (l *Leader) loop(ctx context.Context) error {
	t := time.NewTicker(l.s.tick)
	defer t.Stop()
	defer l.s.paces.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-l.s.wake:
		}
		l.s.Tick(ctx, l.src)
	}
}

// Tick is one step of the loop over src's queued drops: sync each room
// (taking or renewing its lease), advance the rooms this node leads,
// publish the new view and wake the streams waiting on it.
func (s *Service) Tick(ctx context.Context, src Source) {
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	for _, d := range src.Drops() {
		if d.Admission.Mode != dibs.AdmissionQueue {
			continue
		}
		e := s.entry(d.ID)
		if phaseOf(d, s.now()) == phaseClosed && e.snap.Load() != nil {
			continue // nothing changes in a closed room
		}
		if err := s.step(ctx, src, d, e); err != nil && ctx.Err() == nil {
			if now := s.now(); now.Sub(e.warnedAt) >= 10*time.Second {
				e.warnedAt = now
				s.log.Warn("waiting room step failed", "drop", d.ID, "err", err)
			}
		}
	}
}

func (s *Service) step(ctx context.Context, src Source, d *dibs.Drop, e *entry) error {
	st, leader, err := s.backend.Sync(ctx, d.ID, s.node, s.lease, s.fresh())
	if err != nil {
		return fmt.Errorf("sync room: %w", err)
	}
	now := s.now()
	if leader {
		next, err := s.lead(ctx, src, d, e, st, now)
		if err != nil {
			s.publish(e, st, now, leader)
			return err
		}
		st = next
	}
	s.publish(e, st, now, leader)
	return nil
}

// lead advances a room: open the pre-queue at the opening, forget expired
// batches, and admit as many people as the rate allows and the stock can
// satisfy, counting the admissions still outstanding. Before the opening
// and while paused it only publishes the stock.
func (s *Service) lead(ctx context.Context, src Source, d *dibs.Drop, e *entry, st dibs.RoomState, now time.Time) (dibs.RoomState, error) {
	ph := phaseOf(d, now)
	if ph == phaseClosed {
		return st, nil
	}
	opening := !now.Before(d.OpensAt)
	expireBefore := now.Add(-s.ttl - expiryGrace)
	// Outstanding admissions are read before the stock: a claim in between
	// lowers the stock after the count, which errs on admitting too few.
	outstanding := outstandingAt(st.Batches, expireBefore)
	left, err := src.Remaining(ctx, d.ID)
	if err != nil {
		return st, fmt.Errorf("read remaining: %w", err)
	}
	adv := dibs.Advance{
		Now: now, Open: opening && !st.Opened, ExpireBefore: expireBefore, BatchWindow: s.batchWindow,
		Remaining: left, Rate: st.Rate,
	}
	if left <= 0 {
		if e.returningAt.IsZero() || now.Sub(e.returningAt) >= time.Second {
			n, err := src.Returning(ctx, d)
			if err != nil {
				return st, fmt.Errorf("read returning holds: %w", err)
			}
			e.returning, e.returningAt = n, now
		}
		adv.SoldOut = e.returning <= 0
	}

	rate := float64(d.Admission.Rate)
	if st.LastAdvance.IsZero() {
		adv.Rate = rate // the pace expected until one is measured
	}
	dt := s.tick
	if !st.LastAdvance.IsZero() {
		dt = min(max(now.Sub(st.LastAdvance), 0), time.Second)
	}
	if !opening || ph == phasePaused {
		e.allowance = 0
		next, err := s.backend.Advance(ctx, d.ID, s.node, adv)
		if err != nil {
			return st, fmt.Errorf("advance room: %w", err)
		}
		return next, nil
	}
	issued := st.Issued
	backlog := issued - min(st.Serving, issued)
	capacity := uint64(max(left-outstanding, 0))
	if s.pacer != nil && d.Admission.Pace == dibs.PaceAuto && e.pacing.CompareAndSwap(false, true) {
		waiting, free := int64(backlog), left-outstanding
		s.paces.Go(func() {
			defer e.pacing.Store(false)
			if err := s.pacer.Pace(ctx, d, waiting, free, now); err != nil && ctx.Err() == nil {
				s.log.Warn("pace room", "drop", d.ID, "err", err)
			}
		})
	}
	e.allowance += rate * dt.Seconds()
	paced := min(uint64(e.allowance), backlog) // what the pace would admit
	n := min(paced, capacity)
	e.allowance -= float64(n)
	if n == backlog || n == capacity {
		// Nobody else waits, or the stock is short: no credit builds up
		// for a burst later.
		e.allowance = min(e.allowance, 1)
	}
	adv.Admit = n
	// The measured rate is the pace of the line while the stock lets it
	// move: a tick held back by the stock (nobody admitted while the free
	// slots are promised or held) says nothing of it, and people past the
	// stock's reach get no ETA from it anyway.
	if backlog > 0 && dt > 0 && capacity >= paced {
		inst := float64(n) / dt.Seconds()
		alpha := 1 - math.Exp(-dt.Seconds()/rateTau.Seconds())
		adv.Rate += alpha * (inst - adv.Rate)
	}
	next, err := s.backend.Advance(ctx, d.ID, s.node, adv)
	if err != nil {
		return st, fmt.Errorf("advance room: %w", err)
	}
	return next, nil
}

// outstandingAt counts the admissions of batches admitted at or after
// expireBefore that have not won a claim.
func outstandingAt(batches []dibs.Batch, expireBefore time.Time) int64 {
	var n int64
	for _, b := range batches {
		if !b.At.Before(expireBefore) {
			n += int64(b.Size() - min(b.Used, b.Size()))
		}
	}
	return n
}

func (s *Service) publish(e *entry, st dibs.RoomState, now time.Time, leader bool) {
	e.snap.Store(&snapshot{RoomState: st, outstanding: outstandingAt(st.Batches, now.Add(-s.ttl-expiryGrace)), at: now, leader: leader})
	e.mu.Lock()
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

func (s *Service) entry(dropID string) *entry {
	s.mu.RLock()
	e := s.rooms[dropID]
	s.mu.RUnlock()
	if e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e = s.rooms[dropID]; e == nil {
		e = &entry{changed: make(chan struct{})}
		s.rooms[dropID] = e
	}
	return e
}

// snapshot returns this node's view of a room, reading it when the node
// has none or the loop has not refreshed it for a while.
func (s *Service) snapshot(ctx context.Context, dropID string) (*snapshot, error) {
	e := s.entry(dropID)
	snap := e.snap.Load()
	if snap != nil && s.now().Sub(snap.at) < s.stale() {
		return snap, nil
	}
	if snap != nil && !e.refresh.TryLock() {
		return snap, nil // someone is reloading it
	} else if snap == nil {
		e.refresh.Lock()
	}
	defer e.refresh.Unlock()
	if cur := e.snap.Load(); cur != snap {
		return cur, nil
	}
	st, _, err := s.backend.Sync(ctx, dropID, "", 0, s.fresh())
	if err != nil {
		return nil, dibs.WrapError(dibs.EUNAVAILABLE, "The waiting room is unavailable; retry shortly.", fmt.Errorf("sync room %s: %w", dropID, err))
	}
	s.publish(e, st, s.now(), snap != nil && snap.leader)
	return e.snap.Load(), nil
}

// stale is the age past which a view is read again outside the loop.
func (s *Service) stale() time.Duration { return max(10*s.tick, time.Second) }

// fresh draws the values a room is created with if it does not exist.
func (s *Service) fresh() dibs.RoomSeed {
	var b [40]byte
	if s.rand == nil {
		rand.Read(b[:])
	} else {
		s.randMu.Lock()
		_, err := io.ReadFull(s.rand, b[:])
		s.randMu.Unlock()
		if err != nil {
			panic(fmt.Sprintf("room: read randomness: %v", err))
		}
	}
	return dibs.RoomSeed{Epoch: binary.BigEndian.Uint64(b[:8]) | 1, Seed: b[8:]}
}

// Changed returns a channel closed when this node's view of the drop's
// room next changes (once per tick while the loop runs).
func (s *Service) Changed(dropID string) <-chan struct{} {
	e := s.entry(dropID)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// Released tells the room that n slots of a drop came back (a hold was
// released). The rooms advance at once instead of at the next tick; the
// leader admits exactly as many more people as slots came back.
func (s *Service) Released(ctx context.Context, dropID string, n int) {
	if n <= 0 {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Join gives userID a place in the drop's waiting room, or the place they
// have. Errors: ECONFLICT (the drop does not queue), ECLOSED, ESOLDOUT,
// EUNAVAILABLE.
func (s *Service) Join(ctx context.Context, d *dibs.Drop, userID string) (dibs.QueueStatus, error) {
	if err := queued(d); err != nil {
		return dibs.QueueStatus{}, err
	}
	now := s.now()
	closed := phaseOf(d, now) == phaseClosed
	snap, err := s.snapshot(ctx, d.ID)
	switch {
	case closed && err != nil:
		return dibs.QueueStatus{}, dibs.Errorf(dibs.ECLOSED, "Drop %s is closed.", d.ID)
	case err != nil:
		return dibs.QueueStatus{}, err
	case closed:
		return s.rejoin(ctx, d, snap, userID, now, dibs.Errorf(dibs.ECLOSED, "Drop %s is closed.", d.ID))
	case snap.SoldOut:
		return s.rejoin(ctx, d, snap, userID, now, dibs.Errorf(dibs.ESOLDOUT, "Drop %s is sold out.", d.ID))
	}
	place, err := s.backend.Join(ctx, d.ID, s.keys.Person(d.ID, userID), s.fresh())
	if err != nil {
		return dibs.QueueStatus{}, dibs.WrapError(dibs.EUNAVAILABLE, "The waiting room is unavailable; retry shortly.", fmt.Errorf("join room %s: %w", d.ID, err))
	}
	if place.Epoch != snap.Epoch { // the room was created anew since this node looked
		if snap, err = s.reload(ctx, d.ID); err != nil {
			return dibs.QueueStatus{}, err
		}
	}
	st, err := s.settle(ctx, d, s.status(d, snap, userID, place.Number, now))
	if err != nil {
		return dibs.QueueStatus{}, err
	}
	st.Ticket = s.keys.Ticket(dibs.Ticket{DropID: d.ID, UserID: userID, Number: place.Number, IssuedAt: now}, place.Epoch)
	st.Existing = place.Existing
	return st, nil
}

// rejoin answers a join of a sold-out or closed room: refused, unless
// userID has a ticket there that won (or may still claim), which they get
// back, so that a winner who comes back reads won and not sold out. If the
// room cannot be read, the join is refused: nobody else may join anyway.
func (s *Service) rejoin(ctx context.Context, d *dibs.Drop, snap *snapshot, userID string, now time.Time, refused error) (dibs.QueueStatus, error) {
	place, ok, err := s.backend.Find(ctx, d.ID, s.keys.Person(d.ID, userID))
	if err != nil {
		s.log.Debug("find place in a room that takes no joins", "drop", d.ID, "err", err)
		return dibs.QueueStatus{}, refused
	}
	if !ok || place.Epoch != snap.Epoch {
		return dibs.QueueStatus{}, refused
	}
	st, err := s.settle(ctx, d, s.status(d, snap, userID, place.Number, now))
	if err != nil || (st.State != dibs.QueueWon && st.State != dibs.QueueAdmitted) {
		return dibs.QueueStatus{}, refused
	}
	st.Ticket = s.keys.Ticket(dibs.Ticket{DropID: d.ID, UserID: userID, Number: place.Number, IssuedAt: now}, place.Epoch)
	st.Existing = true
	return st, nil
}

// settle tells a ticket whose admission expired apart from one that won
// with it: the only status that needs the backend, read once a ticket's
// wait is over.
func (s *Service) settle(ctx context.Context, d *dibs.Drop, st dibs.QueueStatus) (dibs.QueueStatus, error) {
	if st.State != dibs.QueueExpired {
		return st, nil
	}
	won, err := s.backend.Won(ctx, d.ID, st.Number)
	if err != nil {
		return dibs.QueueStatus{}, dibs.WrapError(dibs.EUNAVAILABLE, "The waiting room is unavailable; retry shortly.", fmt.Errorf("read won ticket %d of %s: %w", st.Number, d.ID, err))
	}
	switch {
	case won:
		st.State = dibs.QueueWon
	case phaseOf(d, st.Now) == phaseClosed:
		st.State = dibs.QueueClosed
	}
	return st, nil
}

func (s *Service) reload(ctx context.Context, dropID string) (*snapshot, error) {
	st, _, err := s.backend.Sync(ctx, dropID, "", 0, s.fresh())
	if err != nil {
		return nil, dibs.WrapError(dibs.EUNAVAILABLE, "The waiting room is unavailable; retry shortly.", fmt.Errorf("sync room %s: %w", dropID, err))
	}
	e := s.entry(dropID)
	old := e.snap.Load()
	s.publish(e, st, s.now(), old != nil && old.leader)
	return e.snap.Load(), nil
}

// Status is where the ticket token of userID stands. Errors: ECONFLICT
// (the drop does not queue), ENOTFOUND (the ticket is not this user's for
// this drop), EUNAVAILABLE.
func (s *Service) Status(ctx context.Context, d *dibs.Drop, userID, ticket string) (dibs.QueueStatus, error) {
	t, err := s.Verify(ctx, d, userID, ticket)
	if err != nil {
		return dibs.QueueStatus{}, err
	}
	return s.StatusOf(ctx, d, t)
}

// Verify checks that ticket is userID's for drop d. Errors: ECONFLICT (the
// drop does not queue), ENOTFOUND, EUNAVAILABLE.
func (s *Service) Verify(ctx context.Context, d *dibs.Drop, userID, ticket string) (dibs.HeldTicket, error) {
	if err := queued(d); err != nil {
		return dibs.HeldTicket{}, err
	}
	snap, err := s.snapshot(ctx, d.ID)
	if err != nil {
		return dibs.HeldTicket{}, err
	}
	t, err := s.keys.VerifyTicket(ticket, d.ID, userID, snap.Epoch)
	if err != nil {
		return dibs.HeldTicket{}, err
	}
	return dibs.HeldTicket{Ticket: t, Epoch: snap.Epoch}, nil
}

// StatusOf is where a verified ticket stands; d is the drop as it is now
// (an operator may have paused or closed it). ENOTFOUND once the room the
// ticket was signed for is gone (its state was lost: join again),
// EUNAVAILABLE.
func (s *Service) StatusOf(ctx context.Context, d *dibs.Drop, t dibs.HeldTicket) (dibs.QueueStatus, error) {
	if err := queued(d); err != nil {
		return dibs.QueueStatus{}, err
	}
	snap, err := s.snapshot(ctx, d.ID)
	if err != nil {
		return dibs.QueueStatus{}, err
	}
	if snap.Epoch != t.Epoch || t.DropID != d.ID {
		return dibs.QueueStatus{}, dibs.Errorf(dibs.ENOTFOUND, "No such ticket in the waiting room of drop %s; join again.", d.ID)
	}
	return s.settle(ctx, d, s.status(d, snap, t.UserID, t.Number, s.now()))
}

// Check verifies the admission userID presents to claim d at now. Errors:
// EADMISSIONREQUIRED, EADMISSIONINVALID, EUNAVAILABLE.
func (s *Service) Check(ctx context.Context, d *dibs.Drop, userID, admission string, now time.Time) (dibs.Pass, error) {
	if admission == "" {
		return s.keys.VerifyAdmission("", d.ID, userID, 0, now)
	}
	snap, err := s.snapshot(ctx, d.ID)
	if err != nil {
		return dibs.Pass{}, err
	}
	return s.keys.VerifyAdmission(admission, d.ID, userID, snap.Epoch, now)
}

// Used records that pass won a claim, so its slot no longer counts as
// promised to someone who may still come.
func (s *Service) Used(ctx context.Context, p dibs.Pass) {
	if err := s.backend.Use(ctx, p.DropID, p.Batch, p.Number); err != nil {
		s.log.Warn("count used admission", "drop", p.DropID, "batch", p.Batch, "err", err)
	}
}

// Phases of a drop, as Drop.Admits judges them but without building an
// error: status reads ask on every call.
const (
	phaseOpen = iota
	phaseNotOpen
	phasePaused
	phaseClosed
)

func phaseOf(d *dibs.Drop, now time.Time) int {
	switch {
	case d.Status == dibs.StatusClosed, !d.ClosesAt.IsZero() && !now.Before(d.ClosesAt):
		return phaseClosed
	case d.Status == dibs.StatusPaused:
		return phasePaused
	case now.Before(d.OpensAt):
		return phaseNotOpen
	}
	return phaseOpen
}

func queued(d *dibs.Drop) error {
	if d.Admission.Mode != dibs.AdmissionQueue {
		return dibs.Errorf(dibs.ECONFLICT, "Drop %s has no waiting room: claim it directly.", d.ID)
	}
	return nil
}

// Info returns the public state of the drop's room.
func (s *Service) Info(ctx context.Context, d *dibs.Drop) (dibs.QueueInfo, error) {
	if err := queued(d); err != nil {
		return dibs.QueueInfo{}, err
	}
	snap, err := s.snapshot(ctx, d.ID)
	if err != nil {
		return dibs.QueueInfo{}, err
	}
	in := dibs.QueueInfo{
		Order: d.Admission.Order, Rate: d.Admission.Rate, Opened: snap.Opened,
		Joined: snap.Issued, Serving: snap.Serving, SoldOut: snap.SoldOut,
		SeedDigest: SeedDigest(snap.Seed), Measured: snap.Rate,
	}
	if snap.Opened {
		in.PreQueue = snap.PreQueue
		in.Seed = hex.EncodeToString(snap.Seed)
	}
	return in, nil
}

// position is where ticket n stands in the room's order.
func (s *Service) position(d *dibs.Drop, snap *snapshot, n uint64) uint64 {
	if n <= snap.PreQueue && d.Admission.Order == dibs.OrderShuffle {
		return Position(snap.Seed, snap.PreQueue, n)
	}
	return n
}

func (s *Service) status(d *dibs.Drop, snap *snapshot, userID string, n uint64, now time.Time) dibs.QueueStatus {
	st := dibs.QueueStatus{Number: n, Joined: max(snap.Issued, n), Remaining: snap.Remaining, Now: now, ETA: -1}
	ph := phaseOf(d, now)
	if ph == phaseClosed {
		st.State = dibs.QueueClosed
		if snap.Opened && s.position(d, snap, n) <= snap.Serving {
			st.State = dibs.QueueExpired // admitted before the close: settle tells whether they won
		}
		return st
	}
	if !snap.Opened {
		st.State = dibs.QueueWaiting
		untilOpen := max(d.OpensAt.Sub(now), 0)
		ahead := float64(st.Joined) / 2 // a shuffle draws you anywhere: expect the middle
		if d.Admission.Order == dibs.OrderFIFO {
			st.Position = n
			ahead = float64(n - 1)
		}
		st.ETA = untilOpen + seconds(ahead/float64(d.Admission.Rate))
		st.PollAfter = min(max(untilOpen, 500*time.Millisecond), 30*time.Second) + time.Duration(n%1000)*time.Millisecond
		return st
	}
	p := s.position(d, snap, n)
	if p <= snap.Serving {
		b, ok := snap.batch(p)
		if !ok || !now.Before(b.At.Add(s.ttl)) {
			st.State = dibs.QueueExpired
			return st
		}
		st.State, st.ETA, st.PollAfter = dibs.QueueAdmitted, 0, time.Second
		st.Expires = b.At.Add(s.ttl).UTC().Truncate(time.Millisecond)
		st.Admission = s.keys.Admission(dibs.Pass{DropID: d.ID, UserID: userID, Number: n, Batch: b.Seq, Expires: st.Expires}, snap.Epoch)
		return st
	}
	if snap.SoldOut {
		st.State = dibs.QueueSoldOut
		return st
	}
	st.State = dibs.QueueWaiting
	st.Position = p - snap.Serving
	// The line moves at the measured pace, but only as far as the free
	// stock not promised to people already admitted reaches. Past it,
	// people get in only if slots come back (an unpaid hold released, an
	// admission unused), which nobody can foresee: no estimate, rather than
	// one that pretends the line moves.
	if ph != phasePaused && st.Position <= snap.reach() && snap.Rate >= minMeasuredRate {
		st.ETA = seconds(float64(st.Position) / snap.Rate)
	}
	st.PollAfter = s.pollAfter(snap, n, st.Position, st.ETA, d.Admission.Rate)
	return st
}

// minMeasuredRate is the admission rate below which the line counts as
// standing still: no ETA is derived from it.
const minMeasuredRate = 1e-3

// reach is how many more people the free stock can admit: the free slots
// not promised to admissions still outstanding.
func (snap *snapshot) reach() uint64 { return uint64(max(snap.Remaining-snap.outstanding, 0)) }

// pollAfter advises a waiting holder at position (1: next) when to ask
// again: when something may change for them. Until their turn, that is
// half the time to it; but people the free stock cannot reach (their
// position is past it) can only learn of the sell-out, so they come back
// just after it is due at the earliest (the room admits at most rate a
// second), when the admissions that take the last slots have had a poll's
// time to be claimed. Once every free slot is promised to admissions
// outstanding, the sell-out comes whenever their holders claim: everyone
// asks about once in LastCall, spread evenly by ticket number, so that
// they learn of it within a second without all coming at the floor.
// People far back ask rarely. Within MinPollAfter..MaxPollAfter, spread by
// ticket number so that equals do not arrive together.
func (s *Service) pollAfter(snap *snapshot, n, position uint64, eta time.Duration, rate int) time.Duration {
	next := 2 * MaxPollAfter
	if eta >= 0 {
		next = eta / 2
	}
	if snap.Remaining > 0 && rate > 0 {
		capacity := snap.reach()
		soldOut := seconds(float64(capacity)/float64(rate)) + MinPollAfter
		switch {
		case capacity == 0:
			return LastCallMin + (LastCallMax-LastCallMin)*time.Duration(n%64)/64
		case position > capacity:
			next = soldOut
		default:
			next = min(next, soldOut/2)
		}
	}
	next = min(max(next, MinPollAfter), MaxPollAfter)
	return next + next*time.Duration(n%16)/160 // up to 10% later
}

// batch finds the batch that admitted position p.
func (snap *snapshot) batch(p uint64) (dibs.Batch, bool) {
	bs := snap.Batches
	i := sort.Search(len(bs), func(i int) bool { return bs[i].End >= p })
	if i == len(bs) || bs[i].Start > p {
		return dibs.Batch{}, false
	}
	return bs[i], true
}

func seconds(f float64) time.Duration {
	if f > float64(math.MaxInt64/int64(time.Second)) {
		return math.MaxInt64
	}
	return time.Duration(f * float64(time.Second))
}
