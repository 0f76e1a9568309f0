package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/loadgen"
)

const (
	testPassportSecret = "serve-test-passport-secret-01234"
	testAdminToken     = "serve-test-admin-token"
)

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.PassportSecret = testPassportSecret
	cfg.AdminToken = testAdminToken
	cfg.Room.Joins.Rate = 0 // every user of the test joins from one address
	return cfg
}

// TestServeQueuedDrop runs a node and a small crowd through a queued drop:
// join, wait, claim with the admission; exactly the stock wins.
func TestServeQueuedDrop(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := loadgen.CreateDrop(ctx, nil, m.URL(), testAdminToken, loadgen.DropSpec{ID: "q", Stock: 20, QueueRate: 200}); err != nil {
		t.Fatal(err)
	}
	rep, err := loadgen.Run(ctx, loadgen.Config{
		Target: m.URL(), DropID: "q", Users: 300, Profile: loadgen.Profile{Shape: loadgen.Spike, Duration: 300 * time.Millisecond},
		PassportSecret: []byte(testPassportSecret), AdminToken: testAdminToken, Seed: 3, RetryFraction: 0.2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audit.OK || rep.Totals.Wins != 20 || rep.Totals.Queue["admitted"] != 20 {
		t.Fatalf("audit %v, %d wins, queue %v; want a pass, 20 wins, 20 admitted", rep.Err(), rep.Totals.Wins, rep.Totals.Queue)
	}
	res, err := http.Get(m.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`dibs_room_served{drop="q"} 20`, `dibs_room_joined{drop="q"} `, `dibs_room_sold_out{drop="q"} 1`, `dibs_room_leader{drop="q"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	res, err = http.Get(m.URL() + "/d/q")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("the page: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

// TestRoomSecret: nodes given only the passport secret derive the same
// room secret, so a ticket from one verifies on another; a room secret of
// their own replaces it.
func TestRoomSecret(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, err := openRoom(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := openRoom(cfg, nil, nil, nil)
	cfg.Room.Secret = "a-room-secret-of-its-own-0123456"
	own, _ := openRoom(cfg, nil, nil, nil)
	tk := dibs.Ticket{DropID: "d", UserID: "u", Number: 1, IssuedAt: time.Now()}
	tok := a.Keys().Ticket(tk, 7)
	if _, err := b.Keys().VerifyTicket(tok, "d", "u", 7); err != nil {
		t.Fatalf("another node with the same passport secret: %v", err)
	}
	if _, err := own.Keys().VerifyTicket(tok, "d", "u", 7); err == nil {
		t.Fatal("a node with its own room secret accepted a ticket signed with the derived one")
	}
}

func TestValidateRoomConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"short room secret", func(c *Config) { c.Room.Secret = "short" }, "DIBS_ROOM_SECRET"},
		{"admission TTL", func(c *Config) { c.Room.AdmissionTTL = time.Millisecond }, "--admission-ttl"},
		{"join burst", func(c *Config) { c.Room.Joins.Rate, c.Room.Joins.Burst = 5, 0 }, "--join-burst"},
		{"streams", func(c *Config) { c.Limits.Stream = 0 }, "--max-streams"},
	} {
		cfg := testConfig(t)
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
}
