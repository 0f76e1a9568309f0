// Package pgsim is a payment-gateway simulator that speaks the dibs payment
// protocol (see package payment and docs/payments.md). It is an http.Handler
// that tests and the demo run in-process and that `dibs pgsim` serves.
//
// It misbehaves on demand, the way gateways do on a busy day: latency with a
// long tail, declines, requests that hang past any client timeout (and may
// have been applied anyway), connection resets, 500s, an overload cap past
// which it answers 503 at once, and outages (scheduled windows or toggled at
// run time). Its ledger holds at most one charge per idempotency key, whatever
// the concurrency, and lists every charge on GET /ledger, so a test can prove
// that nobody was charged twice.
package pgsim

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment"
)

// Simulator is a simulated payment gateway. It is safe for concurrent use.
type Simulator struct {
	outages []Window
	apiKey  string
	now     func() time.Time
	log     *slog.Logger
	start   time.Time
	seed    uint64
	mux     *http.ServeMux
	ledger  *ledger

	closeOnce sync.Once
	closed    chan struct{}

	mu        sync.Mutex // guards the fields below
	rand      *rand.Rand
	knobs     Knobs
	down      bool      // outage toggled at run time
	downUntil time.Time // end of that outage; zero: until toggled off

	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	c           counters
}

// counters are the simulator's statistics, each an atomic counter.
type counters struct {
	requests, charges, paid, declined, replays, mismatches, refunds,
	lookups, notFound, timeouts, resets, errors, overloaded, outage atomic.Int64
}

// Stats are the simulator's counters (GET /stats).
type Stats struct {
	Seed        uint64 `json:"seed"`
	Outage      bool   `json:"outage"`        // in an outage now
	Requests    int64  `json:"requests"`      // /v1 requests received
	Charges     int64  `json:"charges"`       // charges recorded in the ledger
	Paid        int64  `json:"paid"`          // of which paid
	Declined    int64  `json:"declined"`      // of which declined
	Replays     int64  `json:"replays"`       // charge requests answered from the ledger
	Mismatches  int64  `json:"mismatches"`    // keys reused with a different request
	Refunds     int64  `json:"refunds"`       // charges refunded
	Lookups     int64  `json:"lookups"`       // GET /v1/charges/{key}
	NotFound    int64  `json:"not_found"`     // lookups and refunds of unknown keys
	Timeouts    int64  `json:"timeouts"`      // timeout faults injected
	Resets      int64  `json:"resets"`        // connections reset (faults and outages)
	Errors      int64  `json:"errors"`        // 500s injected
	Overloaded  int64  `json:"overloaded"`    // refused over MaxConcurrency
	OutageHits  int64  `json:"outage_hits"`   // requests that met an outage
	InFlight    int64  `json:"in_flight"`     // /v1 requests in progress
	MaxInFlight int64  `json:"max_in_flight"` // most /v1 requests in progress at once
}

// New returns a simulator for cfg, its clock starting now (for scheduled
// outages). EINVALID if cfg is invalid. A nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(cfg.Now().UnixNano())
	}
	s := &Simulator{
		outages: append([]Window(nil), cfg.Outages...),
		apiKey:  cfg.APIKey,
		now:     cfg.Now,
		log:     logger,
		start:   cfg.Now(),
		seed:    seed,
		ledger:  newLedger(),
		closed:  make(chan struct{}),
		rand:    rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		knobs:   cfg.Knobs,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/charges", s.v1(s.handleCharge))
	mux.HandleFunc("GET /v1/charges/{key}", s.v1(s.handleLookup))
	mux.HandleFunc("POST /v1/charges/{key}/refund", s.v1(s.handleRefund))
	mux.HandleFunc("GET /ledger", s.handleLedger)
	mux.HandleFunc("GET /stats", s.handleStats)
	mux.HandleFunc("GET /admin/knobs", s.handleKnobs)
	mux.HandleFunc("PUT /admin/knobs", s.handleSetKnobs)
	mux.HandleFunc("POST /admin/outage", s.handleOutage)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.mux = mux
	return s, nil
}

