package httpapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/dibs-io/dibs"
)

// eventStream starts a text/event-stream answer and returns its writer:
// each call writes b, flushes it within streamWrite, and reports whether
// the client still reads. Proxies are asked to pass events on at once.
func eventStream(w http.ResponseWriter) func(b []byte) bool {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(streamWrite))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
}

// Streams: how long one lives at most (the client reconnects), how often
// an idle one is pinged, how often a changing position is sent, and how
// long one write may take before the client is given up.
const (
	streamLifetime  = 10 * time.Minute
	streamHeartbeat = 15 * time.Second
	streamEvery     = time.Second
	streamWrite     = 10 * time.Second
)

// StreamsPerTicket bounds the event streams one ticket may have open on a
// node (the page open in two tabs, a reconnect overlapping the stream it
// replaces). A ticket's second stream is let in only while fewer than half
// of the node's streams (--max-streams) are open: the first stream of every
// ticket comes before anyone's second. A refused stream is answered 429
// telling the client to poll.
const StreamsPerTicket = 2

// streamCount counts the open event streams, per ticket and in all.
type streamCount struct {
	max      int // the node's streams
	mu       sync.Mutex
	open     int
	byTicket map[streamKey]int
}

type streamKey struct {
	drop   string
	number uint64
}

func newStreamCount(max int) *streamCount {
	return &streamCount{max: max, byTicket: make(map[streamKey]int)}
}

// take counts a stream of ticket k and returns its release, or an
// ETHROTTLED error if k may not have another.
func (c *streamCount) take(k streamKey) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.byTicket[k]
	switch {
	case n >= StreamsPerTicket:
		return nil, dibs.Errorf(dibs.ETHROTTLED, "This ticket has %d event streams open already; close one, or poll GET /v1/drops/%s/queue/{ticket} instead, as poll_after_ms says.", n, k.drop)
	case n > 0 && 2*c.open >= c.max:
		return nil, dibs.Errorf(dibs.ETHROTTLED, "This ticket has an event stream open already and this server's streams are shared among tickets; poll GET /v1/drops/%s/queue/{ticket} instead, as poll_after_ms says.", k.drop)
	}
	c.byTicket[k] = n + 1
	c.open++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.open--
		if c.byTicket[k]--; c.byTicket[k] == 0 {
			delete(c.byTicket, k)
		}
	}, nil
}

// PermutationName names the shuffle the queue info's seed keys (room.Position).
const PermutationName = "feistel4-sha256-v1"

// ticketJSON is a waiting-room ticket's status on the wire.
type ticketJSON struct {
	Ticket     string          `json:"ticket,omitempty"` // on joining
	Number     uint64          `json:"number"`
	State      dibs.QueueState `json:"state"`
	Position   *uint64         `json:"position"`    // null while not known (a shuffle not drawn yet) or not waiting
	Ahead      *uint64         `json:"ahead"`       // people before you
	ETASeconds *float64        `json:"eta_seconds"` // until admission; null when unknown
	// PollAfterMS is when to ask again; 0 once the wait is over.
	PollAfterMS        int64      `json:"poll_after_ms"`
	Admission          string     `json:"admission,omitempty"`
	AdmissionExpiresAt *time.Time `json:"admission_expires_at,omitempty"`
	OpensAt            time.Time  `json:"opens_at"`
	Joined             uint64     `json:"joined"`
	Remaining          int64      `json:"remaining"`
	ServerTime         time.Time  `json:"server_time"`
}

