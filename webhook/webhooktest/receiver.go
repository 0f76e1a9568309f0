// Package webhooktest is a webhook receiver for tests: an HTTP server that
// checks every delivery the way an operator's service should (signature,
// headers, body), records each event once and counts the repeats.
package webhooktest

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/webhook"
)

// Event is a delivery as the receiver recorded it.
type Event struct {
	ID        string
	Type      string
	CreatedAt time.Time
	Data      json.RawMessage // the "data" member as sent
	Received  time.Time       // when its first delivery arrived
}

// Receiver is an httptest.Server (its URL is the webhook endpoint) that
// verifies every request's signature with its secret and fails the test,
// answering 400 or 401, when a delivery is not what a receiver may expect.
// It is closed when the test ends. Its methods are safe for concurrent use.
type Receiver struct {
	*httptest.Server

	tb     testing.TB
	secret []byte

	mu         sync.Mutex
	events     []Event
	seen       map[string]bool
	duplicates int
	requests   int
	status     int  // answered instead of 200 when non-zero
	hangup     bool // close connections without an answer
	now        func() time.Time
	changed    chan struct{}
}

// NewReceiver starts a receiver that verifies signatures made with secret.
func NewReceiver(tb testing.TB, secret []byte) *Receiver {
	tb.Helper()
	r := &Receiver{
		tb:      tb,
		secret:  bytes.Clone(secret),
		seen:    make(map[string]bool),
		changed: make(chan struct{}),
		now:     time.Now,
	}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	tb.Cleanup(r.Close)
	return r
}

// SetNow sets the clock signature timestamps are checked against (within
// webhook.DefaultTolerance); the default is time.Now. A test whose Sender
// has a Config.Now of its own gives the receiver the same one.
func (r *Receiver) SetNow(now func() time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = now
}

// Down makes the receiver answer every request with 503 (down is true) or
// return to normal. Requests it refuses are not recorded.
func (r *Receiver) Down(down bool) {
	status := 0
	if down {
		status = http.StatusServiceUnavailable
	}
	r.Answer(status)
}

// Answer makes the receiver answer every request with status, unrecorded,
// e.g. 400 to see an event fail for good; 0 returns to normal.
func (r *Receiver) Answer(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
}

// Hangup makes the receiver close every connection as soon as a request
// arrives, without an answer (on is true), or return to normal.
func (r *Receiver) Hangup(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hangup = on
}

// Events returns the events received, each once, in order of arrival.
func (r *Receiver) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Count returns how many distinct events of type typ were received.
func (r *Receiver) Count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// Duplicates returns how many deliveries repeated an event already received.
func (r *Receiver) Duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.duplicates
}

// Requests returns how many requests arrived, whatever their answer.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// WaitFor waits until at least n distinct events were received and returns
// them; it fails the test if that takes longer than timeout. Call it from
// the test's goroutine.
func (r *Receiver) WaitFor(n int, timeout time.Duration) []Event {
	r.tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got, changed := len(r.events), r.changed
		r.mu.Unlock()
		if got >= n {
			return r.Events()
		}
		select {
		case <-changed:
		case <-deadline.C:
			r.tb.Fatalf("webhooktest: got %d events after %v, want %d", got, timeout, n)
			return nil
		}
	}
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests++
	status, hangup, now := r.status, r.hangup, r.now
	r.mu.Unlock()

	if hangup {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			r.tb.Errorf("webhooktest: hijack: %v", err)
			return
		}
		// Without lingering, the close is a reset rather than an orderly
		// end: the sender sees the connection cut mid-request.
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		conn.Close()
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}

	payload, err := io.ReadAll(io.LimitReader(req.Body, webhook.MaxBody+1))
	if err != nil {
		r.tb.Errorf("webhooktest: read body: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.SignatureHeader), payload, now(), 0); err != nil {
		r.tb.Errorf("webhooktest: %v (header %q)", err, req.Header.Get(webhook.SignatureHeader))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	e, problem := check(req, payload)
	if problem != "" {
		r.tb.Errorf("webhooktest: %s", problem)
		w.WriteHeader(http.StatusBadRequest)
		return
	}

	r.mu.Lock()
	if r.seen[e.ID] {
		r.duplicates++
	} else {
		r.seen[e.ID] = true
		e.Received = time.Now()
		r.events = append(r.events, e)
		close(r.changed)
		r.changed = make(chan struct{})
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// check decodes a verified delivery and returns what is wrong with it, if
// anything, from a receiver's point of view.
func check(req *http.Request, payload []byte) (Event, string) {
	var b struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		CreatedAt string          `json:"created_at"`
		Data      json.RawMessage `json:"data"`
	}
	switch {
	case req.Method != http.MethodPost:
		return Event{}, "method " + req.Method + ", want POST"
	case req.Header.Get("Content-Type") != "application/json":
		return Event{}, "Content-Type " + req.Header.Get("Content-Type") + ", want application/json"
	case req.Header.Get("User-Agent") != webhook.UserAgent:
		return Event{}, "User-Agent " + req.Header.Get("User-Agent") + ", want " + webhook.UserAgent
	case json.Unmarshal(payload, &b) != nil:
		return Event{}, "body is not a JSON object: " + string(payload)
	case b.ID == "" || b.Type == "" || len(b.Data) == 0:
		return Event{}, "body lacks id, type or data: " + string(payload)
	case req.Header.Get(webhook.IDHeader) != b.ID:
		return Event{}, webhook.IDHeader + " " + req.Header.Get(webhook.IDHeader) + " differs from the body's id " + b.ID
	case req.Header.Get(webhook.EventHeader) != b.Type:
		return Event{}, webhook.EventHeader + " " + req.Header.Get(webhook.EventHeader) + " differs from the body's type " + b.Type
	}
	at, err := time.Parse(time.RFC3339Nano, b.CreatedAt)
	if err != nil || !strings.HasSuffix(b.CreatedAt, "Z") {
		return Event{}, "created_at " + b.CreatedAt + " is not an RFC 3339 time in UTC"
	}
	return Event{ID: b.ID, Type: b.Type, CreatedAt: at, Data: b.Data}, ""
}
