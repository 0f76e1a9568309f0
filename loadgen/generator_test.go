package loadgen_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

// soldOutServer answers every claim sold out after about a millisecond,
// saying so in Server-Timing, as a dibs node does.
func soldOutServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/admin/drops/g":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"g","kind":"coupon","stock":1,"per_user_limit":1,"admission":{"mode":"direct"}}`)
		case strings.HasSuffix(r.URL.Path, "/winners"):
			w.Header().Set("Content-Type", "application/x-ndjson")
		case r.Method == http.MethodPost:
			time.Sleep(time.Millisecond) // the server's work, not a synchronisation
			w.Header().Set("Server-Timing", "app;dur=1")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusGone)
			io.WriteString(w, `{"status":410,"code":"sold_out"}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"g","state":"sold_out","remaining":0}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A schedule no generator keeps (ten million arrivals a second, with a
// start slack of a microsecond) is reported generator-bound; one it keeps
// easily (five a second) is not. Both read the server's own time from
// Server-Timing. The audit of this fake server is not the point.
func TestRunSaysWhenTheGeneratorWasTheLimit(t *testing.T) {
	srv := soldOutServer(t)
	base := loadgen.Config{Target: srv.URL, DropID: "g", PassportSecret: []byte(loadgentest.PassportSecret),
		AdminToken: loadgentest.AdminToken, Seed: 1, SettleWait: -1}

	t.Run("absurd schedule", func(t *testing.T) {
		cfg := base
		cfg.Users = 5000
		cfg.Profile = loadgen.Profile{Shape: loadgen.Constant, Rate: 10_000_000}
		// The dispatcher needs far more than a tenth of the 0.5ms span to
		// start 5,000 arrivals on any machine, and no in-flight bound
		// blocks it: its lag is its own.
		cfg.StartSlack = time.Microsecond
		cfg.MaxInFlight = 10_000
		rep := MustRun(t, cfg)
		g := rep.Generator
		if !g.Bound || g.MissedOwnLag == 0 {
			t.Errorf("generator = %+v, want bound with starts missed by its own lag", g)
		}
		if g.AchievedRate >= g.ScheduledRate {
			t.Errorf("achieved %.0f arrivals/s of %.0f scheduled, want fewer", g.AchievedRate, g.ScheduledRate)
		}
		if h := rep.Headline(); !strings.Contains(h, "GENERATOR-BOUND") {
			t.Errorf("headline %q does not say the run was generator-bound", h)
		}
		checkServerTime(t, rep)
	})
	t.Run("keepable schedule", func(t *testing.T) {
		cfg := base
		cfg.Users = 20
		// 20 arrivals over 3.8s: bound only if the dispatcher stalled
		// for 380ms of its own, or three arrivals started over 200ms
		// late by the generator's fault, which even a starved machine
		// rarely does.
		cfg.Profile = loadgen.Profile{Shape: loadgen.Constant, Rate: 5}
		cfg.StartSlack = 200 * time.Millisecond
		rep := MustRun(t, cfg)
		if g := rep.Generator; g.Bound {
			t.Errorf("generator = %+v, want not bound", g)
		}
		if h := rep.Headline(); !strings.Contains(h, "kept its schedule") {
			t.Errorf("headline %q does not say the generator kept its schedule", h)
		}
		checkServerTime(t, rep)
	})
}

func checkServerTime(t *testing.T, rep *loadgen.Report) {
	t.Helper()
	s := rep.ServerLatency
	if s == nil || s.Count != rep.Latency.Count || s.P50 != 1 || s.Max != 1 {
		t.Fatalf("server latency = %+v, want every claim's 1ms from Server-Timing (%d claims)", s, rep.Latency.Count)
	}
	if !strings.Contains(summary(rep), "server:    p50 1ms") {
		t.Errorf("summary does not show the server's time:\n%s", summary(rep))
	}
}

// Arrivals that find every in-flight place taken wait for the server's
// backlog, not for the generator: their missed starts say so.
func TestRunAttributesMissedStarts(t *testing.T) {
	srv := soldOutServer(t)
	cfg := loadgen.Config{Target: srv.URL, DropID: "g", PassportSecret: []byte(loadgentest.PassportSecret),
		AdminToken: loadgentest.AdminToken, Seed: 1, SettleWait: -1,
		Users: 100, Profile: loadgen.Profile{Shape: loadgen.Constant, Rate: 2000},
		// One place, held a millisecond or more by each answer: arrivals
		// every half millisecond find it taken.
		MaxInFlight: 1}
	rep := MustRun(t, cfg)
	g := rep.Generator
	if g.MissedBacklog == 0 {
		t.Errorf("generator = %+v, want starts missed by the server's backlog", g)
	}
	if g.MissedBacklog+g.MissedOwnLag != rep.MissedStarts {
		t.Errorf("%d backlog + %d own lag, want the %d missed starts", g.MissedBacklog, g.MissedOwnLag, rep.MissedStarts)
	}
}