func newTicketJSON(d *dibs.Drop, st dibs.QueueStatus) ticketJSON {
	out := ticketJSON{
		Ticket: st.Ticket, Number: st.Number, State: st.State, PollAfterMS: st.PollAfter.Milliseconds(),
		Admission: st.Admission, AdmissionExpiresAt: timePtr(st.Expires),
		OpensAt: d.OpensAt, Joined: st.Joined, Remaining: max(st.Remaining, 0), ServerTime: st.Now.UTC(),
	}
	switch {
	case st.State == dibs.QueueAdmitted:
		var zero uint64
		out.Position, out.Ahead = &zero, &zero
	case st.State == dibs.QueueWaiting && st.Position > 0:
		pos, ahead := st.Position, st.Ahead()
		out.Position, out.Ahead = &pos, &ahead
	}
	if st.ETA >= 0 && st.ETA < math.MaxInt64 {
		eta := math.Round(st.ETA.Seconds()*10) / 10
		out.ETASeconds = &eta
	}
	return out
}

// queueInfoJSON is a room's public state: what an auditor needs.
type queueInfoJSON struct {
	Order       string  `json:"order"`
	Rate        int     `json:"rate"`
	Opened      bool    `json:"opened"`
	PreQueue    *uint64 `json:"prequeue,omitempty"` // tickets 1..prequeue were drawn (or kept in order); set once opened
	Joined      uint64  `json:"joined"`
	Serving     uint64  `json:"serving"`
	SoldOut     bool    `json:"sold_out"`
	SeedSHA256  string  `json:"seed_sha256"`    // the commitment, public from the start
	Seed        string  `json:"seed,omitempty"` // hex, revealed at the opening
	Permutation string  `json:"permutation"`
	Measured    float64 `json:"admitted_per_second"`
}

func newQueueInfoJSON(in dibs.QueueInfo) *queueInfoJSON {
	out := &queueInfoJSON{
		Order: in.Order, Rate: in.Rate, Opened: in.Opened, Joined: in.Joined, Serving: in.Serving,
		SoldOut: in.SoldOut, SeedSHA256: in.SeedDigest, Seed: in.Seed, Permutation: PermutationName,
		Measured: math.Round(in.Measured*100) / 100,
	}
	if in.Opened {
		out.PreQueue = &in.PreQueue
	}
	return out
}

// queuedDropJSON is the public view of a queued drop: the drop and its
// room's public state.
type queuedDropJSON struct {
	publicDropJSON
	Queue *queueInfoJSON `json:"queue"`
}

// publicQueue is the room's public state for the drop view, or nil if d
// has no room here or it cannot be read now (the view goes without it).
func (s *Server) publicQueue(r *http.Request, d *dibs.Drop) *queueInfoJSON {
	if d.Admission.Mode != dibs.AdmissionQueue || s.queue == nil {
		return nil
	}
	in, err := s.queue.Info(r.Context(), d)
	if err != nil {
		return nil
	}
	return newQueueInfoJSON(in)
}

// queuedDrop returns the path's drop if it has a waiting room here.
func (s *Server) queuedDrop(r *http.Request) (*dibs.Drop, error) {
	id, err := pathDropID(r)
	if err != nil {
		return nil, err
	}
	d, err := s.drops.Drop(id)
	if err != nil {
		return nil, err
	}
	switch {
	case d.Admission.Mode != dibs.AdmissionQueue:
		return nil, dibs.Errorf(dibs.ECONFLICT, "Drop %s has no waiting room: claim it directly.", id)
	case s.queue == nil:
		return nil, dibs.Errorf(dibs.EUNAVAILABLE, "This node runs no waiting rooms.")
	}
	return d, nil
}

// joinQueue answers 201 with a new ticket, or 200 with the ticket of a
// user who had joined. Joins are limited per client address; only joins
// with a valid passport for a queued drop count, so that junk sent from a
// shared address (an office, a carrier's NAT) does not use up its people's
// joins. Everything checked before the limit is local and cheap.
func (s *Server) joinQueue(w http.ResponseWriter, r *http.Request) error {
	d, err := s.queuedDrop(r)
	if err != nil {
		return err
	}
	user, err := s.user(r)
	if err != nil {
		return err
	}
	if err := s.switchedOff(dibs.SwitchQueueJoins, "joining waiting rooms"); err != nil {
		return err
	}
	if wait, ok := s.joins.allow(clientKey(r, s.ipHeader), time.Now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return dibs.Errorf(dibs.ETHROTTLED, "Too many joins from your address; retry shortly.")
	}
	st, err := s.queue.Join(r.Context(), d, user)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if !st.Existing {
		status = http.StatusCreated
	}
	w.Header().Set("Location", "/v1/drops/"+d.ID+"/queue/"+st.Ticket)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, newTicketJSON(d, st))
	return nil
}

