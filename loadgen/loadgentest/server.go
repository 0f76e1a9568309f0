// Package loadgentest is a small in-memory dibs server speaking the HTTP API
// v1, for testing the load generator and its audit. It can be told to break
// each invariant the audit checks, one per knob (hand out too many winners,
// lose an acknowledged one, refuse a slot it has, take money for a released
// claim, ...), and to misbehave the ways a loaded server does (stall, shed
// load, answer slowly). With a price it also keeps a payment gateway's
// ledger, served on GET /ledger as dibs pgsim does.
//
// It is a fake: one mutex, no durability, just enough of the contract.
package loadgentest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dibs-io/dibs"
)

// Secrets the fake accepts.
const (
	PassportSecret = "test-passport-secret"
	AdminToken     = "test-admin-token"
)

// Options configure a Server.
type Options struct {
	// Delay is added to every claim.
	Delay time.Duration
	// OverIssue hands out this many winners beyond the stock (a fault).
	OverIssue int
	// LoseWinner acknowledges one win with 201 and then loses it: it is
	// neither in the winners export nor readable, and its slot goes back to
	// the stock, as if the record never got it (a fault).
	LoseWinner bool
	// DuplicateSlot records the second winning claim with the first one's
	// slot; the slot it took is never exported (a fault).
	DuplicateSlot bool
	// SwapSlots exports two winners with each other's slot (a fault).
	SwapSlots bool
	// SoldOutEarly answers claims sold out while this many slots are left,
	// which the stats still count as remaining (a fault: an undersell).
	SoldOutEarly int
	// LoseReleased keeps the slot of a released hold from claims, which
	// are told sold out, while the stats count it as remaining (a fault:
	// an undersell of a purchase drop).
	LoseReleased bool
	// DoubleClaim records the first winning claim and never answers it (the
	// handler waits until the client gives up), then gives the same user's
	// next claim a second claim, over the per-user limit (a fault).
	DoubleClaim bool
	// PhantomWinner records the first winning claim and answers it 410
	// sold out (a fault).
	PhantomWinner bool
	// ForgetWinner answers a user who claims again while holding a claim
	// 410 sold out instead of its claim (a fault).
	ForgetWinner bool
	// State records winning claims in this state instead of the first state
	// of their drop's kind (a fault when it does not fit the kind).
	State string
	// RemainingOff is added to the remaining stock the admin stats report
	// (a fault).
	RemainingOff int64
	// ShedEvery answers every n-th claim 503 with Retry-After: 0.
	ShedEvery int
	// NoRetryAfter leaves the Retry-After header off those 503 answers (a
	// fault).
	NoRetryAfter bool
	// Orphans takes a slot for each of the first n winning claims, then
	// answers 500 without recording the claim, as a node whose record
	// write had an unknown outcome does; OrphanGrace later the slot goes
	// back, as dibs's reconciler gives it.
	Orphans     int
	OrphanGrace time.Duration
	// PayDelay is how long a payment takes to settle (default 20ms).
	PayDelay time.Duration
	// Decline says whether the n-th payment (from 0) is declined; a
	// declined payment releases the hold and returns its slot.
	Decline func(n int) bool
	// AdmitAfterPays > 0 makes the waiting room admit its first ticket at
	// once and the others only after that many payments were asked for,
	// whatever the drop's rate: a run whose later claims come after a
	// payment settled, by construction rather than by timing.
	AdmitAfterPays int
	// Price is what the drops MustCreateDrop makes charge per claim. Every
	// payment is recorded in the ledger (GET /ledger, the shape of dibs
	// pgsim's) under the claim's id, paid or declined as it settles.
	Price int64
	// PaidWithoutCharge records no charge for the first paid claim (a
	// fault).
	PaidWithoutCharge bool
	// ChargeWithoutClaim records the first declined payment as a paid
	// charge: the money is taken and the claim released (a fault).
	ChargeWithoutClaim bool
}

