package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
)

// TestStartWhileRedisDown: a node whose Redis is down when it starts comes
// up all the same: alive (/healthz 200), not ready (/readyz 503), the
// claims of its drops (loaded from the record) 503 with Retry-After. When
// Redis comes back, empty, the node recovers by itself: the gate is built
// from the record, the winners of before get their claims back (200),
// newcomers win the slots left (201), and /readyz says ready.
func TestStartWhileRedisDown(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	srv := redisserver.Start(t)
	data := t.TempDir()

	// Winners of an earlier run, in the record the node will start on.
	first := mustMain(t, func(c *Config) { c.Data, c.Redis.URL = data, srv.URL() })
	createDrop(t, first.URL(), "d", 5)
	won := map[string]string{}
	for i := range 2 {
		u := fmt.Sprintf("w%d", i)
		code, body := claimAs(t, first.URL(), "d", u)
		if code != http.StatusCreated {
			t.Fatalf("claim = %d %s", code, body)
		}
		won[u] = body
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	srv.Kill(t)
	m := mustMain(t, func(c *Config) {
		c.Data, c.Redis.URL, c.Redis.Refresh = data, srv.URL(), 100*time.Millisecond
	})
	base := m.URL()
	if code, body := call(t, "GET", base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("healthz with redis down = %d %s", code, body)
	}
	if code, body := call(t, "GET", base+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with redis down = %d %s", code, body)
	}
	res := claimResponse(t, base, "d", "x")
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("claim with redis down = %d, Retry-After %q; want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if code, body := claimAs(t, base, "d", "w0"); code != http.StatusServiceUnavailable {
		t.Fatalf("a winner's claim with redis down = %d %s, want 503", code, body)
	}

	srv.Restart(t)
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		if code, _ := call(t, "GET", base+"/healthz", ""); code != http.StatusOK {
			t.Fatalf("healthz during recovery = %d", code)
		}
		code, _ := call(t, "GET", base+"/readyz", "")
		if code == http.StatusOK {
			if code, _ := claimAs(t, base, "d", "w0"); code == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node did not recover within %v of redis coming back (readyz %d)", deadline.Sub(start), code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("recovered %v after redis came back", time.Since(start).Round(10*time.Millisecond))
	for u, body := range won {
		if code, got := claimAs(t, base, "d", u); code != http.StatusOK || got != body {
			t.Fatalf("%s after recovery = %d %s, want 200 %s", u, code, got, body)
		}
	}
	wins := 0
	for i := range 6 {
		switch code, body := claimAs(t, base, "d", fmt.Sprintf("n%d", i)); code {
		case http.StatusCreated:
			wins++
		case http.StatusGone:
		default:
			t.Fatalf("claim after recovery = %d %s", code, body)
		}
	}
	if wins != 3 {
		t.Fatalf("%d new winners after recovery, want the 3 slots left", wins)
	}
	if code, body := call(t, "GET", base+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("readyz after recovery = %d %s", code, body)
	}
}

// claimResponse claims d as user and returns the response, body closed.
func claimResponse(t *testing.T, base, drop, user string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v1/drops/"+drop+"/claims", nil)
	req.Header.Set("Authorization", "Bearer "+passportOf(t, user))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}
