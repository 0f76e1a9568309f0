package loadgen_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

// BenchmarkSpikeCeiling measures how many requests per second the generator
// sends and reads on this machine, against a server that answers every claim
// with a constant sold_out problem (the HTTP ceiling: server and generator
// share the cores). The audit of such a server fails and is ignored.
//
//	go test -run '^$' -bench SpikeCeiling -benchtime 1x ./loadgen/
func BenchmarkSpikeCeiling(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/admin/drops/ceiling":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"ceiling","kind":"coupon","stock":1,"per_user_limit":1,"admission":{"mode":"direct"}}`)
		case r.Method == http.MethodPost:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusGone)
			io.WriteString(w, `{"type":"about:blank","title":"Gone","status":410,"code":"sold_out"}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"ceiling","state":"sold_out","remaining":0}`)
		}
	}))
	defer srv.Close()
	runBench(b, loadgen.Config{Target: srv.URL, DropID: "ceiling"})
}

// BenchmarkSpikeFake is the same spike against the in-memory fake server,
// which verifies passports and hands out slots.
func BenchmarkSpikeFake(b *testing.B) {
	srv := loadgentest.NewServer(b, loadgentest.Options{})
	srv.MustCreateDrop(b, "fake", "coupon", 1000, 1, 0)
	runBench(b, loadgen.Config{Target: srv.URL, DropID: "fake"})
}

func runBench(b *testing.B, cfg loadgen.Config) {
	cfg.Users = 40_000
	cfg.Profile = loadgen.Profile{Shape: loadgen.Constant, Rate: 20_000}
	cfg.PassportSecret = []byte(loadgentest.PassportSecret)
	cfg.AdminToken = loadgentest.AdminToken
	cfg.RetryFraction = loadgen.DefaultRetryFraction
	for b.Loop() {
		rep, err := loadgen.Run(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rep.RequestsPerSecond, "req/s")
		b.ReportMetric(rep.Latency.P99, "p99-ms")
		b.ReportMetric(float64(rep.MissedStarts), "missed")
	}
}
