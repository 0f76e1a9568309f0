package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dibs-io/dibs/passport"
)

// The Redis gate against the per-request reference (bench/redisref): the
// same HTTP layer, engine, record and gate scripts, but one EVAL per claim
// on a connection of its own and no sold-out cache. Both talk to one
// private redis-server started for the run.
func init() {
	sectionSetup["redis"] = "; both sides use a SQLite record and one redis-server started for the run (no persistence), pinned to the server's core: Redis's work per request is server work"
	const soldOut = `{"id":"d","title":"sold out","kind":"coupon","stock":1}`
	const pepero = `{"id":"d","title":"pepero day","kind":"coupon","stock":1111}`
	const everyone = `{"id":"d","title":"everyone wins","kind":"coupon","stock":10000000}`
	scenarios = append(scenarios,
		scenario{
			section: "redis",
			name:    "Redis gate: sold-out claims",
			what:    "a sold-out coupon drop, 20,000 users' passports cycled. The reference asks Redis for every answer; dibs answers from its sold-out cache.",
			ref:     target{name: "one EVAL per request", start: withTokens("losers.txt", "loser-", 20_000, redisRef(soldOut, sellOutWarm)), tokens: "losers.txt", path: "/v1/drops/d/claims"},
			dibs: target{name: "dibs --redis", start: withTokens("losers.txt", "loser-", 20_000, redisNode(soldOut, sellOutWarm)), tokens: "losers.txt", path: "/v1/drops/d/claims",
				metric: `dibs_gate_redis_calls_total{op="reserve"}`},
			want: 2,
		},
		scenario{
			section: "redis",
			name:    "Redis gate: a spike",
			what:    "a drop of 1,111 coupons and a new user (a new passport, verified in full) each request: the first 1,111 win, everyone after them loses, as in the event this project started from.",
			ref:     target{name: "one EVAL per request", start: withTokens("fresh.txt", "fresh-", -1, redisRef(pepero, nil)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
			dibs: target{name: "dibs --redis", start: withTokens("fresh.txt", "fresh-", -1, redisNode(pepero, nil)), tokens: "fresh.txt", path: "/v1/drops/d/claims",
				metric: `dibs_gate_redis_calls_total{op="reserve"}`},
			want: 2,
		},
		scenario{
			section: "redis",
			name:    "Redis gate: winning claims",
			what:    "a drop of 10,000,000 coupons, a new user each request: every answer is a 201 after the gate script and the SQLite commit (WAL, synchronous=FULL).",
			ref:     target{name: "one EVAL per request", start: withTokens("fresh.txt", "fresh-", -1, redisRef(everyone, nil)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
			dibs:    target{name: "dibs --redis", start: withTokens("fresh.txt", "fresh-", -1, redisNode(everyone, nil)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
			want:    2,
		},
	)
}

// sellOutWarm sells the drop out and sends one loser, so a node has learnt
// the sell-out before the measurement, as it has a moment into a real one.
func sellOutWarm(url string) error {
	if err := sellOut(url); err != nil {
		return err
	}
	tok, err := passport.Issue([]byte(secret), "the-first-loser", time.Now(), time.Hour)
	if err != nil {
		return err
	}
	if err := post(url+"/v1/drops/d/claims", tok, "", http.StatusGone); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond)
	return nil
}

var (
	redisOnce sync.Once
	redisURL  string
	redisErr  error
)

// benchRedis starts the run's redis-server on first use.
func benchRedis() (string, error) {
	redisOnce.Do(func() {
		if _, err := exec.LookPath("redis-server"); err != nil {
			redisErr = fmt.Errorf("redis-server is needed (Debian: apt-get install redis-server)")
			return
		}
		addr, err := freeAddr()
		if err != nil {
			redisErr = err
			return
		}
		_, port, _ := net.SplitHostPort(addr)
		cmd := pinned(0, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if redisErr = cmd.Start(); redisErr != nil {
			return
		}
		cleanups = append(cleanups, func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(10 * time.Second); ; {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				redisErr = fmt.Errorf("redis-server did not listen on %s", addr)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		redisURL = "redis://" + addr + "/0"
	})
	return redisURL, redisErr
}

// freshPrefix keeps each measurement's keys apart.
func freshPrefix() string { return "bench-" + strings.ToLower(rand.Text()[:8]) + ":" }

// redisNode is dibsNode with the gate on the run's Redis.
func redisNode(dropJSON string, prepare func(url string) error) func(ctx context.Context, cfg config, addr string) (func(), error) {
	return func(ctx context.Context, cfg config, addr string) (func(), error) {
		url, err := benchRedis()
		if err != nil {
			return nil, err
		}
		return dibsNode(dropJSON, prepare, "--redis", url, "--redis-prefix", freshPrefix())(ctx, cfg, addr)
	}
}

// redisRef starts the per-request reference with one drop, prepared by
// prepare, on the run's Redis.
func redisRef(dropJSON string, prepare func(url string) error) func(ctx context.Context, cfg config, addr string) (func(), error) {
	return func(ctx context.Context, cfg config, addr string) (func(), error) {
		url, err := benchRedis()
		if err != nil {
			return nil, err
		}
		return server(dropJSON, prepare, filepath.Join(cfg.dir, "redisref"), "--redis", url, "--redis-prefix", freshPrefix())(ctx, cfg, addr)
	}
}
