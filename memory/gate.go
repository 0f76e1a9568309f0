// Package memory implements the in-process gate and waiting rooms: the
// embedded default, where one dibs process hands out the slots of its drops
// from memory and rebuilds them from the record when it starts, and leads
// the waiting rooms of its queued drops.
package memory

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dibs-io/dibs"
)

var _ dibs.Gate = (*Gate)(nil)

// Gate keeps, per drop, a pool of free slots and who holds which. A drop of
// ten million slots costs nothing until claimed: the pool is a next-slot
// counter plus the slots that came back.
//
// Losers of a sold-out drop are answered from an atomic counter and a
// lock-free lookup, without taking the drop's lock.
type Gate struct {
	mu    sync.RWMutex
	pools map[string]*pool

	soldOutPath func() // tests: runs on the sold-out path, between its reads
}

// NewGate returns an empty gate.
func NewGate() *Gate {
	return &Gate{pools: make(map[string]*pool)}
}

type pool struct {
	soldOut error // the same answer for every loser: built once
	drop    atomic.Pointer[dibs.Drop]
	status  atomic.Pointer[dibs.Status]
	left    atomic.Int64 // free slots: read without the lock

	// holders maps user id to *holder. Written under mu, read without it on
	// the sold-out path.
	holders sync.Map

	// version is odd while a writer (under mu) changes left or holders,
	// and grows by two with each change: the sold-out path reads left and
	// a user's holder without the lock and trusts them only if version
	// was even before and unchanged after. See Reserve.
	version atomic.Uint64

	mu      sync.Mutex
	next    int64   // lowest slot never handed out
	free    []int64 // slots that came back
	byClaim map[string]*hold
	// released lists the released holds with a key that holders remember,
	// oldest first, at most dibs.ReleasedKeys. An entry whose key was
	// reused since (Unrecorded) stays until it ages out, as in Redis.
	released []releasedKey
}

type releasedKey struct{ user, key, claimID string }

// holder is what the gate knows of one user of a drop: their holds, and
// the keys of their released holds. It stays in pool.holders while it has
// either, so that the sold-out path sends a user with a released key to
// the lock, where the key gets its claim back.
type holder struct {
	holds    []*hold           // guarded by pool.mu
	released map[string]string // key → claim id; guarded by pool.mu
}

func (hr *holder) empty() bool { return len(hr.holds) == 0 && len(hr.released) == 0 }

type hold struct {
	user    string
	claimID string
	key     string
	slot    int64
	nth     int
	created time.Time
	durable bool
}

func (h *hold) toHold(existing bool) dibs.Hold {
	return dibs.Hold{
		UserID:         h.user,
		ClaimID:        h.claimID,
		Slot:           h.slot,
		Nth:            h.nth,
		IdempotencyKey: h.key,
		CreatedAt:      h.created,
		Existing:       existing,
		Durable:        h.durable,
	}
}

func (g *Gate) pool(dropID string) (*pool, error) {
	g.mu.RLock()
	p := g.pools[dropID]
	g.mu.RUnlock()
	if p == nil {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", dropID)
	}
	return p, nil
}