// Server is a running fake dibs server: node 0 of a deployment that
// AddNode can grow.
type Server struct {
	*httptest.Server
	opts    Options
	handler http.Handler

	stall    sync.RWMutex // handlers hold it for reading; Stall takes it
	verified sync.Map     // passport → subject: verifying each once keeps the fake cheap

	logMu    sync.Mutex
	nodes    []*httptest.Server
	requests []Request

	mu        sync.Mutex
	drops     map[string]*drop
	claims    map[string]*claim
	claimsAt  []time.Time // when each claim request came in
	nclaims   int
	payments  int
	lostClaim string
	orphans   int
	ledger    []Charge
	// The faults done once: the first winning claim's slot (DuplicateSlot),
	// the user owed a second claim (DoubleClaim), and which were done.
	firstSlot, owedSlot               int64
	doubleUser                        string
	duplicated, doubled, phantom      bool
	paidUncharged, declinedButCharged bool
}

// Charge is one entry of the ledger, as dibs pgsim lists it.
type Charge struct {
	Key       string `json:"key"` // the claim id
	Status    string `json:"status"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Reference string `json:"reference"` // drop/claim
}

type drop struct {
	ID           string    `json:"id"`
	Title        string    `json:"title"`
	Kind         string    `json:"kind"`
	Stock        int64     `json:"stock"`
	PerUserLimit int       `json:"per_user_limit"`
	Price        int64     `json:"price,omitempty"`
	OpensAt      time.Time `json:"opens_at"`
	HoldTTL      string    `json:"hold_ttl,omitempty"`
	Admission    struct {
		Mode string `json:"mode"`
		Rate int    `json:"rate,omitempty"`
	} `json:"admission"`

	next    int64   // next never-used slot
	free    []int64 // slots given back
	lost    []int64 // slots given back that claims never get (LoseReleased)
	byUser  map[string][]*claim
	byKey   map[string]*claim
	tickets int
	queueT0 time.Time
}

type claim struct {
	ID     string `json:"claim_id"`
	DropID string `json:"drop_id"`
	UserID string `json:"user_id"`
	Slot   int64  `json:"slot"`
	State  string `json:"state"`
}

// NewServer starts a fake server that tb closes at its end.
func NewServer(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.PayDelay == 0 {
		opts.PayDelay = 20 * time.Millisecond
	}
	s := &Server{opts: opts, drops: map[string]*drop{}, claims: map[string]*claim{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/admin/drops", s.admin(s.createDrop))
	mux.HandleFunc("GET /v1/admin/drops/{id}", s.admin(s.adminDrop))
	mux.HandleFunc("GET /v1/admin/drops/{id}/winners", s.admin(s.winners))
	mux.HandleFunc("GET /v1/drops/{id}", s.publicDrop)
	mux.HandleFunc("POST /v1/drops/{id}/claims", s.user(s.claim))
	mux.HandleFunc("GET /v1/claims/{id}", s.user(s.readClaim))
	mux.HandleFunc("POST /v1/claims/{id}/pay", s.user(s.pay))
	mux.HandleFunc("POST /v1/drops/{id}/queue", s.user(s.join))
	mux.HandleFunc("GET /v1/drops/{id}/queue/{ticket}", s.user(s.poll))
	mux.HandleFunc("GET /ledger", s.serveLedger)
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.stall.RLock()
		s.stall.RUnlock()
		mux.ServeHTTP(w, r)
	})
	s.Server = s.AddNode(tb)
	return s
}

// Request is one request a node of the fake took.
type Request struct {
	Node   int    // 0 for the first node, then in the order of AddNode
	Method string // GET, POST
	Path   string
	User   string // the passport's subject; "" for admin and anonymous requests
}

// AddNode starts another node over the same drops and claims, as another
// dibs node sharing one gate and record does, and returns it; tb closes it
// at its end. Close it to take the node down: connections to it are then
// refused.
func (s *Server) AddNode(tb testing.TB) *httptest.Server {
	tb.Helper()
	s.logMu.Lock()
	defer s.logMu.Unlock()
	node := len(s.nodes)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.logMu.Lock()
		s.requests = append(s.requests, Request{Node: node, Method: r.Method, Path: r.URL.Path,
			User: r.Header.Get("Authorization")}) // the subject, once Requests looks it up
		s.logMu.Unlock()
		s.handler.ServeHTTP(w, r)
	}))
	s.nodes = append(s.nodes, srv)
	tb.Cleanup(srv.Close)
	return srv
}

// Requests returns every request the nodes took, in order of arrival.
func (s *Server) Requests() []Request {
	s.logMu.Lock()
	out := append([]Request(nil), s.requests...)
	s.logMu.Unlock()
	for i, r := range out {
		out[i].User = ""
		if sub, ok := s.verified.Load(strings.TrimPrefix(r.User, "Bearer ")); ok {
			out[i].User = sub.(string)
		}
	}
	return out
}

// MustCreateDrop creates a drop straight in memory; queueRate > 0 puts
// users through a waiting room admitting that many per second.
func (s *Server) MustCreateDrop(tb testing.TB, id, kind string, stock int64, perUser, queueRate int) {
	tb.Helper()
	d := &drop{ID: id, Title: id, Kind: kind, Stock: stock, PerUserLimit: perUser, Price: s.opts.Price, OpensAt: time.Now()}
	d.Admission.Mode = dibs.AdmissionDirect
	if queueRate > 0 {
		d.Admission.Mode, d.Admission.Rate = dibs.AdmissionQueue, queueRate
	}
	if err := s.addDrop(d); err != nil {
		tb.Fatal(err)
	}
}

// Stall blocks every new request for d, as a stopped process would.
// Requests already inside a handler finish first.
func (s *Server) Stall(d time.Duration) {
	s.stall.Lock()
	time.Sleep(d)
	s.stall.Unlock()
}

// ClaimTimes returns when each claim request arrived, in order.
func (s *Server) ClaimTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.claimsAt...)
}

func (s *Server) addDrop(d *drop) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.drops[d.ID]; ok {
		return fmt.Errorf("drop %s exists", d.ID)
	}
	if d.PerUserLimit == 0 {
		d.PerUserLimit = 1
	}
	d.next = 1
	d.byUser = map[string][]*claim{}
	d.byKey = map[string]*claim{}
	s.drops[d.ID] = d
	return nil
}

func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+AdminToken {
			problem(w, 401, dibs.EUNAUTHORIZED)
			return
		}
		h(w, r)
	}
}

type userHandler func(w http.ResponseWriter, r *http.Request, user string)

func (s *Server) user(h userHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			problem(w, 401, dibs.EUNAUTHORIZED)
			return
		}
		if sub, ok := s.verified.Load(raw); ok {
			h(w, r, sub.(string))
			return
		}
		var c jwt.RegisteredClaims
		_, err := jwt.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return []byte(PassportSecret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
		if err != nil || c.Subject == "" {
			problem(w, 401, dibs.EUNAUTHORIZED)
			return
		}
		s.verified.Store(raw, c.Subject)
		h(w, r, c.Subject)
	}
}

func (s *Server) createDrop(w http.ResponseWriter, r *http.Request) {
	var d drop
	if err := json.NewDecoder(r.Body).Decode(&d); err != nil || !dibs.ValidDropID(d.ID) || d.Stock < 1 {
		problem(w, 400, dibs.EINVALID)
		return
	}
	if d.Admission.Mode == "" {
		d.Admission.Mode = dibs.AdmissionDirect
	}
	if err := s.addDrop(&d); err != nil {
		problem(w, 409, dibs.ECONFLICT)
		return
	}
	writeJSON(w, 201, &d)
}

func (s *Server) findDrop(w http.ResponseWriter, r *http.Request) *drop {
	d := s.drops[r.PathValue("id")]
	if d == nil {
		problem(w, 404, dibs.ENOTFOUND)
	}
	return d
}

// remaining is what the gate still has; the caller holds mu.
func (s *Server) remaining(d *drop) int64 {
	return max(d.Stock+int64(s.opts.OverIssue)-(d.next-1)+int64(len(d.free)+len(d.lost)), 0)
}

func (s *Server) adminDrop(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.findDrop(w, r)
	if d == nil {
		return
	}
	counts := map[string]int64{}
	var total int64
	for _, c := range s.claims {
		if c.DropID == d.ID {
			counts[c.State]++
			total++
		}
	}
	type stats struct {
		*drop
		Remaining   int64 `json:"remaining"`
		Held        int64 `json:"held"`
		Confirmed   int64 `json:"confirmed"`
		Paid        int64 `json:"paid"`
		Released    int64 `json:"released"`
		Expired     int64 `json:"expired"`
		ClaimsTotal int64 `json:"claims_total"`
	}
	writeJSON(w, 200, stats{d, s.remaining(d) + s.opts.RemainingOff, counts["held"], counts["confirmed"], counts["paid"],
		counts["released"], counts["expired"], total})
}

func (s *Server) winners(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.findDrop(w, r)
	if d == nil {
		return
	}
	var out []claim
	for _, c := range s.claims {
		if c.DropID == d.ID && dibs.ClaimState(c.State).Active() {
			out = append(out, *c)
		}
	}
	if s.opts.SwapSlots && len(out) >= 2 {
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		out[0].Slot, out[1].Slot = out[1].Slot, out[0].Slot
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, c := range out {
		_ = enc.Encode(c)
	}
}

// Ledger returns the charges recorded so far, oldest first.
func (s *Server) Ledger() []Charge {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Charge(nil), s.ledger...)
}

func (s *Server) serveLedger(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, s.Ledger())
}

func (s *Server) publicDrop(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.findDrop(w, r)
	if d == nil {
		return
	}
	rem := s.remaining(d)
	state := dibs.StateOpen
	if rem == 0 {
		state = dibs.StateSoldOut
	}
	writeJSON(w, 200, map[string]any{"id": d.ID, "title": d.Title, "kind": d.Kind, "state": state,
		"opens_at": d.OpensAt, "remaining": rem})
}

func (s *Server) claim(w http.ResponseWriter, r *http.Request, user string) {
	if s.opts.Delay > 0 {
		time.Sleep(s.opts.Delay)
	}
	s.mu.Lock()
	hang := s.claimLocked(w, r, user)
	s.mu.Unlock()
	if hang {
		<-r.Context().Done() // the answer never comes: the client gives up
	}
}

// claimLocked answers a claim, unless it reports that the answer must never
// come; the caller holds mu.
func (s *Server) claimLocked(w http.ResponseWriter, r *http.Request, user string) (hang bool) {
	s.claimsAt = append(s.claimsAt, time.Now())
	s.nclaims++
	if s.opts.ShedEvery > 0 && s.nclaims%s.opts.ShedEvery == 0 {
		if !s.opts.NoRetryAfter {
			w.Header().Set("Retry-After", "0")
		}
		problem(w, 503, dibs.EOVERLOADED)
		return false
	}
	d := s.findDrop(w, r)
	if d == nil {
		return false
	}
	if d.Admission.Mode == dibs.AdmissionQueue {
		switch a := r.Header.Get("Dibs-Admission"); {
		case a == "":
			problem(w, 403, dibs.EADMISSIONREQUIRED)
			return false
		case a != "adm:"+user:
			problem(w, 403, dibs.EADMISSIONINVALID)
			return false
		}
	}
	key := r.Header.Get("Idempotency-Key")
	if c := d.byKey[user+"\x00"+key]; key != "" && c != nil {
		writeJSON(w, 200, c)
		return false
	}
	var active []*claim
	for _, c := range d.byUser[user] {
		if dibs.ClaimState(c.State).Active() {
			active = append(active, c)
		}
	}
	owed := s.doubleUser == user && !s.doubled // DoubleClaim: the limit is not enforced
	switch {
	case owed:
		s.doubled = true
	case len(active) > 0 && s.opts.ForgetWinner:
		problem(w, 410, dibs.ESOLDOUT)
		return false
	case len(active) >= d.PerUserLimit:
		if d.PerUserLimit == 1 {
			writeJSON(w, 200, active[0])
			return false
		}
		problem(w, 409, dibs.ELIMIT)
		return false
	}
	var slot int64
	switch {
	case owed && s.owedSlot > 0:
		slot = s.owedSlot
	case len(d.free) > 0:
		slot, d.free = d.free[len(d.free)-1], d.free[:len(d.free)-1]
	case d.next <= d.Stock+int64(s.opts.OverIssue-s.opts.SoldOutEarly):
		slot = d.next
		d.next++
	default:
		problem(w, 410, dibs.ESOLDOUT)
		return false
	}
	state := string(dibs.InitialClaimState(dibs.Kind(d.Kind)))
	if s.opts.State != "" {
		state = s.opts.State
	}
	c := &claim{ID: fmt.Sprintf("c-%s-%d", d.ID, len(s.claims)+1), DropID: d.ID, UserID: user, Slot: slot, State: state}
	if s.orphans < s.opts.Orphans {
		s.orphans++
		time.AfterFunc(s.opts.OrphanGrace, func() {
			s.mu.Lock()
			d.free = append(d.free, slot)
			s.mu.Unlock()
		})
		problem(w, 500, dibs.EINTERNAL)
		return false
	}
	if s.opts.LoseWinner && s.lostClaim == "" {
		// Acknowledged below, never recorded: the fault the audit must
		// catch. The slot goes back, so that the stock still adds up.
		s.lostClaim = c.ID + "-lost"
		c.ID = s.lostClaim
		d.free = append(d.free, slot)
		writeJSON(w, 201, c)
		return false
	}
	if s.opts.DuplicateSlot && !s.duplicated {
		if s.firstSlot == 0 {
			s.firstSlot = slot
		} else {
			s.duplicated = true
			c.Slot = s.firstSlot
		}
	}
	s.claims[c.ID] = c
	d.byUser[user] = append(d.byUser[user], c)
	if key != "" {
		d.byKey[user+"\x00"+key] = c
	}
	switch {
	case s.opts.DoubleClaim && s.doubleUser == "":
		// The user's next claim comes after its timeout, when the drop
		// may have sold out: a slot is kept for it.
		s.doubleUser = user
		switch {
		case len(d.free) > 0:
			s.owedSlot, d.free = d.free[len(d.free)-1], d.free[:len(d.free)-1]
		case d.next <= d.Stock:
			s.owedSlot = d.next
			d.next++
		}
		return true
	case s.opts.PhantomWinner && !s.phantom:
		s.phantom = true
		problem(w, 410, dibs.ESOLDOUT)
		return false
	}
	writeJSON(w, 201, c)
	return false
}

func (s *Server) readClaim(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.claims[r.PathValue("id")]
	if c == nil || c.UserID != user {
		problem(w, 404, dibs.ENOTFOUND)
		return
	}
	writeJSON(w, 200, c)
}

func (s *Server) pay(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.claims[r.PathValue("id")]
	if c == nil || c.UserID != user {
		problem(w, 404, dibs.ENOTFOUND)
		return
	}
	if c.State != string(dibs.ClaimHeld) {
		problem(w, 409, dibs.ECONFLICT)
		return
	}
	n := s.payments
	s.payments++
	time.AfterFunc(s.opts.PayDelay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		d := s.drops[c.DropID]
		charge := Charge{Key: c.ID, Status: "paid", Amount: d.Price, Currency: "KRW", Reference: d.ID + "/" + c.ID}
		if s.opts.Decline != nil && s.opts.Decline(n) {
			c.State = string(dibs.ClaimReleased)
			if s.opts.LoseReleased {
				d.lost = append(d.lost, c.Slot)
			} else {
				d.free = append(d.free, c.Slot)
			}
			charge.Status = "declined"
			if s.opts.ChargeWithoutClaim && !s.declinedButCharged {
				s.declinedButCharged = true
				charge.Status = "paid"
			}
			s.ledger = append(s.ledger, charge)
			return
		}
		c.State = string(dibs.ClaimPaid)
		if s.opts.PaidWithoutCharge && !s.paidUncharged {
			s.paidUncharged = true
			return
		}
		s.ledger = append(s.ledger, charge)
	})
	writeJSON(w, 202, c)
}

func (s *Server) join(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.findDrop(w, r)
	if d == nil {
		return
	}
	if d.queueT0.IsZero() {
		d.queueT0 = time.Now()
	}
	d.tickets++
	ticket := fmt.Sprintf("%d.%s", d.tickets-1, user)
	writeJSON(w, 201, map[string]any{"ticket": ticket, "position": d.tickets, "eta_seconds": d.tickets / d.Admission.Rate})
}

func (s *Server) poll(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.findDrop(w, r)
	if d == nil {
		return
	}
	n, owner, ok := strings.Cut(r.PathValue("ticket"), ".")
	pos, err := strconv.Atoi(n)
	if !ok || err != nil || owner != user {
		problem(w, 404, dibs.ENOTFOUND)
		return
	}
	admitted := int(time.Since(d.queueT0).Seconds() * float64(d.Admission.Rate))
	if s.opts.AdmitAfterPays > 0 {
		admitted = 1
		if s.payments >= s.opts.AdmitAfterPays {
			admitted = d.tickets
		}
	}
	switch {
	case s.remaining(d) == 0:
		writeJSON(w, 200, map[string]any{"state": "sold_out"})
	case pos < admitted:
		writeJSON(w, 200, map[string]any{"state": "admitted", "admission": "adm:" + user})
	default:
		writeJSON(w, 200, map[string]any{"state": "waiting", "position": pos - admitted, "poll_after_ms": 50})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "code": code})
}