// ServeHTTP serves the gateway protocol and the simulator's own endpoints.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close aborts the requests the simulator is holding (hangs and latency), so
// that an http.Server can shut down without waiting for them. Their
// connections are dropped without an answer. Close is safe to call twice.
func (s *Simulator) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

// Knobs returns the simulator's current behaviour.
func (s *Simulator) Knobs() Knobs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.knobs
}

// SetKnobs changes the simulator's behaviour for the requests that arrive
// from now on. EINVALID if k is invalid.
func (s *Simulator) SetKnobs(k Knobs) error {
	if err := k.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.knobs = k
	s.mu.Unlock()
	s.log.Info("pgsim knobs changed", "knobs", k)
	return nil
}

// SetOutage starts (down) or ends an outage toggled at run time. A positive
// d ends it by itself after d. Scheduled windows are not affected.
func (s *Simulator) SetOutage(down bool, d time.Duration) {
	s.mu.Lock()
	s.down = down
	s.downUntil = time.Time{}
	if down && d > 0 {
		s.downUntil = s.now().Add(d)
	}
	s.mu.Unlock()
	s.log.Info("pgsim outage toggled", "down", down, "for", d)
}

// InOutage reports whether the simulator is in an outage now, scheduled or
// toggled.
func (s *Simulator) InOutage() bool {
	now := s.now()
	s.mu.Lock()
	down := s.down && (s.downUntil.IsZero() || now.Before(s.downUntil))
	s.mu.Unlock()
	if down {
		return true
	}
	since := now.Sub(s.start)
	for _, w := range s.outages {
		if since >= w.Start && since < w.Start+w.Duration {
			return true
		}
	}
	return false
}

// stamp is the time recorded in the ledger: UTC, as it reads on the wire.
func (s *Simulator) stamp() time.Time { return s.now().UTC() }

// Ledger returns every charge, oldest first.
func (s *Simulator) Ledger() []Entry { return s.ledger.entries() }

// Stats returns the simulator's counters.
func (s *Simulator) Stats() Stats {
	return Stats{
		Seed:        s.seed,
		Outage:      s.InOutage(),
		Requests:    s.c.requests.Load(),
		Charges:     s.c.charges.Load(),
		Paid:        s.c.paid.Load(),
		Declined:    s.c.declined.Load(),
		Replays:     s.c.replays.Load(),
		Mismatches:  s.c.mismatches.Load(),
		Refunds:     s.c.refunds.Load(),
		Lookups:     s.c.lookups.Load(),
		NotFound:    s.c.notFound.Load(),
		Timeouts:    s.c.timeouts.Load(),
		Resets:      s.c.resets.Load(),
		Errors:      s.c.errors.Load(),
		Overloaded:  s.c.overloaded.Load(),
		OutageHits:  s.c.outage.Load(),
		InFlight:    s.inFlight.Load(),
		MaxInFlight: s.maxInFlight.Load(),
	}
}

// fault is what goes wrong with one request.
type fault int

const (
	faultNone fault = iota
	faultTimeout
	faultReset
	faultError
)

// draw is every random choice about one request, made at once under the
// lock: always the same six values, so a seed gives the same sequence of
// choices in arrival order, and the same choices to the n-th request
// whatever the knobs.
type draw struct {
	latency time.Duration
	fault   fault
	applied bool // a faulted request was applied anyway
	decline bool
	reason  string
}

var declineReasons = []string{"insufficient_funds", "card_declined", "expired_card", "suspected_fraud"}

func (s *Simulator) draw(k Knobs) draw {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := draw{latency: k.Latency.Sample(s.rand)}
	switch u := s.rand.Float64(); {
	case u < k.TimeoutRate:
		d.fault = faultTimeout
	case u < k.TimeoutRate+k.ResetRate:
		d.fault = faultReset
	case u < k.TimeoutRate+k.ResetRate+k.ErrorRate:
		d.fault = faultError
	}
	d.applied = s.rand.Float64() < k.FaultApplied
	d.decline = s.rand.Float64() < k.DeclineRate
	d.reason = declineReasons[int(s.rand.Float64()*float64(len(declineReasons)))]
	return d
}

