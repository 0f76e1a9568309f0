package httpapi

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
)

// admissionJSON is a drop's admission on the wire. Pace is "fixed" or
// "auto" (queue mode only); MinRate and MaxRate bound an auto pace.
type admissionJSON struct {
	Mode    string `json:"mode"`
	Rate    int    `json:"rate,omitempty"`
	Order   string `json:"order,omitempty"`
	Pace    string `json:"pace,omitempty"`
	MinRate int    `json:"min_rate,omitempty"`
	MaxRate int    `json:"max_rate,omitempty"`
}

// Paces on the wire.
const (
	paceFixed = "fixed"
	paceAuto  = "auto"
)

func newAdmissionJSON(a dibs.Admission) admissionJSON {
	out := admissionJSON{Mode: a.Mode, Rate: a.Rate, Order: a.Order}
	if a.Mode == dibs.AdmissionQueue {
		out.Pace = paceFixed
		if a.Pace == dibs.PaceAuto {
			out.Pace, out.MinRate, out.MaxRate = paceAuto, a.MinRate, a.MaxRate
		}
	}
	return out
}

// admission reads an admission of a creation request.
func (a *admissionJSON) admission() (dibs.Admission, error) {
	out := dibs.Admission{Mode: a.Mode, Rate: a.Rate, Order: a.Order, MinRate: a.MinRate, MaxRate: a.MaxRate}
	switch a.Pace {
	case "", paceFixed:
		out.Pace = dibs.PaceFixed
	case paceAuto:
		out.Pace = dibs.PaceAuto
	default:
		return dibs.Admission{}, dibs.Errorf(dibs.EINVALID, "admission.pace must be %q or %q.", paceFixed, paceAuto)
	}
	return out, nil
}

// createDropRequest is the body of POST /v1/admin/drops.
type createDropRequest struct {
	ID           string         `json:"id"`
	Title        string         `json:"title"`
	Kind         dibs.Kind      `json:"kind"`
	Stock        int64          `json:"stock"`
	PerUserLimit int            `json:"per_user_limit"`
	OpensAt      *time.Time     `json:"opens_at"`
	ClosesAt     *time.Time     `json:"closes_at"`
	HoldTTL      string         `json:"hold_ttl"`
	Price        int64          `json:"price"`
	Currency     string         `json:"currency"`
	Admission    *admissionJSON `json:"admission"`
}

func (req *createDropRequest) drop() (*dibs.Drop, error) {
	d := &dibs.Drop{
		ID: req.ID, Title: req.Title, Kind: req.Kind, Stock: req.Stock, PerUserLimit: req.PerUserLimit,
		Price: req.Price, Currency: req.Currency,
	}
	if d.ID == "" {
		d.ID = "drop-" + strings.ToLower(rand.Text()[:10])
	}
	if req.OpensAt != nil {
		d.OpensAt = req.OpensAt.UTC().Truncate(time.Microsecond)
	}
	if req.ClosesAt != nil {
		d.ClosesAt = req.ClosesAt.UTC().Truncate(time.Microsecond)
	}
	if req.HoldTTL != "" {
		ttl, err := time.ParseDuration(req.HoldTTL)
		if err != nil {
			return nil, dibs.Errorf(dibs.EINVALID, "hold_ttl must be a duration such as \"10m\" or \"90s\".")
		}
		d.HoldTTL = ttl
	}
	if a := req.Admission; a != nil {
		adm, err := a.admission()
		if err != nil {
			return nil, err
		}
		d.Admission = adm
	}
	if d.PerUserLimit < 0 {
		return nil, dibs.Errorf(dibs.EINVALID, "per_user_limit must be between 1 and %d", dibs.MaxPerUserLimit)
	}
	return d, nil
}

// dropJSON is a drop as operators see it.
type dropJSON struct {
	ID           string        `json:"id"`
	Title        string        `json:"title"`
	Kind         dibs.Kind     `json:"kind"`
	Stock        int64         `json:"stock"`
	PerUserLimit int           `json:"per_user_limit"`
	OpensAt      time.Time     `json:"opens_at"`
	ClosesAt     *time.Time    `json:"closes_at,omitempty"`
	HoldTTL      string        `json:"hold_ttl,omitempty"`
	Price        int64         `json:"price,omitempty"`
	Currency     string        `json:"currency,omitempty"`
	Admission    admissionJSON `json:"admission"`
	Status       dibs.Status   `json:"status"`
	State        dibs.State    `json:"state"`
	Remaining    int64         `json:"remaining"`
	CreatedAt    time.Time     `json:"created_at"`
	UpdatedAt    time.Time     `json:"updated_at"`
}

