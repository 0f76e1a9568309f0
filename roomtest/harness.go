package roomtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/room"
)

// Secret is the room secret the suite's services use.
var Secret = []byte("roomtest-secret-0123456789abcdef")

var epoch = time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)

var dropSeq atomic.Int64

// NewDrop returns a valid queued coupon drop with a fresh id, opening at
// opensAt.
func NewDrop(stock int64, rate int, order string, opensAt time.Time) *dibs.Drop {
	d := &dibs.Drop{
		ID: fmt.Sprintf("room-%d", dropSeq.Add(1)), Title: "room test", Kind: dibs.KindCoupon,
		Stock: stock, OpensAt: opensAt,
		Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: rate, Order: order},
	}
	d.Normalize(opensAt)
	if err := d.Validate(); err != nil {
		panic(err)
	}
	return d
}

// Clock is a manual clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// Source is a room.Source over a fixed set of drops, each with a stock
// counter standing in for the gate.
type Source struct {
	mu    sync.Mutex
	drops map[string]*Stock
}

// Stock is one drop's slots as the fake gate counts them.
type Stock struct {
	Drop      atomic.Pointer[dibs.Drop]
	Left      atomic.Int64 // free slots
	Held      atomic.Int64 // held slots that may come back
	ReadsLeft atomic.Int64 // calls of Remaining
}

// Take takes a free slot, holding it if hold is set.
func (s *Stock) Take(hold bool) bool {
	for {
		n := s.Left.Load()
		if n <= 0 {
			return false
		}
		if s.Left.CompareAndSwap(n, n-1) {
			if hold {
				s.Held.Add(1)
			}
			return true
		}
	}
}

// Release gives n held slots back.
func (s *Stock) Release(n int64) {
	s.Held.Add(-n)
	s.Left.Add(n)
}

// NewSource returns an empty source.
func NewSource() *Source { return &Source{drops: make(map[string]*Stock)} }

// Add serves d with its full stock free.
func (s *Source) Add(d *dibs.Drop) *Stock {
	st := &Stock{}
	st.Drop.Store(d)
	st.Left.Store(d.Stock)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops[d.ID] = st
	return st
}

// Drops implements room.Source.
func (s *Source) Drops() []*dibs.Drop {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*dibs.Drop, 0, len(s.drops))
	for _, st := range s.drops {
		out = append(out, st.Drop.Load())
	}
	return out
}

func (s *Source) stock(id string) *Stock {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops[id]
}

// Remaining implements room.Source.
func (s *Source) Remaining(ctx context.Context, dropID string) (int64, error) {
	st := s.stock(dropID)
	st.ReadsLeft.Add(1)
	return st.Left.Load(), nil
}

// Returning implements room.Source.
func (s *Source) Returning(ctx context.Context, d *dibs.Drop) (int64, error) {
	return s.stock(d.ID).Held.Load(), nil
}

// harness runs one queued drop on a service over the backend under test,
// with a manual clock.
type harness struct {
	t     *testing.T
	svc   *room.Service
	clock *Clock
	src   *Source
	drop  *dibs.Drop
	stock *Stock
	tick  time.Duration
	hold  bool // claims hold their slot (a purchase drop)

	mu      sync.Mutex
	tickets map[string]string // user → ticket token
	won     map[string]bool
	wins    atomic.Int64
}

type options struct {
	seed uint64 // deterministic service randomness; 0: a random seed
	node string
	ttl  time.Duration
}

func newHarness(t *testing.T, backend dibs.Room, d *dibs.Drop, o options) *harness {
	t.Helper()
	if o.seed == 0 {
		o.seed = rand.Uint64()
	}
	clock := NewClock(epoch)
	var key [32]byte
	for i := range key {
		key[i] = byte(o.seed >> (8 * (i % 8)))
	}
	svc, err := room.New(room.Config{
		Backend: backend, Secret: Secret, Now: clock.Now, Rand: rand.NewChaCha8(key),
		Node: o.node, AdmissionTTL: o.ttl, LeaseTTL: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource()
	h := &harness{
		t: t, svc: svc, clock: clock, src: src, drop: d, stock: src.Add(d), tick: room.DefaultTick,
		tickets: make(map[string]string), won: make(map[string]bool),
	}
	return h
}

func (h *harness) now() time.Time { return h.clock.Now() }

// step moves the clock one tick and runs the service's step.
func (h *harness) step() {
	h.clock.Add(h.tick)
	h.svc.Tick(context.Background(), h.src)
}

// join joins user and keeps the ticket.
func (h *harness) join(user string) dibs.QueueStatus {
	h.t.Helper()
	st, err := h.svc.Join(context.Background(), h.drop, user)
	if err != nil {
		h.t.Fatalf("join %s: %v", user, err)
	}
	h.mu.Lock()
	h.tickets[user] = st.Ticket
	h.mu.Unlock()
	return st
}

// joinMany joins users u0..u(n-1) from a few goroutines.
func (h *harness) joinMany(prefix string, n int) {
	h.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				user := fmt.Sprintf("%s%d", prefix, i)
				st, err := h.svc.Join(context.Background(), h.drop, user)
				if err != nil {
					errs <- fmt.Errorf("join %s: %w", user, err)
					return
				}
				h.mu.Lock()
				h.tickets[user] = st.Ticket
				h.mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		h.t.Fatal(err)
	}
}

func (h *harness) status(user string) dibs.QueueStatus {
	h.t.Helper()
	h.mu.Lock()
	tok := h.tickets[user]
	h.mu.Unlock()
	st, err := h.svc.Status(context.Background(), h.drop, user, tok)
	if err != nil {
		h.t.Fatalf("status of %s: %v", user, err)
	}
	return st
}

// claim does what the engine does with an admission: check it, take a
// slot unless the user has one, count the admission used.
func (h *harness) claim(user, admission string) error {
	p, err := h.svc.Check(context.Background(), h.drop, user, admission, h.now())
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.won[user] {
		return nil
	}
	if !h.stock.Take(h.hold) {
		return dibs.Errorf(dibs.ESOLDOUT, "sold out")
	}
	h.won[user] = true
	h.wins.Add(1)
	h.svc.Used(context.Background(), p)
	return nil
}

// info reads the room's public state.
func (h *harness) info() dibs.QueueInfo {
	h.t.Helper()
	in, err := h.svc.Info(context.Background(), h.drop)
	if err != nil {
		h.t.Fatal(err)
	}
	return in
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := dibs.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}