// v1 wraps a protocol handler with what every /v1 request meets first: the
// API key, the concurrency cap and outages.
func (s *Simulator) v1(h func(http.ResponseWriter, *http.Request, Knobs)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.c.requests.Add(1)
		if s.apiKey != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.apiKey)) != 1 {
			writeProblem(w, http.StatusUnauthorized, dibs.EUNAUTHORIZED, "missing or wrong API key")
			return
		}
		k := s.Knobs()
		if !s.admit(int64(k.MaxConcurrency)) {
			s.c.overloaded.Add(1)
			w.Header().Set("Retry-After", "1")
			writeProblem(w, http.StatusServiceUnavailable, dibs.EOVERLOADED, "too many requests in progress; nothing was processed")
			return
		}
		defer s.inFlight.Add(-1)
		if s.InOutage() {
			s.c.outage.Add(1)
			switch k.OutageMode {
			case OutageTimeout:
				s.hang(w, r, k.Hang)
			case OutageReset:
				s.c.resets.Add(1)
				s.reset(w)
			default: // OutageUnavailable or unset
				w.Header().Set("Retry-After", "1")
				writeProblem(w, http.StatusServiceUnavailable, dibs.EUNAVAILABLE, "gateway outage; nothing was processed")
			}
			return
		}
		h(w, r, k)
	}
}

// admit counts a request in flight unless that would pass limit (0: none).
func (s *Simulator) admit(limit int64) bool {
	for {
		n := s.inFlight.Load()
		if limit > 0 && n >= limit {
			return false
		}
		if !s.inFlight.CompareAndSwap(n, n+1) {
			continue
		}
		for {
			m := s.maxInFlight.Load()
			if n+1 <= m || s.maxInFlight.CompareAndSwap(m, n+1) {
				return true
			}
		}
	}
}

// maxBody bounds request bodies.
const maxBody = 64 << 10

