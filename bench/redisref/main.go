// Command redisref is the per-request Redis reference for benchmarks: the
// same HTTP layer, engine and SQLite record as `dibs serve --redis`, with
// the same gate scripts, but each claim sends its script with EVAL on a
// connection of its own (no auto-pipelining) and every answer, sold out or
// not, asks Redis (no sold-out cache). Only what dibs adds on top of "one
// EVAL per request" differs.
//
//	redisref --addr 127.0.0.1:8083 --data DIR --redis redis://127.0.0.1:6379/0 --redis-prefix bench:
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/sqlite"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8083", "listen address")
	data := flag.String("data", "data", "directory of the record (SQLite)")
	url := flag.String("redis", "redis://127.0.0.1:6379/0", "Redis primary")
	prefix := flag.String("redis-prefix", "dibs-ref:", "prefix of every key")
	flag.Parse()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if err := os.MkdirAll(*data, 0o750); err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.Open(ctx, filepath.Join(*data, "dibs.db"))
	if err != nil {
		log.Fatal(err)
	}
	client, err := redis.NewClient(*url, redis.ClientOptions{NoAutoPipelining: true})
	if err != nil {
		log.Fatal(err)
	}
	e := engine.New(engine.Config{Store: store, Gate: redis.NewGate(client, redis.GateOptions{Prefix: *prefix, Reference: true, Logger: logger}), Logger: logger})
	if err := e.Open(ctx); err != nil {
		log.Fatal(err)
	}
	verifier, err := passport.NewVerifier([]byte(os.Getenv("DIBS_PASSPORT_SECRET")), passport.Options{})
	if err != nil {
		log.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{Drops: e, Claims: e, Passports: verifier, AdminToken: os.Getenv("DIBS_ADMIN_TOKEN"), Limits: httpapi.DefaultLimits, Logger: logger})
	log.Fatal(http.ListenAndServe(*addr, api))
}
