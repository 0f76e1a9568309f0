package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// ClaimData is the "data" of the events about a claim, which every event
// type of this version is. Raw holds the member as received, for members
// added later that ClaimData does not know yet.
type ClaimData struct {
	ClaimID       string     `json:"claim_id"`
	DropID        string     `json:"drop_id"`
	UserID        string     `json:"user_id"`
	Slot          int64      `json:"slot"`
	State         string     `json:"state"`
	CouponCode    string     `json:"coupon_code,omitempty"`
	HoldExpiresAt *time.Time `json:"hold_expires_at,omitempty"`

	Raw json.RawMessage `json:"-"`
}

// Dedup remembers the events a receiver has handled, so that a repeated
// delivery is answered 200 without handling it again. Plug a table with a
// unique key on the event id to share it between instances of the main
// service and across restarts; NewMemoryDedup keeps it in one process.
type Dedup interface {
	// Seen reports whether Done was called for id.
	Seen(ctx context.Context, id string) (bool, error)
	// Done records that id was handled.
	Done(ctx context.Context, id string) error
}

// DefaultDedupSize is how many event ids NewHandler's default Dedup keeps.
const DefaultDedupSize = 10_000

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	// Secret is DIBS_WEBHOOK_SECRET. Required.
	Secret []byte
	// PreviousSecret, while the secret is being rotated, is also accepted.
	PreviousSecret []byte
	// Tolerance is how far a signature's timestamp may be from now;
	// default DefaultTolerance.
	Tolerance time.Duration
	// Dedup drops repeated deliveries; default NewMemoryDedup(DefaultDedupSize).
	Dedup Dedup
	// Now tells the time signatures are checked against; default time.Now.
	Now func() time.Time
	// Logger gets the deliveries refused and the handler's failures; none
	// if nil.
	Logger *slog.Logger
}

// Handler receives dibs's webhooks for the main service: it checks the
// signature and its timestamp, drops repeats by event id, and hands each
// new event to a function of the team's. Mount it at the URL given to dibs
// as --webhook-url. Safe for concurrent use.
//
// Answers, as dibs reads them (docs/webhooks.md):
//   - 200: handled, or a repeat of an event handled before;
//   - 400 (bad body, stale or malformed signature header) and 401 (no
//     signature matches): refused for good, not sent again;
//   - 405: not a POST; 413: a body over MaxBody;
//   - 500: the function returned an error, or the Dedup failed; dibs
//     sends the event again later;
//   - 503 with Retry-After: the same event is being handled right now.
type Handler struct {
	cfg    HandlerConfig
	handle func(context.Context, Event) error

	mu       sync.Mutex
	inFlight map[string]bool
}

