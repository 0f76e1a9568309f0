package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
)

// actionTimeout bounds the append of an action to the log, which runs
// after the action happened, whether or not its client is still there.
const actionTimeout = 5 * time.Second

// logAction appends what the request's operator did to the action log.
// The action happened already: a log that fails is logged here, and the
// operator still gets the action's answer.
func (s *Server) logAction(r *http.Request, kind, dropID string, detail any) {
	if s.actions == nil {
		return
	}
	a := dibs.Action{At: time.Now().UTC(), Actor: adminLabel(r), Kind: kind, DropID: dropID}
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			s.log.Error("action not logged", "kind", kind, "drop", dropID, "err", err)
			return
		}
		a.Detail = b
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), actionTimeout)
	defer cancel()
	if err := s.actions.Append(ctx, a); err != nil {
		s.log.Error("action not logged", "kind", kind, "drop", dropID, "actor", a.Actor, "err", err)
	}
}

// getSwitches answers the state of every switch.
func (s *Server) getSwitches(w http.ResponseWriter, r *http.Request) error {
	if s.switches == nil {
		return dibs.Errorf(dibs.ENOTFOUND, "This server has no switches.")
	}
	writeJSON(w, http.StatusOK, s.switches.Switches())
	return nil
}

// patchSwitches flips the switches the body names, such as
// {"claims":"off"}, and answers the state of every switch. The switch
// service logs the flip under the operator's label.
func (s *Server) patchSwitches(w http.ResponseWriter, r *http.Request) error {
	if s.switches == nil {
		return dibs.Errorf(dibs.ENOTFOUND, "This server has no switches.")
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return dibs.Errorf(dibs.EINVALID, "The body could not be read.")
	}
	if err := checkNames(b); err != nil {
		return err
	}
	change, err := dibs.ParseSwitchChange(b)
	if err != nil {
		return err
	}
	sw, err := s.switches.SetSwitches(r.Context(), change, adminLabel(r))
	if err != nil {
		return err
	}
	s.log.Info("switches flipped", "switches", sw.String(), "by", adminLabel(r))
	writeJSON(w, http.StatusOK, sw)
	return nil
}

// switchedOff returns ESWITCHEDOFF if sw is off. An atomic read: the
// claim path asks it on every request.
func (s *Server) switchedOff(sw dibs.Switch, what string) error {
	if s.switches == nil || s.switches.Switches().On(sw) {
		return nil
	}
	return dibs.Errorf(dibs.ESWITCHEDOFF, "An operator has turned %s off for now; retry later.", what)
}

// dropPatch is the body of PATCH /v1/admin/drops/{id}: {"rate":N}, or
// {"rate":"auto","min":a,"max":b}.
type dropPatch struct {
	Rate json.RawMessage `json:"rate"`
	Min  *int            `json:"min"`
	Max  *int            `json:"max"`
}

// admission returns the admission p asks for, given the drop's current
// one: an auto pace starts at the current rate, clamped to its bounds.
func (p *dropPatch) admission(cur dibs.Admission) (dibs.Admission, error) {
	a := dibs.Admission{Mode: cur.Mode, Order: cur.Order}
	if len(p.Rate) == 0 {
		return a, dibs.Errorf(dibs.EINVALID, `Send {"rate":N} or {"rate":"auto","min":a,"max":b}.`)
	}
	var auto string
	if err := json.Unmarshal(p.Rate, &auto); err == nil {
		if auto != paceAuto {
			return a, dibs.Errorf(dibs.EINVALID, `rate is a number of people per second or "auto".`)
		}
		switch {
		case p.Min == nil || p.Max == nil:
			return a, dibs.Errorf(dibs.EINVALID, "An auto rate needs min and max.")
		case *p.Min < 1 || *p.Max > dibs.MaxAdmissionRate || *p.Min > *p.Max:
			return a, dibs.Errorf(dibs.EINVALID, "An auto rate needs 1 <= min <= max <= %d.", dibs.MaxAdmissionRate)
		}
		a.Pace, a.MinRate, a.MaxRate = dibs.PaceAuto, *p.Min, *p.Max
		a.Rate = min(max(cur.Rate, a.MinRate), a.MaxRate)
		return a, nil
	}
	var rate int
	if err := json.Unmarshal(p.Rate, &rate); err != nil {
		return a, dibs.Errorf(dibs.EINVALID, `rate is a number of people per second or "auto".`)
	}
	switch {
	case p.Min != nil || p.Max != nil:
		return a, dibs.Errorf(dibs.EINVALID, `min and max go with "rate":"auto" only.`)
	case rate < 1 || rate > dibs.MaxAdmissionRate:
		return a, dibs.Errorf(dibs.EINVALID, "rate must be between 1 and %d.", dibs.MaxAdmissionRate)
	}
	a.Pace, a.Rate = dibs.PaceFixed, rate
	return a, nil
}

