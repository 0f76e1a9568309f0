package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo plays `dibs demo` with a smaller Pepero Day spike (the phone
// drop at its real size): it must exit cleanly, every invariant holding,
// with its checks of coupons, webhooks and payments passing and an HTML
// report per scenario.
func TestDemo(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("the demo's events at load; make test runs this without -race")
	}
	t.Setenv("CI", "true") // no progress line
	dir := t.TempDir()
	report := filepath.Join(dir, "demo.json")
	var stdout, stderr bytes.Buffer
	err := runDemo(context.Background(), []string{"--users", "20000", "--seconds", "1", "--seed", "1",
		"--report", report, "--out", dir}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var res demoResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if !res.OK || len(res.Scenarios) != 2 {
		t.Fatalf("report: ok %v, %d scenarios", res.OK, len(res.Scenarios))
	}
	if sc := res.Scenarios[0].Report; sc.Totals.Wins != 1111 || !sc.Audit.OK {
		t.Errorf("Pepero Day: %d wins, audit ok %v; want 1111 and ok", sc.Totals.Wins, sc.Audit.OK)
	}
	want := map[string]bool{"coupons_issued": true, "winners_notified": true, "winners_survive_restart": true,
		"paid_equals_stock": true, "one_charge_per_claim": true, "declines_released": true, "released_resold": true}
	for _, c := range res.Checks {
		if want[c.Name] {
			delete(want, c.Name)
			if c.Status != "pass" {
				t.Errorf("%s: %s (%s)", c.Name, c.Status, c.Detail)
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("checks missing from the report: %v", want)
	}
	// The demo says what the server did (its own p99, from Server-Timing)
	// and whether the generator kept up, whichever it was on this machine.
	for _, sc := range res.Scenarios {
		h := sc.Report.Headline()
		if !bytes.Contains(stdout.Bytes(), []byte(sc.Name+": "+h)) {
			t.Errorf("output lacks the headline of %s %q", sc.Name, h)
		}
		if sc.Report.ServerLatency == nil || !strings.Contains(h, "server p99") ||
			!strings.Contains(h, "GENERATOR-BOUND") && !strings.Contains(h, "kept its schedule") {
			t.Errorf("%s: headline %q names no server p99 or no verdict on the generator", sc.Name, h)
		}
	}
	for name, path := range res.Reports {
		if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
			t.Errorf("HTML report of %s: %v", name, err)
		}
	}
}
