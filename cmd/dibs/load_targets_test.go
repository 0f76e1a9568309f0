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

// --target takes several nodes separated by commas: the drop is created on
// the first, the users' claims reach every node, the audit passes.
func TestLoadSeveralTargets(t *testing.T) {
	t.Parallel()
	srv := loadgentest.NewServer(t, loadgentest.Options{})
	b, c := srv.AddNode(t), srv.AddNode(t)
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	env := testEnv(map[string]string{
		"DIBS_PASSPORT_SECRET": loadgentest.PassportSecret,
		"DIBS_ADMIN_TOKEN":     loadgentest.AdminToken,
		"DIBS_TARGET":          srv.URL + ", " + b.URL + "," + c.URL, // the environment too
		"CI":                   "true",
	})
	var stdout, stderr bytes.Buffer
	err := loadMain(context.Background(), []string{
		"--drop", "many", "--create-stock", "30", "--users", "300", "--seconds", "0.3", "--seed", "3", "--report", jsonPath,
	}, env, &stdout, &stderr)
	if err != nil {
		t.Fatalf("load: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "nodes:") {
		t.Errorf("summary lacks the nodes:\n%s", stdout.String())
	}
	var rep loadgen.Report
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Config.Target != srv.URL || len(rep.Config.Targets) != 3 || rep.Totals.Wins != 30 {
		t.Errorf("report target %s, targets %v, wins %d; want %s first of three, 30 wins", rep.Config.Target, rep.Config.Targets, rep.Totals.Wins, srv.URL)
	}
	claims := map[int]int{}
	for _, r := range srv.Requests() {
		switch {
		case strings.HasSuffix(r.Path, "/claims"):
			claims[r.Node]++
		case r.Path == "/v1/admin/drops" && r.Node != 0:
			t.Errorf("drop created on node %d, want the first", r.Node)
		}
	}
	if claims[0] == 0 || claims[1] == 0 || claims[2] == 0 {
		t.Errorf("claims by node = %v, want some on each", claims)
	}
}

func TestSplitTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"http://a", []string{"http://a"}},
		{"http://a,http://b", []string{"http://a", "http://b"}},
		{" http://a , http://b ,", []string{"http://a", "http://b"}},
		{",", []string{","}},
	}
	for _, tt := range tests {
		if got := splitTargets(tt.in); strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("splitTargets(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