// patchDrop changes a queued drop's pace and answers the drop.
func (s *Server) patchDrop(w http.ResponseWriter, r *http.Request) error {
	id, err := pathDropID(r)
	if err != nil {
		return err
	}
	var p dropPatch
	if err := decodeJSON(r, &p, false); err != nil {
		return err
	}
	cur, err := s.drops.Drop(id)
	if err != nil {
		return err
	}
	a, err := p.admission(cur.Admission)
	if err != nil {
		return err
	}
	if cur.Admission.Mode != dibs.AdmissionQueue {
		return dibs.Errorf(dibs.ECONFLICT, "Drop %s has no waiting room to pace.", id)
	}
	d, err := s.drops.SetAdmission(r.Context(), id, a)
	if err != nil {
		return err
	}
	aj := newAdmissionJSON(d.Admission)
	s.log.Info("drop rate changed", "drop", id, "rate", aj.Rate, "pace", aj.Pace, "by", adminLabel(r))
	s.logAction(r, dibs.ActionDropRateChanged, id, map[string]any{
		"rate": aj.Rate, "pace": aj.Pace, "min_rate": aj.MinRate, "max_rate": aj.MaxRate,
	})
	v, err := s.drops.View(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newDropJSON(v))
	return nil
}

// listActions answers the newest operator actions, newest first, as
// NDJSON.
func (s *Server) listActions(w http.ResponseWriter, r *http.Request) error {
	n := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			return dibs.Errorf(dibs.EINVALID, "limit is a number from 1 to %d.", dibs.MaxActionList)
		}
	}
	limit, err := dibs.ActionListLimit(n)
	if err != nil {
		return err
	}
	var actions []dibs.Action
	if s.actions != nil {
		if actions, err = s.actions.Actions(r.Context(), limit); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	buf := bufio.NewWriter(w)
	enc := json.NewEncoder(buf)
	for _, a := range actions {
		if err := enc.Encode(a); err != nil {
			return nil // the status is out; the client is gone
		}
	}
	buf.Flush()
	return nil
}

// LiveHeartbeat is how often the live stream sends a comment when it has
// nothing else to send, so that proxies keep the connection open.
const LiveHeartbeat = 15 * time.Second

// liveEvents streams the live snapshot as server-sent events: the newest
// at once, then each newer one. It holds its stream slot (the stream
// route class) and nothing else while it waits.
func (s *Server) liveEvents(w http.ResponseWriter, r *http.Request) error {
	if s.live == nil {
		return dibs.Errorf(dibs.ENOTFOUND, "This server has no live view.")
	}
	changed := s.live.Changed() // before the snapshot, so that none is missed
	snap, err := s.live.Snapshot(r.Context())
	if err != nil {
		return err
	}
	send := eventStream(w)
	event := func(snap dibs.LiveSnapshot) bool {
		data, err := json.Marshal(snap)
		if err != nil {
			s.log.Error("live snapshot not sent", "err", err)
			return false
		}
		return send(append(append([]byte("data: "), data...), "\n\n"...))
	}
	if !event(snap) {
		return nil
	}
	heartbeat := time.NewTicker(LiveHeartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.closing:
			return nil
		case <-heartbeat.C:
			if !send([]byte(": ping\n\n")) {
				return nil
			}
			continue
		case <-changed:
		}
		changed = s.live.Changed()
		snap, err := s.live.Snapshot(r.Context())
		if err != nil {
			if r.Context().Err() == nil {
				s.log.Warn("live snapshot not read", "err", err)
			}
			continue
		}
		if !event(snap) {
			return nil
		}
	}
}

// serveConsole serves the operator console, if the server has one.
func (s *Server) serveConsole(w http.ResponseWriter, r *http.Request) {
	if s.console == nil {
		writeProblem(w, http.StatusNotFound, dibs.ENOTFOUND, "No such resource.")
		return
	}
	s.console.ServeHTTP(w, r)
}

// servePprof serves Go's profiles under /debug/pprof/. A CPU profile or
// an execution trace lasts as long as it asks (seconds=N), so those have
// no write deadline.
func servePprof(w http.ResponseWriter, r *http.Request) error {
	switch name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/"); name {
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		http.NewResponseController(w).SetWriteDeadline(time.Time{})
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		http.NewResponseController(w).SetWriteDeadline(time.Time{})
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r)
	}
	return nil
}
