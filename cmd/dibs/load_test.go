package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

func testEnv(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestLoadCreatesDropRunsAndWritesReports(t *testing.T) {
	t.Parallel()
	srv := loadgentest.NewServer(t, loadgentest.Options{})
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	env := testEnv(map[string]string{
		"DIBS_PASSPORT_SECRET": loadgentest.PassportSecret,
		"DIBS_ADMIN_TOKEN":     loadgentest.AdminToken,
		"DIBS_USERS":           "400", // from the environment
		"DIBS_SECONDS":         "9",   // the flag wins
		"CI":                   "true",
	})
	var stdout, stderr bytes.Buffer
	err := loadMain(context.Background(), []string{
		"--target", srv.URL, "--drop", "cli", "--create-stock", "25",
		"--seconds", "0.3", "--seed", "7", "--report", jsonPath, "--html", htmlPath,
	}, env, &stdout, &stderr)
	if err != nil {
		t.Fatalf("load: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "audit:     PASS") {
		t.Errorf("summary lacks the verdict:\n%s", stdout.String())
	}
	var rep loadgen.Report
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report JSON: %v", err)
	}
	if rep.Config.Users != 400 || rep.Config.SpanMS > 300 || rep.Config.Seed != 7 || rep.Totals.Wins != 25 {
		t.Errorf("report config %+v wins %d; want 400 users (env) over 0.3 s (flag), seed 7, 25 wins", rep.Config, rep.Totals.Wins)
	}
	if h, err := os.ReadFile(htmlPath); err != nil || !bytes.Contains(h, []byte("uPlot")) {
		t.Errorf("HTML report missing or without charts (err %v)", err)
	}
}

func TestLoadFailsWhenAuditFails(t *testing.T) {
	t.Parallel()
	srv := loadgentest.NewServer(t, loadgentest.Options{OverIssue: 2})
	srv.MustCreateDrop(t, "bad", "coupon", 10, 1, 0)
	env := testEnv(map[string]string{
		"DIBS_PASSPORT_SECRET": loadgentest.PassportSecret,
		"DIBS_ADMIN_TOKEN":     loadgentest.AdminToken,
	})
	var stdout, stderr bytes.Buffer
	err := loadMain(context.Background(), []string{"--target", srv.URL, "--drop", "bad", "--users", "100", "--seconds", "0.2"},
		env, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), loadgen.AuditWithinStock) {
		t.Fatalf("load error = %v, want the failed audit naming %s", err, loadgen.AuditWithinStock)
	}
}

func TestLoadRejectsBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no target", []string{"--drop", "d"}, nil, "--target and --drop are required"},
		{"no secret", []string{"--target", "http://127.0.0.1:1", "--drop", "d"}, nil, "passport secret"},
		{"bad env value", []string{"--target", "http://127.0.0.1:1", "--drop", "d"}, map[string]string{"DIBS_USERS": "many"}, "DIBS_USERS"},
		{"bad profile", []string{"--target", "http://127.0.0.1:1", "--drop", "d", "--profile", "wave"},
			map[string]string{"DIBS_PASSPORT_SECRET": "s", "DIBS_ADMIN_TOKEN": "t"}, "profile shape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := loadMain(context.Background(), tt.args, testEnv(tt.env), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
