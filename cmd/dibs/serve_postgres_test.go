package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/postgres/pgtest"
)

// A node started with --postgres keeps its record in PostgreSQL: a claim
// is won and durable there, /readyz asks the database, and /metrics shows
// the pools.
func TestServeOnPostgres(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.SchemaURL(t)

	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.PassportSecret = strings.Repeat("p", passport.MinSecretLen)
	cfg.AdminToken = strings.Repeat("a", MinAdminTokenLen)
	fs := flag.NewFlagSet("dibs serve", flag.ContinueOnError)
	cfg.flags(fs)
	if err := fs.Parse([]string{"--postgres", dbURL, "--postgres-record-conns", "2", "--postgres-read-conns", "2", "--postgres-background-conns", "1"}); err != nil {
		t.Fatal(err)
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

	do := func(method, path, token, body string, want int) string {
		t.Helper()
		req, _ := http.NewRequest(method, m.URL()+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		return string(b)
	}
	do("GET", "/readyz", "", "", http.StatusOK)
	do("POST", "/v1/admin/drops", cfg.AdminToken, `{"id":"pg","title":"on postgres","kind":"coupon","stock":3}`, http.StatusCreated)
	pass, err := passport.Issue([]byte(cfg.PassportSecret), "alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	do("POST", "/v1/drops/pg/claims", pass, "", http.StatusCreated)
	do("POST", "/v1/drops/pg/claims", pass, "", http.StatusOK)
	if winners := do("GET", "/v1/admin/drops/pg/winners", cfg.AdminToken, "", http.StatusOK); !strings.Contains(winners, `"alice"`) {
		t.Fatalf("winners = %s, want alice", winners)
	}
	metrics := do("GET", "/metrics", "", "", http.StatusOK)
	if !strings.Contains(metrics, `dibs_postgres_pool_max_connections{pool="record"} 2`) {
		t.Fatalf("/metrics lacks the record pool's bound")
	}
}
