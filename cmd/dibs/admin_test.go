package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/dibs-io/dibs/httpapi"
)

// TestAdminTokensConfig: DIBS_ADMIN_TOKENS is read as label:token pairs,
// and the node's tokens are checked: at least one, long enough, labels of
// the allowed form, no label or token twice; errors never show a token.
func TestAdminTokensConfig(t *testing.T) {
	t.Parallel()
	const tok1, tok2 = "alice-token-0123456789", "bob-token-0123456789"
	tests := []struct {
		name    string
		single  string // DIBS_ADMIN_TOKEN
		list    string // DIBS_ADMIN_TOKENS
		want    []httpapi.AdminToken
		wantErr string // "" : valid
	}{
		{name: "single only", single: testAdminToken},
		{name: "list only", list: "alice:" + tok1 + ", bob:" + tok2,
			want: []httpapi.AdminToken{{Label: "alice", Token: tok1}, {Label: "bob", Token: tok2}}},
		{name: "both", single: testAdminToken, list: "alice:" + tok1,
			want: []httpapi.AdminToken{{Label: "alice", Token: tok1}}},
		{name: "a token may hold a colon", list: "ops_1:" + tok1 + ":x",
			want: []httpapi.AdminToken{{Label: "ops_1", Token: tok1 + ":x"}}},
		{name: "none", wantErr: "DIBS_ADMIN_TOKEN or DIBS_ADMIN_TOKENS must be set"},
		{name: "single too short", single: "short", wantErr: "DIBS_ADMIN_TOKEN must be at least"},
		{name: "token too short", list: "alice:short", wantErr: "the token of alice must be at least"},
		{name: "no colon", list: tok1, wantErr: "entry 1 is not label:token"},
		{name: "empty entry", list: "alice:" + tok1 + ",", wantErr: "entry 2 is not label:token"},
		{name: "upper-case label", list: "Alice:" + tok1, wantErr: `label "Alice" must match`},
		{name: "empty label", list: ":" + tok1, wantErr: `label "" must match`},
		{name: "long label", list: strings.Repeat("a", 33) + ":" + tok1, wantErr: "must match"},
		{name: "label twice", list: "alice:" + tok1 + ",alice:" + tok2, wantErr: "label alice is given twice"},
		{name: "admin label taken", single: testAdminToken, list: "admin:" + tok1, wantErr: "label admin is given twice"},
		{name: "token twice", list: "alice:" + tok1 + ",bob:" + tok1, wantErr: "bob's token is given twice"},
		{name: "token of the single", single: tok1, list: "bob:" + tok1, wantErr: "bob's token is given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.AdminToken = tt.single
			tokens, err := parseAdminTokens(tt.list)
			if err == nil {
				cfg.AdminTokens = tokens
				err = cfg.Validate()
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			case err != nil && (strings.Contains(err.Error(), tok1) || strings.Contains(err.Error(), tok2)):
				t.Fatalf("error %q shows a token", err)
			}
			if tt.wantErr == "" && len(tt.want) > 0 {
				if len(cfg.AdminTokens) != len(tt.want) {
					t.Fatalf("tokens = %+v, want %+v", cfg.AdminTokens, tt.want)
				}
				for i := range tt.want {
					if cfg.AdminTokens[i] != tt.want[i] {
						t.Errorf("token %d = %+v, want %+v", i, cfg.AdminTokens[i], tt.want[i])
					}
				}
			}
		})
	}
}

