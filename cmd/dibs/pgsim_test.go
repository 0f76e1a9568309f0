package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/payment/pgsim"
)

// pgsimOutput is a stdout the test can read while runPgsim writes it.
type pgsimOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *pgsimOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *pgsimOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

var pgsimListening = regexp.MustCompile(`listening on (http://\S+)`)

func pgsimDo(t *testing.T, method, url, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestPgsimServesUntilCancelled(t *testing.T) {
	t.Setenv("DIBS_DECLINE_RATE", "1")
	t.Setenv("DIBS_LATENCY", "1h") // the flag below wins
	t.Setenv("DIBS_OUTAGE", "1h+1s,2h+1s")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &pgsimOutput{}
	done := make(chan error, 1)
	go func() {
		done <- runPgsim(ctx, []string{"--addr", "127.0.0.1:0", "--latency", "0s", "--latency-median", "0s", "--seed", "3", "--log-level", "warn"}, out, io.Discard)
	}()

	var base string
	testenv.WaitFor(t, "the listening line", func() bool {
		if m := pgsimListening.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		}
		return base != ""
	})

	status, body := pgsimDo(t, "POST", base+"/v1/charges", "claim-1", `{"amount":11000,"currency":"KRW"}`)
	var ch payment.Charge
	if err := json.Unmarshal(body, &ch); status != http.StatusOK || err != nil || ch.Status != payment.StatusDeclined {
		t.Fatalf("charge = %d %s, want 200 declined (DIBS_DECLINE_RATE=1)", status, body)
	}
	var ledger []pgsim.Entry
	if _, body := pgsimDo(t, "GET", base+"/ledger", "", ""); json.Unmarshal(body, &ledger) != nil || len(ledger) != 1 || ledger[0].Key != "claim-1" {
		t.Fatalf("ledger = %s, want claim-1", body)
	}

	// A request hanging at shutdown must not hold it up.
	if status, body := pgsimDo(t, "PUT", base+"/admin/knobs", "", `{"timeout_rate":1,"hang":"1h"}`); status != http.StatusOK {
		t.Fatalf("set knobs: %d %s", status, body)
	}
	hung, err := http.NewRequest("POST", base+"/v1/charges", strings.NewReader(`{"amount":1,"currency":"KRW"}`))
	if err != nil {
		t.Fatal(err)
	}
	hung.Header.Set("Idempotency-Key", "claim-2")
	go http.DefaultClient.Do(hung)
	testenv.WaitFor(t, "the request to hang", func() bool {
		var st pgsim.Stats
		_, body := pgsimDo(t, "GET", base+"/stats", "", "")
		return json.Unmarshal(body, &st) == nil && st.InFlight == 1
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runPgsim = %v, want nil after cancellation", err)
		}
	case <-time.After(testenv.WaitTimeout):
		t.Fatal("runPgsim did not return after cancellation")
	}
}

func TestPgsimRejectsBadConfiguration(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"rate over 1", []string{"--decline-rate", "2"}, nil},
		{"bad outage", []string{"--outage", "30s"}, nil},
		{"bad outage mode", []string{"--outage-mode", "meteor"}, nil},
		{"stray argument", []string{"now"}, nil},
		{"bad env", nil, map[string]string{"DIBS_SEED": "abc"}},
		{"bad log level", []string{"--log-level", "loud"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			args := append([]string{"--addr", "127.0.0.1:0"}, tt.args...)
			if err := runPgsim(ctx, args, io.Discard, io.Discard); err == nil {
				t.Errorf("runPgsim(%q) = nil, want an error", tt.args)
			}
		})
	}
}