func (s *Simulator) handleCharge(w http.ResponseWriter, r *http.Request, k Knobs) {
	key := r.Header.Get("Idempotency-Key")
	if !payment.ValidKey(key) {
		writeProblem(w, http.StatusBadRequest, dibs.EINVALID, "Idempotency-Key header missing or malformed")
		return
	}
	var req payment.ChargeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeProblem(w, http.StatusBadRequest, dibs.EINVALID, "body: "+err.Error())
		return
	}
	if err := req.Validate(); err != nil {
		writeProblem(w, http.StatusBadRequest, dibs.EINVALID, err.Error())
		return
	}

	// The charge is applied on arrival, before the latency: a client that
	// gives up waiting does not undo it, as with a real gateway.
	d := s.draw(k)
	var (
		ch  payment.Charge
		err error
	)
	if d.fault == faultNone || d.applied {
		var created bool
		ch, created, err = s.ledger.charge(key, req, d.decline, d.reason, s.stamp())
		switch {
		case err != nil:
			s.c.mismatches.Add(1)
		case !created:
			s.c.replays.Add(1)
		default:
			s.c.charges.Add(1)
			if ch.Status == payment.StatusPaid {
				s.c.paid.Add(1)
			} else {
				s.c.declined.Add(1)
			}
		}
	}
	if !s.answerFault(w, r, k, d) {
		return
	}
	if err != nil {
		writeProblem(w, http.StatusUnprocessableEntity, dibs.ECONFLICT, "Idempotency-Key already used with a different request")
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

func (s *Simulator) handleRefund(w http.ResponseWriter, r *http.Request, k Knobs) {
	key, refundKey := r.PathValue("key"), r.Header.Get("Idempotency-Key")
	if refundKey != "" && !payment.ValidKey(refundKey) {
		writeProblem(w, http.StatusBadRequest, dibs.EINVALID, "Idempotency-Key header malformed")
		return
	}
	d := s.draw(k)
	var (
		ch  payment.Charge
		err error
	)
	if d.fault == faultNone || d.applied {
		var refunded bool
		ch, refunded, err = s.ledger.refund(key, refundKey, s.stamp())
		if refunded {
			s.c.refunds.Add(1)
		} else if errors.Is(err, errNoCharge) {
			s.c.notFound.Add(1)
		}
	}
	if !s.answerFault(w, r, k, d) {
		return
	}
	switch {
	case errors.Is(err, errNoCharge):
		writeProblem(w, http.StatusNotFound, dibs.ENOTFOUND, "no charge under this key")
	case err != nil:
		writeProblem(w, http.StatusConflict, dibs.ECONFLICT, err.Error())
	default:
		writeJSON(w, http.StatusOK, ch)
	}
}

// answerFault waits the request's latency and plays its fault, if any. It
// reports whether the handler should go on to answer.
func (s *Simulator) answerFault(w http.ResponseWriter, r *http.Request, k Knobs, d draw) bool {
	if d.fault == faultTimeout {
		s.c.timeouts.Add(1)
		s.hang(w, r, k.Hang)
		return false
	}
	if !s.wait(w, r, d.latency) {
		return false
	}
	switch d.fault {
	case faultReset:
		s.c.resets.Add(1)
		s.reset(w)
		return false
	case faultError:
		s.c.errors.Add(1)
		writeProblem(w, http.StatusInternalServerError, dibs.EINTERNAL, "simulated gateway error")
		return false
	}
	return true
}

func (s *Simulator) handleLookup(w http.ResponseWriter, r *http.Request, k Knobs) {
	s.c.lookups.Add(1)
	d := s.draw(k)
	if !s.wait(w, r, d.latency) {
		return
	}
	ch, ok := s.ledger.get(r.PathValue("key"))
	if !ok {
		s.c.notFound.Add(1)
		writeProblem(w, http.StatusNotFound, dibs.ENOTFOUND, "no charge under this key")
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

// wait holds the request for d. It reports false if the client left or the
// simulator closed (the connection is then dropped).
func (s *Simulator) wait(w http.ResponseWriter, r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-s.closed:
		s.reset(w)
		return false
	}
}

// hang holds the request for d, then answers 504 like a gateway whose own
// back end timed out. The outcome stays unknown to the client either way.
func (s *Simulator) hang(w http.ResponseWriter, r *http.Request, d time.Duration) {
	if s.wait(w, r, d) {
		writeProblem(w, http.StatusGatewayTimeout, dibs.EINTERNAL, "gateway timed out")
	}
}

// reset drops the connection with a TCP RST and no answer.
func (s *Simulator) reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): let net/http drop the stream.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST rather than FIN
	}
	_ = conn.Close()
}

func (s *Simulator) handleLedger(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Ledger())
}

func (s *Simulator) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Simulator) handleKnobs(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Knobs())
}

// handleSetKnobs changes the knobs named in the body; the others stay.
func (s *Simulator) handleSetKnobs(w http.ResponseWriter, r *http.Request) {
	k := s.Knobs()
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&k); err != nil {
		writeProblem(w, http.StatusBadRequest, dibs.EINVALID, "body: "+err.Error())
		return
	}
	if err := s.SetKnobs(k); err != nil {
		writeProblem(w, http.StatusBadRequest, dibs.ErrorCode(err), dibs.ErrorMessage(err))
		return
	}
	writeJSON(w, http.StatusOK, s.Knobs())
}

// outageRequest is the body of POST /admin/outage.
type outageRequest struct {
	Down bool   `json:"down"`
	For  string `json:"for,omitempty"` // optional duration, e.g. "10s"
}

func (s *Simulator) handleOutage(w http.ResponseWriter, r *http.Request) {
	var req outageRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeProblem(w, http.StatusBadRequest, dibs.EINVALID, "body: "+err.Error())
		return
	}
	var d time.Duration
	if req.For != "" {
		var err error
		if d, err = time.ParseDuration(req.For); err != nil || d <= 0 {
			writeProblem(w, http.StatusBadRequest, dibs.EINVALID, "for must be a positive duration, e.g. 10s")
			return
		}
	}
	s.SetOutage(req.Down, d)
	writeJSON(w, http.StatusOK, map[string]bool{"outage": s.InOutage()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(payment.Problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	})
}
