package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dibs-io/dibs/passport"
)

// TestServePassportFlags: --passport-issuer, --passport-audience and
// --passport-max-lifetime (here two of them from the environment) reach
// the node's verifier: passports outside the policy get 401 unauthorized.
func TestServePassportFlags(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	fs := flag.NewFlagSet("dibs serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.flags(fs)
	if err := fs.Parse([]string{"--passport-issuer", "main"}); err != nil {
		t.Fatal(err)
	}
	env := testEnv(map[string]string{"DIBS_PASSPORT_AUDIENCE": "dibs", "DIBS_PASSPORT_MAX_LIFETIME": "2h", "DIBS_PASSPORT_ISSUER": "ignored"})
	if err := flagsFromEnv(fs, env); err != nil {
		t.Fatal(err)
	}
	if p := cfg.Passport; p.Issuer != "main" || p.Audience != "dibs" || p.MaxLifetime != 2*time.Hour {
		t.Fatalf("passport options = %+v, want issuer main (the flag wins), audience dibs, max lifetime 2h", p)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	createDrop(t, m.URL(), "d", 10)

	now := time.Now()
	pass := func(iss, aud string, life time.Duration) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "alice", "iss": iss, "aud": aud, "iat": now.Unix(), "exp": now.Add(life).Unix(),
		}).SignedString([]byte(testPassportSecret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name     string
		passport string
		status   int
	}{
		{"other issuer", pass("shop", "dibs", time.Hour), http.StatusUnauthorized},
		{"other audience", pass("main", "shop", time.Hour), http.StatusUnauthorized},
		{"beyond the max lifetime", pass("main", "dibs", 3*time.Hour), http.StatusUnauthorized},
		{"within the policy", pass("main", "dibs", time.Hour), http.StatusCreated},
	}
	for _, tt := range tests {
		code, body := call(t, "POST", m.URL()+"/v1/drops/d/claims", tt.passport)
		if code != tt.status {
			t.Fatalf("%s: claim = %d %s, want %d", tt.name, code, body, tt.status)
		}
		if tt.status == http.StatusUnauthorized && !strings.Contains(body, `"code":"unauthorized"`) {
			t.Fatalf("%s: body %s, want the unauthorized problem code", tt.name, body)
		}
	}
}

func TestValidatePassportMaxLifetime(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Passport.MaxLifetime = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--passport-max-lifetime") {
		t.Fatalf("Validate with a zero max lifetime = %v", err)
	}
}

// TestPassportCommandPolicy: dibs passport takes the node's policy flags
// (here one from the environment), so that its passports pass a node that
// requires an issuer and an audience, and refuses a ttl the node would.
func TestPassportCommandPolicy(t *testing.T) {
	t.Setenv("DIBS_PASSPORT_SECRET", testPassportSecret)
	t.Setenv("DIBS_PASSPORT_AUDIENCE", "dibs")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"passport", "--passport-issuer", "main", "alice"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	v, err := passport.NewVerifier([]byte(testPassportSecret), passport.Options{Issuer: "main", Audience: "dibs"})
	if err != nil {
		t.Fatal(err)
	}
	if user, err := v.Verify(strings.TrimSpace(out.String())); err != nil || user != "alice" {
		t.Fatalf("Verify(dibs passport) = %q, %v; want alice", user, err)
	}
	err = run(context.Background(), []string{"passport", "--ttl", "25h", "alice"}, io.Discard, io.Discard)
	if code := exitCode(err); err == nil || code != 2 {
		t.Fatalf("dibs passport --ttl 25h = %v (exit %d), want a usage error", err, code)
	}
}