// ticket verifies the path's ticket for the request's user.
func (s *Server) ticket(r *http.Request) (*dibs.Drop, dibs.HeldTicket, error) {
	d, err := s.queuedDrop(r)
	if err != nil {
		return nil, dibs.HeldTicket{}, err
	}
	user, err := s.user(r)
	if err != nil {
		return nil, dibs.HeldTicket{}, err
	}
	t, err := s.queue.Verify(r.Context(), d, user, r.PathValue("ticket"))
	return d, t, err
}

// queueStatus answers where a ticket stands.
func (s *Server) queueStatus(w http.ResponseWriter, r *http.Request) error {
	d, t, err := s.ticket(r)
	if err != nil {
		return err
	}
	st, err := s.queue.StatusOf(r.Context(), d, t)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, newTicketJSON(d, st))
	return nil
}

// queueInfo answers a room's public state, the seed included once it has
// opened.
func (s *Server) queueInfo(w http.ResponseWriter, r *http.Request) error {
	d, err := s.queuedDrop(r)
	if err != nil {
		return err
	}
	in, err := s.queue.Info(r.Context(), d)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "public, max-age=1")
	writeJSON(w, http.StatusOK, newQueueInfoJSON(in))
	return nil
}

// queueEvents streams a ticket's status as server-sent events ("status"
// events with the JSON of GET .../queue/{ticket}) until the wait is over
// (admitted, sold out, closed, expired), the stream has lived
// streamLifetime, or the server shuts down. It wakes when this node's view
// of the room changes, once per tick for every stream together: no stream
// reads the backend, and the ticket's signature is verified once, when
// the stream opens. The state is sent at once when it changes, a moving
// position at most once a second. A ticket has at most StreamsPerTicket
// streams open.
func (s *Server) queueEvents(w http.ResponseWriter, r *http.Request) error {
	d, t, err := s.ticket(r)
	if err != nil {
		return err
	}
	release, err := s.streams.take(streamKey{d.ID, t.Number})
	if err != nil {
		return err
	}
	defer release()
	st, err := s.queue.StatusOf(r.Context(), d, t)
	if err != nil {
		return err
	}
	send := eventStream(w)
	event := func(st dibs.QueueStatus) bool {
		data, err := json.Marshal(newTicketJSON(d, st))
		if err != nil {
			return false
		}
		return send(append(append([]byte("event: status\ndata: "), data...), "\n\n"...))
	}
	if !send([]byte("retry: 2000\n\n")) || !event(st) {
		return nil
	}
	last, sentAt := st, time.Now()
	heartbeat := time.NewTicker(streamHeartbeat)
	defer heartbeat.Stop()
	end := time.NewTimer(streamLifetime)
	defer end.Stop()
	for st.State == dibs.QueueWaiting {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.closing:
			return nil
		case <-end.C:
			return nil
		case <-heartbeat.C:
			if !send([]byte(": ping\n\n")) {
				return nil
			}
			continue
		case <-s.queue.Changed(d.ID):
		}
		if cur, err := s.drops.Drop(d.ID); err == nil {
			d = cur // an operator may have closed or paused it
		}
		if st, err = s.queue.StatusOf(r.Context(), d, t); err != nil {
			return nil // the client reconnects, and hears why from GET
		}
		moved := st.Position != last.Position && time.Since(sentAt) >= streamEvery
		if st.State != last.State || moved {
			if !event(st) {
				return nil
			}
			last, sentAt = st, time.Now()
		}
	}
	return nil
}
