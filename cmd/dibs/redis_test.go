package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/passport"
)

// mustMain runs a node on a free port with cfg's gate settings and a fresh
// data directory unless cfg names one.
func mustMain(t *testing.T, mod func(*Config)) *Main {
	t.Helper()
	cfg := testConfig(t)
	cfg.gateFlags(nopFlags())
	mod(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	m := NewMain(cfg, log)
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// call sends a request to a node and returns the status and body.
func call(t *testing.T, method, url, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func createDrop(t *testing.T, base, id string, stock int) {
	t.Helper()
	if err := loadgen.CreateDrop(context.Background(), nil, base, testAdminToken, loadgen.DropSpec{ID: id, Stock: int64(stock)}); err != nil {
		t.Fatal(err)
	}
}

func passportOf(t *testing.T, user string) string {
	t.Helper()
	p, err := passport.Issue([]byte(testPassportSecret), user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func claimAs(t *testing.T, base, drop, user string) (int, string) {
	t.Helper()
	return call(t, "POST", base+"/v1/drops/"+drop+"/claims", passportOf(t, user))
}

// metric returns the sum of a metric's samples whose labels contain sel.
func metric(t *testing.T, base, name, sel string) float64 {
	t.Helper()
	_, body := call(t, "GET", base+"/metrics", "")
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, sel) {
			continue
		}
		var v float64
		fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v)
		sum += v
	}
	return sum
}

// TestRedisNodeSpike: one node in Redis mode takes a spike; the load
// generator's audit finds exactly N winners, every acknowledged winner in
// the record, and the losers after the sell-out cost no Redis call.
func TestRedisNodeSpike(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	m := mustMain(t, func(c *Config) {
		c.Redis.URL, c.Redis.Prefix = url, testenv.RedisPrefix(t, testenv.RedisClient(t, url))
		// On a starved machine a Redis call can outlive its deadline: the
		// claim gets 503 and the hold its script took has no record. The
		// reconciler gives such slots back after its grace, and the audit
		// waits for that before it judges the stock.
		c.Reconcile.Interval, c.Reconcile.Grace = time.Second, 2*time.Second
	})
	createDrop(t, m.URL(), "pepero", 111)
	rep, err := loadgen.Run(context.Background(), loadgen.Config{
		Target: m.URL(), DropID: "pepero", Users: 3000, Profile: loadgen.Profile{Duration: time.Second},
		RetryFraction: 0.2, PassportSecret: []byte(testPassportSecret), AdminToken: testAdminToken, Seed: 1,
		SettleWait: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audit.OK { // among its checks: exactly the stock won, every acknowledged winner recorded
		b, _ := json.MarshalIndent(rep.Audit, "", "  ")
		t.Fatalf("audit:\n%s", b)
	}
	before := metric(t, m.URL(), "dibs_gate_redis_calls_total", `op="reserve"`)
	for i := range 200 {
		if code, body := claimAs(t, m.URL(), "pepero", fmt.Sprintf("late-%d", i)); code != http.StatusGone {
			t.Fatalf("late claim = %d %s", code, body)
		}
	}
	after := metric(t, m.URL(), "dibs_gate_redis_calls_total", `op="reserve"`)
	if after != before {
		t.Fatalf("200 losers of a sold-out drop made %.0f reserve calls to redis", after-before)
	}
	if code, _ := call(t, "GET", m.URL()+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("readyz = %d", code)
	}
}

// TestRedisRestartsEmpty: the node's Redis restarts with nothing in it.
// Meanwhile /healthz stays 200, /readyz and claims say 503; afterwards the
// node recovers by itself, winners get their claims back from the rebuilt
// gate, and the drop still ends with exactly its stock.
func TestRedisRestartsEmpty(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	srv := redisserver.Start(t)
	m := mustMain(t, func(c *Config) { c.Redis.URL, c.Redis.Refresh = srv.URL(), 100*time.Millisecond })
	base := m.URL()
	createDrop(t, base, "d", 10)
	won := map[string]string{}
	for i := range 4 {
		u := fmt.Sprintf("w%d", i)
		// A starved machine may answer the drop's first Prepare late: the
		// drop is recorded and its claims answer 503 until a refresh
		// prepares it.
		var code int
		var body string
		testenv.WaitFor(t, "the drop to take claims", func() bool {
			code, body = claimAs(t, base, "d", u)
			return code != http.StatusServiceUnavailable
		})
		if code != http.StatusCreated {
			t.Fatalf("claim = %d %s", code, body)
		}
		won[u] = body
	}

	srv.Kill(t)
	if code, _ := call(t, "GET", base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("healthz with redis down = %d", code)
	}
	if code, _ := call(t, "GET", base+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with redis down = %d", code)
	}
	if code, body := claimAs(t, base, "d", "x"); code != http.StatusServiceUnavailable {
		t.Fatalf("claim with redis down = %d %s", code, body)
	}

	srv.Restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := call(t, "GET", base+"/readyz", "")
		hc, _ := call(t, "GET", base+"/healthz", "")
		if hc != http.StatusOK {
			t.Fatalf("healthz during recovery = %d", hc)
		}
		if code == http.StatusOK {
			if code, _ := claimAs(t, base, "d", "w0"); code == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the node did not recover after redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for u, first := range won {
		code, body := claimAs(t, base, "d", u)
		if code != http.StatusOK || body != first {
			t.Fatalf("%s after the restart = %d %s, want 200 %s", u, code, body, first)
		}
	}
	wins := 0
	for i := range 20 {
		switch code, body := claimAs(t, base, "d", fmt.Sprintf("n%d", i)); code {
		case http.StatusCreated:
			wins++
		case http.StatusGone:
		default:
			t.Fatalf("claim after recovery = %d %s", code, body)
		}
	}
	if wins != 6 {
		t.Fatalf("%d new winners after recovery, want the 6 slots left", wins)
	}
}

func nopFlags() *flag.FlagSet { return flag.NewFlagSet("test", flag.ContinueOnError) }