// TestAdminAddrFlag: --admin-addr is set by the flag or DIBS_ADMIN_ADDR,
// the flag winning; it may not be --addr.
func TestAdminAddrFlag(t *testing.T) {
	t.Parallel()
	parse := func(args []string, env map[string]string) Config {
		t.Helper()
		cfg := DefaultConfig()
		fs := flag.NewFlagSet("dibs serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg.flags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := flagsFromEnv(fs, testEnv(env)); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if got := parse(nil, nil).AdminAddr; got != "" {
		t.Errorf("default admin addr = %q, want none", got)
	}
	if got := parse(nil, map[string]string{"DIBS_ADMIN_ADDR": "127.0.0.1:9090"}).AdminAddr; got != "127.0.0.1:9090" {
		t.Errorf("admin addr from the environment = %q", got)
	}
	if got := parse([]string{"--admin-addr", "10.0.0.1:9091"}, map[string]string{"DIBS_ADMIN_ADDR": "127.0.0.1:9090"}).AdminAddr; got != "10.0.0.1:9091" {
		t.Errorf("admin addr with flag and environment = %q, want the flag's", got)
	}
	cfg := testConfig(t)
	cfg.Addr, cfg.AdminAddr = "127.0.0.1:8080", "127.0.0.1:8080"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--admin-addr") {
		t.Errorf("admin addr = addr: error %v", err)
	}
}

// adminCall sends a request with an optional bearer token and body.
func adminCall(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestServeAdminListener: with --admin-addr the public listener answers
// 404 for the admin routes, the console, /metrics and pprof, and the
// admin listener serves them to any of the tokens; the switches, the
// action log (under the token's label) and the live view are wired.
func TestServeAdminListener(t *testing.T) {
	t.Parallel()
	const opsToken = "ops-token-0123456789abcdef"
	cfg := testConfig(t)
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.AdminTokens = []httpapi.AdminToken{{Label: "ops", Token: opsToken}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if m.AdminURL() == m.URL() {
		t.Fatalf("admin URL %s is the public one", m.AdminURL())
	}

	for _, p := range []string{"/v1/admin/drops", "/v1/admin/switches", "/console", "/metrics", "/debug/pprof/"} {
		if code, body := adminCall(t, "GET", m.URL()+p, testAdminToken, ""); code != 404 || !strings.Contains(body, `"not_found"`) {
			t.Errorf("public GET %s = %d %s, want 404 not_found", p, code, body)
		}
	}
	if code, _ := adminCall(t, "GET", m.URL()+"/readyz", "", ""); code != 200 {
		t.Errorf("public readyz = %d", code)
	}
	for _, p := range []string{"/v1/admin/drops", "/v1/admin/switches", "/console", "/metrics", "/debug/pprof/"} {
		if code, body := adminCall(t, "GET", m.AdminURL()+p, opsToken, ""); code != 200 {
			t.Errorf("admin GET %s = %d %s", p, code, body)
		}
	}
	if code, _ := adminCall(t, "GET", m.AdminURL()+"/debug/pprof/", "", ""); code != 401 {
		t.Errorf("pprof without a token = %d, want 401", code)
	}

	code, body := adminCall(t, "PATCH", m.AdminURL()+"/v1/admin/switches", opsToken, `{"claims":"off"}`)
	if code != 200 || !strings.Contains(body, `"claims":"off"`) {
		t.Fatalf("flip claims off = %d %s", code, body)
	}
	code, body = adminCall(t, "POST", m.AdminURL()+"/v1/admin/drops", testAdminToken, `{"id":"d","title":"D","kind":"coupon","stock":1}`)
	if code != 201 {
		t.Fatalf("create drop = %d %s", code, body)
	}
	code, body = adminCall(t, "GET", m.AdminURL()+"/v1/admin/actions", opsToken, "")
	if code != 200 {
		t.Fatalf("actions = %d %s", code, body)
	}
	lines := strings.Split(strings.TrimSpace(body), "\n")
	want := []struct{ actor, kind string }{{"admin", "drop.created"}, {"ops", "switch.flipped"}}
	if len(lines) != len(want) {
		t.Fatalf("actions = %q, want %d lines", body, len(want))
	}
	for i, w := range want {
		var a struct{ Actor, Kind string }
		json.Unmarshal([]byte(lines[i]), &a)
		if a.Actor != w.actor || a.Kind != w.kind {
			t.Errorf("action %d = %s, want %s by %s", i, lines[i], w.kind, w.actor)
		}
	}
	if strings.Contains(body, opsToken) || strings.Contains(body, testAdminToken) {
		t.Error("the action log shows a token")
	}
}