// NewHandler returns a Handler that calls handle once per new event, with
// the request's context. Event.Data is a ClaimData. A non-nil error from
// handle answers 500, so dibs sends the event again: handle must be safe
// to call again for an event whose handling failed halfway.
func NewHandler(cfg HandlerConfig, handle func(context.Context, Event) error) (*Handler, error) {
	if len(cfg.Secret) == 0 {
		return nil, ErrNoSecret
	}
	if handle == nil {
		return nil, errors.New("webhook: NewHandler needs a function")
	}
	if cfg.Tolerance <= 0 {
		cfg.Tolerance = DefaultTolerance
	}
	if cfg.Dedup == nil {
		cfg.Dedup = NewMemoryDedup(DefaultDedupSize)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, handle: handle, inFlight: make(map[string]bool)}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	if err := h.verify(r.Header.Get(SignatureHeader), body); err != nil {
		h.cfg.Logger.Warn("webhook refused", "err", err, "id", r.Header.Get(IDHeader))
		status := http.StatusBadRequest
		if errors.Is(err, ErrNoMatch) {
			status = http.StatusUnauthorized
		}
		http.Error(w, err.Error(), status)
		return
	}
	e, err := decodeEvent(body)
	if err == nil && r.Header.Get(IDHeader) != "" && r.Header.Get(IDHeader) != e.ID {
		err = fmt.Errorf("%s %q is not the body's id %q", IDHeader, r.Header.Get(IDHeader), e.ID)
	}
	if err != nil {
		h.cfg.Logger.Warn("webhook refused", "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}

	ctx := r.Context()
	if seen, err := h.cfg.Dedup.Seen(ctx, e.ID); err != nil {
		h.cfg.Logger.Error("webhook dedup failed", "id", e.ID, "err", err)
		http.Error(w, "dedup failed", http.StatusInternalServerError)
		return
	} else if seen {
		w.WriteHeader(http.StatusOK)
		return
	}
	if !h.begin(e.ID) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the event is being handled", http.StatusServiceUnavailable)
		return
	}
	defer h.end(e.ID)
	if err := h.handle(ctx, e); err != nil {
		h.cfg.Logger.Error("webhook handler failed", "id", e.ID, "type", e.Type, "err", err)
		http.Error(w, "handler failed", http.StatusInternalServerError)
		return
	}
	if err := h.cfg.Dedup.Done(ctx, e.ID); err != nil {
		// Handled: a 5xx would have it handled twice. A repeat may come if
		// this answer is lost, and would be handled again.
		h.cfg.Logger.Error("webhook dedup failed to record", "id", e.ID, "err", err)
	}
	w.WriteHeader(http.StatusOK)
}

// verify checks the signature under the secret, then the previous one.
func (h *Handler) verify(header string, body []byte) error {
	now := h.cfg.Now()
	err := Verify(h.cfg.Secret, header, body, now, h.cfg.Tolerance)
	if errors.Is(err, ErrNoMatch) && len(h.cfg.PreviousSecret) > 0 {
		err = Verify(h.cfg.PreviousSecret, header, body, now, h.cfg.Tolerance)
	}
	return err
}

func (h *Handler) begin(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inFlight[id] {
		return false
	}
	h.inFlight[id] = true
	return true
}

func (h *Handler) end(id string) {
	h.mu.Lock()
	delete(h.inFlight, id)
	h.mu.Unlock()
}

// decodeEvent reads a delivery's body into an Event whose Data is a
// ClaimData.
func decodeEvent(body []byte) (Event, error) {
	var b struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		CreatedAt time.Time       `json:"created_at"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return Event{}, fmt.Errorf("body: %w", err)
	}
	if !headerToken(b.ID) || !headerToken(b.Type) || b.CreatedAt.IsZero() {
		return Event{}, errors.New("body: id, type and created_at are required")
	}
	var d ClaimData
	if len(b.Data) > 0 {
		if err := json.Unmarshal(b.Data, &d); err != nil {
			return Event{}, fmt.Errorf("body: data: %w", err)
		}
		d.Raw = b.Data
	}
	return Event{ID: b.ID, Type: b.Type, Time: b.CreatedAt, Data: d}, nil
}

// MemoryDedup is a Dedup in memory that remembers the last ids it was
// told are done, up to its size, forgetting the oldest first. Its memory
// is bounded; it forgets on restart and is not shared between processes.
// Safe for concurrent use.
type MemoryDedup struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string
	next int
}

var _ Dedup = (*MemoryDedup)(nil)

// NewMemoryDedup returns a MemoryDedup of size ids (at least 1).
func NewMemoryDedup(size int) *MemoryDedup {
	size = max(size, 1)
	return &MemoryDedup{ids: make(map[string]struct{}, size), ring: make([]string, size)}
}

// Seen implements Dedup.
func (m *MemoryDedup) Seen(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.ids[id]
	return ok, nil
}

// Done implements Dedup.
func (m *MemoryDedup) Done(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.ids[id]; ok {
		return nil
	}
	if old := m.ring[m.next]; old != "" {
		delete(m.ids, old)
	}
	m.ring[m.next] = id
	m.ids[id] = struct{}{}
	m.next = (m.next + 1) % len(m.ring)
	return nil
}