func newDropJSON(v dibs.DropView) dropJSON {
	d := v.Drop
	out := dropJSON{
		ID: d.ID, Title: d.Title, Kind: d.Kind, Stock: d.Stock, PerUserLimit: d.PerUserLimit,
		OpensAt: d.OpensAt, ClosesAt: timePtr(d.ClosesAt), Price: d.Price, Currency: d.Currency,
		Admission: newAdmissionJSON(d.Admission),
		Status:    d.Status, State: v.State, Remaining: v.Remaining, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
	if d.HoldTTL > 0 {
		out.HoldTTL = d.HoldTTL.String()
	}
	return out
}

// dropStatsJSON is a drop with its live numbers: remaining from the gate,
// claims by state from the record, requests by outcome from this node.
type dropStatsJSON struct {
	dropJSON
	Held        int64            `json:"held"`
	Confirmed   int64            `json:"confirmed"`
	Paid        int64            `json:"paid"`
	Released    int64            `json:"released"`
	Expired     int64            `json:"expired"`
	ClaimsTotal int64            `json:"claims_total"`
	Outcomes    map[string]int64 `json:"outcomes"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Server) createDrop(w http.ResponseWriter, r *http.Request) error {
	var req createDropRequest
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	d, err := req.drop()
	if err != nil {
		return err
	}
	if err := s.drops.CreateDrop(r.Context(), d); err != nil {
		return err
	}
	s.log.Info("drop created", "drop", d.ID, "kind", d.Kind, "stock", d.Stock, "opens_at", d.OpensAt, "by", adminLabel(r))
	s.logAction(r, dibs.ActionDropCreated, d.ID, map[string]any{"kind": d.Kind, "stock": d.Stock, "admission": d.Admission.Mode})
	v, err := s.drops.View(r.Context(), d.ID)
	if err != nil {
		// Recorded, but the gate has not taken it yet: a new drop has
		// all of its stock.
		v = dibs.DropView{Drop: d, State: d.StateAt(d.Status, time.Now(), d.Stock), Remaining: d.Stock}
	}
	w.Header().Set("Location", "/v1/admin/drops/"+d.ID)
	writeJSON(w, http.StatusCreated, newDropJSON(v))
	return nil
}

func (s *Server) listDrops(w http.ResponseWriter, r *http.Request) error {
	out := []dropJSON{}
	for _, d := range s.drops.Drops() {
		v, err := s.drops.View(r.Context(), d.ID)
		if err != nil {
			return err
		}
		out = append(out, newDropJSON(v))
	}
	writeJSON(w, http.StatusOK, map[string]any{"drops": out})
	return nil
}

func (s *Server) dropStats(w http.ResponseWriter, r *http.Request) error {
	id, err := pathDropID(r)
	if err != nil {
		return err
	}
	st, err := s.drops.Stats(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dropStatsJSON{
		dropJSON: newDropJSON(st.DropView),
		Held:     st.Claims.Held, Confirmed: st.Claims.Confirmed, Paid: st.Claims.Paid,
		Released: st.Claims.Released, Expired: st.Claims.Expired,
		ClaimsTotal: st.ClaimsTotal, Outcomes: st.Outcomes,
	})
	return nil
}

// statusActions are the kinds of the actions that set a drop's status.
var statusActions = map[dibs.Status]string{
	dibs.StatusPaused: dibs.ActionDropPaused,
	dibs.StatusActive: dibs.ActionDropResumed,
	dibs.StatusClosed: dibs.ActionDropClosed,
}

func (s *Server) setStatus(status dibs.Status) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathDropID(r)
		if err != nil {
			return err
		}
		if err := s.drops.SetStatus(r.Context(), id, status); err != nil {
			return err
		}
		s.log.Info("drop status changed", "drop", id, "status", status, "by", adminLabel(r))
		s.logAction(r, statusActions[status], id, nil)
		v, err := s.drops.View(r.Context(), id)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, newDropJSON(v))
		return nil
	}
}

// publicDropJSON is what anyone may see of a drop.
type publicDropJSON struct {
	ID        string     `json:"id"`
	Title     string     `json:"title"`
	Kind      dibs.Kind  `json:"kind"`
	State     dibs.State `json:"state"`
	OpensAt   time.Time  `json:"opens_at"`
	ClosesAt  *time.Time `json:"closes_at,omitempty"`
	Stock     int64      `json:"stock"`
	Remaining int64      `json:"remaining"`
	Price     int64      `json:"price,omitempty"`
	Currency  string     `json:"currency,omitempty"`
	Admission string     `json:"admission"`
}

func (s *Server) publicDrop(w http.ResponseWriter, r *http.Request) error {
	id, err := pathDropID(r)
	if err != nil {
		return err
	}
	v, err := s.drops.View(r.Context(), id)
	if err != nil {
		return err
	}
	d := v.Drop
	out := publicDropJSON{
		ID: d.ID, Title: d.Title, Kind: d.Kind, State: v.State, OpensAt: d.OpensAt, ClosesAt: timePtr(d.ClosesAt),
		Stock: d.Stock, Remaining: v.Remaining, Price: d.Price, Currency: d.Currency, Admission: d.Admission.Mode,
	}
	w.Header().Set("Cache-Control", "public, max-age=1")
	if q := s.publicQueue(r, d); q != nil {
		writeJSON(w, http.StatusOK, queuedDropJSON{out, q})
		return nil
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// winnerJSON is one line of the winners export.
type winnerJSON struct {
	ClaimID    string          `json:"claim_id"`
	UserID     string          `json:"user_id"`
	Slot       int64           `json:"slot"`
	State      dibs.ClaimState `json:"state"`
	CreatedAt  time.Time       `json:"created_at"`
	CouponCode string          `json:"coupon_code,omitempty"`
}

// winners streams the drop's active claims in slot order: NDJSON, or CSV
// for Accept: text/csv. The export can be long, so it has no write deadline.
func (s *Server) winners(w http.ResponseWriter, r *http.Request) error {
	id, err := pathDropID(r)
	if err != nil {
		return err
	}
	if _, err := s.drops.Drop(id); err != nil {
		return err
	}
	http.NewResponseController(w).SetWriteDeadline(time.Time{})
	buf := bufio.NewWriterSize(w, 32<<10)
	var write func(*dibs.Claim) error
	if strings.Contains(r.Header.Get("Accept"), "text/csv") {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		cw := csv.NewWriter(buf)
		cw.Write([]string{"claim_id", "user_id", "slot", "state", "created_at", "coupon_code"})
		write = func(c *dibs.Claim) error {
			return cw.Write([]string{csvCell(c.ID), csvCell(c.UserID), strconv.FormatInt(c.Slot, 10), string(c.State), c.CreatedAt.Format(time.RFC3339Nano), csvCell(c.CouponCode)})
		}
		defer cw.Flush()
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(buf)
		write = func(c *dibs.Claim) error {
			return enc.Encode(winnerJSON{ClaimID: c.ID, UserID: c.UserID, Slot: c.Slot, State: c.State, CreatedAt: c.CreatedAt, CouponCode: c.CouponCode})
		}
	}
	defer buf.Flush()
	w.WriteHeader(http.StatusOK)
	if err := s.drops.Winners(r.Context(), id, write); err != nil && r.Context().Err() == nil {
		// The status is out; all we can do is stop and say why in the log.
		s.log.Error("winners export cut short", "drop", id, "err", err)
	}
	return nil
}

// csvCell neutralises a cell a spreadsheet would take for a formula (one
// starting with =, +, -, @, a tab or a carriage return) by a leading single
// quote, as OWASP advises against CSV injection. User ids come from
// passports, so they may start with anything.
func csvCell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.drops.Ready(ctx); err != nil {
		s.log.Warn("not ready", "err", err)
		w.Header().Set("Retry-After", "1")
		// The client learns which dependency is down ("store" or "gate"),
		// the log why: causes can name hosts and users.
		dep, _, _ := strings.Cut(err.Error(), ":")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "detail": dep + " does not answer"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