// Prepare implements dibs.Gate.
func (g *Gate) Prepare(ctx context.Context, d *dibs.Drop, scan dibs.ScanFunc) error {
	dc := *d
	g.mu.RLock()
	p := g.pools[d.ID]
	g.mu.RUnlock()
	if p != nil {
		p.drop.Store(&dc)
		p.setStatus(dc.Status)
		return nil
	}

	p = &pool{next: 1, byClaim: make(map[string]*hold), soldOut: dibs.Errorf(dibs.ESOLDOUT, "drop %s is sold out", d.ID)}
	p.drop.Store(&dc)
	p.setStatus(dc.Status)
	if err := p.rebuild(ctx, d.Stock, scan); err != nil {
		return err
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	if existing := g.pools[d.ID]; existing != nil { // lost a race with another Prepare
		existing.drop.Store(&dc)
		existing.setStatus(dc.Status)
		return nil
	}
	g.pools[d.ID] = p
	return nil
}

// rebuild fills an unpublished pool from the record's active claims.
func (p *pool) rebuild(ctx context.Context, stock int64, scan dibs.ScanFunc) error {
	var used []int64
	if scan != nil {
		err := scan(ctx, func(c *dibs.Claim) error {
			h := &hold{user: c.UserID, claimID: c.ID, key: c.IdempotencyKey, slot: c.Slot, nth: c.Nth, created: c.CreatedAt, durable: true}
			p.byClaim[c.ID] = h
			hr := p.holder(c.UserID)
			hr.holds = append(hr.holds, h)
			used = append(used, c.Slot)
			return nil
		})
		if err != nil {
			return err
		}
	}
	slices.Sort(used)
	var max int64
	if len(used) > 0 {
		max = used[len(used)-1]
	}
	// Slots below the highest used one that nobody holds came back earlier.
	// Push them so that the lowest is handed out first.
	for s, i := max, len(used)-1; s >= 1; s-- {
		if i >= 0 && used[i] == s {
			i--
			continue
		}
		p.free = append(p.free, s)
	}
	p.next = max + 1
	p.left.Store(stock - int64(len(used)))
	return nil
}

func (p *pool) holder(user string) *holder {
	if v, ok := p.holders.Load(user); ok {
		return v.(*holder)
	}
	hr := &holder{}
	p.holders.Store(user, hr)
	return hr
}

func (p *pool) setStatus(s dibs.Status) { p.status.Store(&s) }

// Reserve implements dibs.Gate.
func (g *Gate) Reserve(ctx context.Context, r dibs.ReserveRequest) (dibs.Hold, error) {
	p, err := g.pool(r.Drop.ID)
	if err != nil {
		return dibs.Hold{}, err
	}
	d := p.drop.Load()

	// The sold-out path: a user with nothing at stake (no hold, no released
	// key) is refused without the lock, if the drop is sold out or does not
	// admit claims. Left and the holder are two words, and reading them
	// one after the other is not enough, in either order: holder first,
	// the user's own concurrent request can store itself and take the last
	// slot in between, and the user who won is told "sold out"; left
	// first, the user's hold can be released and the slot taken back by
	// another of their requests in between. So the two reads are checked
	// as one against version, as a seqlock:
	//
	// Writers hold mu, so their changes never overlap, and each bumps
	// version (to odd) before its first change and again (to even) after
	// its last. Atomics and sync.Map are sequentially consistent and a
	// Store is synchronized before the Load that observes it (the Go
	// memory model). If the first read of version is even and the second
	// equal, no writer was midway when the first was read and none began
	// before the second: a writer's change seen by the reads between would
	// have made its first bump happen before the second read, and the
	// changes of every writer that ended before the first read happen
	// before the reads. So the user's holder and left are those of one
	// state of the drop, constant from the first read to the second, and
	// the status is read inside that span: the answer is the one the lock
	// would have given there. Any doubt (a writer midway, or one during
	// the reads) sends the request to the lock, which answers exactly;
	// after a sell-out writers are rare (releases), so real losers almost
	// never take it.
	if v := p.version.Load(); v%2 == 0 {
		if _, known := p.holders.Load(r.UserID); !known {
			if g.soldOutPath != nil {
				g.soldOutPath()
			}
			err := d.Admits(*p.status.Load(), r.Now)
			if err == nil && p.left.Load() <= 0 {
				err = p.soldOut
			}
			if err != nil && p.version.Load() == v {
				return dibs.Hold{}, err
			}
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()

	var hr *holder
	if v, ok := p.holders.Load(r.UserID); ok {
		hr = v.(*holder)
		if h := hr.byKey(r.IdempotencyKey); h != nil {
			return h.toHold(true), nil
		}
		if id, ok := hr.released[r.IdempotencyKey]; ok && r.IdempotencyKey != "" && id != r.Unrecorded {
			return dibs.Hold{UserID: r.UserID, ClaimID: id, IdempotencyKey: r.IdempotencyKey, Existing: true, Released: true}, nil
		}
		if d.PerUserLimit == 1 && len(hr.holds) == 1 {
			return hr.holds[0].toHold(true), nil
		}
	}
	if err := d.Admits(*p.status.Load(), r.Now); err != nil {
		return dibs.Hold{}, err
	}
	if hr != nil && len(hr.holds) >= d.PerUserLimit {
		return dibs.Hold{}, dibs.Errorf(dibs.ELIMIT, "you hold %d claims of drop %s, the most allowed", len(hr.holds), d.ID)
	}
	if p.left.Load() <= 0 {
		return dibs.Hold{}, p.soldOut
	}
	if r.ClaimID == "" {
		return dibs.Hold{}, dibs.ErrNeedClaimID
	}
	p.version.Add(1)
	defer p.version.Add(1)
	if hr == nil {
		hr = p.holder(r.UserID)
	}

	var slot int64
	if n := len(p.free); n > 0 {
		slot, p.free = p.free[n-1], p.free[:n-1]
	} else {
		slot = p.next
		p.next++
	}
	h := &hold{user: r.UserID, claimID: r.ClaimID, key: r.IdempotencyKey, slot: slot, nth: hr.freeNth(), created: r.Now}
	if h.key != "" {
		delete(hr.released, h.key) // Unrecorded: the key names the new hold now
	}
	hr.holds = append(hr.holds, h)
	p.byClaim[h.claimID] = h
	p.left.Add(-1)
	return h.toHold(false), nil
}

// byKey finds the hold with the idempotency key, if the key is not empty.
func (hr *holder) byKey(key string) *hold {
	if key != "" {
		for _, h := range hr.holds {
			if h.key == key {
				return h
			}
		}
	}
	return nil
}

// freeNth is the lowest place 1, 2, ... the user does not hold.
func (hr *holder) freeNth() int {
	for n := 1; ; n++ {
		if !slices.ContainsFunc(hr.holds, func(h *hold) bool { return h.nth == n }) {
			return n
		}
	}
}

// Confirm implements dibs.Gate.
func (g *Gate) Confirm(ctx context.Context, dropID string, claimIDs ...string) error {
	p, err := g.pool(dropID)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range claimIDs {
		if h := p.byClaim[id]; h != nil {
			h.durable = true
		}
	}
	return nil
}

// Release implements dibs.Gate.
func (g *Gate) Release(ctx context.Context, dropID, claimID string) (bool, error) {
	p, err := g.pool(dropID)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.byClaim[claimID]
	if h == nil {
		return false, nil
	}
	p.version.Add(1)
	defer p.version.Add(1)
	p.free = append(p.free, h.slot)
	p.left.Add(1)
	if h.key != "" {
		p.remember(h) // before drop1, which would forget the holder
	}
	p.drop1(h)
	return true, nil
}

// remember keeps the key of the released hold h, so that a retry with it
// gets h back instead of a new slot, and forgets the oldest past the bound.
// Callers hold p.mu and have bumped version.
func (p *pool) remember(h *hold) {
	hr := p.holder(h.user)
	if hr.released == nil {
		hr.released = make(map[string]string, 1)
	}
	hr.released[h.key] = h.claimID
	p.released = append(p.released, releasedKey{h.user, h.key, h.claimID})
	if len(p.released) <= dibs.ReleasedKeys {
		return
	}
	old := p.released[0]
	p.released = p.released[1:]
	if v, ok := p.holders.Load(old.user); ok {
		hr := v.(*holder)
		if hr.released[old.key] == old.claimID {
			delete(hr.released, old.key)
			if hr.empty() {
				p.holders.Delete(old.user)
			}
		}
	}
}

// drop1 forgets the hold h. Callers hold p.mu, have bumped version and see
// to its slot.
func (p *pool) drop1(h *hold) {
	delete(p.byClaim, h.claimID)
	if v, ok := p.holders.Load(h.user); ok {
		hr := v.(*holder)
		hr.holds = slices.DeleteFunc(hr.holds, func(x *hold) bool { return x == h })
		if hr.empty() {
			p.holders.Delete(h.user)
		}
	}
}

// SetStatus implements dibs.Gate.
func (g *Gate) SetStatus(ctx context.Context, dropID string, s dibs.Status) error {
	p, err := g.pool(dropID)
	if err != nil {
		return err
	}
	p.setStatus(s)
	return nil
}

// Remaining implements dibs.Gate.
func (g *Gate) Remaining(ctx context.Context, dropID string) (int64, error) {
	p, err := g.pool(dropID)
	if err != nil {
		return 0, err
	}
	return p.left.Load(), nil
}

// Holds implements dibs.Gate.
func (g *Gate) Holds(ctx context.Context, dropID string, fn func(dibs.Hold) error) error {
	p, err := g.pool(dropID)
	if err != nil {
		return err
	}
	p.mu.Lock()
	hs := make([]dibs.Hold, 0, len(p.byClaim))
	for _, h := range p.byClaim {
		hs = append(hs, h.toHold(false))
	}
	p.mu.Unlock()
	for _, h := range hs {
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

// Restore implements dibs.Gate.
func (g *Gate) Restore(ctx context.Context, c *dibs.Claim) (bool, error) {
	p, err := g.pool(c.DropID)
	if err != nil {
		return false, err
	}
	d := p.drop.Load()
	if c.Slot < 1 || c.Slot > d.Stock || c.Nth < 1 {
		return false, dibs.Errorf(dibs.EINVALID, "claim %s: slot %d or nth %d outside drop %s", c.ID, c.Slot, c.Nth, d.ID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byClaim[c.ID] != nil {
		return false, nil
	}
	p.version.Add(1)
	defer p.version.Add(1)

	// The holds in the way: the one on the slot, then the user's on the
	// same nth. Rare enough (a failover) that a scan is fine.
	var onSlot, onNth *hold
	for _, h := range p.byClaim {
		if h.slot == c.Slot {
			onSlot = h
		}
	}
	if v, ok := p.holders.Load(c.UserID); ok {
		for _, h := range v.(*holder).holds {
			if h.nth == c.Nth && h != onSlot {
				onNth = h
			}
		}
	}
	for _, h := range []*hold{onSlot, onNth} {
		if h == nil {
			continue
		}
		p.drop1(h)
		if h.slot != c.Slot {
			p.free = append(p.free, h.slot)
		}
	}

	switch {
	case onSlot != nil: // the slot passes straight from the evicted hold
	case c.Slot >= p.next:
		for s := p.next; s < c.Slot; s++ {
			p.free = append(p.free, s)
		}
		p.next = c.Slot + 1
	default:
		if i := slices.Index(p.free, c.Slot); i >= 0 {
			p.free = slices.Delete(p.free, i, i+1)
		}
	}

	h := &hold{user: c.UserID, claimID: c.ID, key: c.IdempotencyKey, slot: c.Slot, nth: c.Nth, created: c.CreatedAt, durable: true}
	hr := p.holder(c.UserID)
	hr.holds = append(hr.holds, h)
	p.byClaim[h.claimID] = h
	p.left.Store(max(d.Stock-int64(len(p.byClaim)), 0))
	return true, nil
}
