package main

import (
	neturl "net/url"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5"

	"context"
	"net/http"
	"time"

	"github.com/dibs-io/dibs/passport"
)

// scenarios are the comparisons make bench runs, in order.
var scenarios = []scenario{
	{
		name: "sold-out claims",
		what: "a sold-out coupon drop; 20,000 users' passports cycled, so each user presses about five times a run, as people do after a sell-out. The reference reads the request and answers a fixed 410.",
		ref:  target{name: "HTTP ceiling", start: withTokens("losers.txt", "loser-", 20_000, ceiling), tokens: "losers.txt", path: "/v1/drops/d/claims"},
		dibs: target{name: "dibs", start: withTokens("losers.txt", "loser-", 20_000, dibsNode(`{"id":"d","title":"sold out","kind":"coupon","stock":1}`, sellOut)), tokens: "losers.txt", path: "/v1/drops/d/claims"},
		want: 0.8,
	},
	{
		name: "sold-out claims, a new passport each",
		what: "as above, but no passport is seen twice: every request pays for a full passport verification.",
		ref:  target{name: "HTTP ceiling", start: withTokens("fresh.txt", "fresh-", -1, ceiling), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		dibs: target{name: "dibs", start: withTokens("fresh.txt", "fresh-", -1, dibsNode(`{"id":"d","title":"sold out","kind":"coupon","stock":1}`, sellOut)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		want: 0.5,
	},
	{
		name: "winning claims",
		what: "a drop of 10,000,000 coupons, a new user each request: every answer is a 201 for a claim committed to SQLite (WAL, synchronous=FULL) before the answer.",
		ref:  target{name: "HTTP ceiling", start: withTokens("fresh.txt", "fresh-", -1, ceiling), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		dibs: target{name: "dibs", start: withTokens("fresh.txt", "fresh-", -1, dibsNode(`{"id":"d","title":"everyone wins","kind":"coupon","stock":10000000}`, nil)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		want: 0.5,
	},
	{
		name: "winning claims, PostgreSQL record",
		what: "as above with `--postgres`: the claims are committed to PostgreSQL (synchronous_commit on) on this machine, over loopback, in a schema of their own each run.",
		ref:  target{name: "HTTP ceiling", start: withTokens("fresh.txt", "fresh-", -1, ceiling), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		dibs: target{name: "dibs --postgres", start: withTokens("fresh.txt", "fresh-", -1, dibsOnPostgres(`{"id":"d","title":"everyone wins","kind":"coupon","stock":10000000}`, nil)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		want: 0.5,
	},
	{
		name: "winning claims vs naive PostgreSQL",
		what: "as above, against the source documents' version 0: one PostgreSQL transaction per claim that takes a unit off a stock row (`UPDATE stock SET n = n - 1 WHERE n > 0`) and inserts the winner, 32 pooled connections, synchronous_commit on. Every winner waits for the row lock of the winner before it.",
		ref:  target{name: "naive PostgreSQL", start: withTokens("fresh.txt", "fresh-", -1, naivePG(10_000_000)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		dibs: target{name: "dibs", start: withTokens("fresh.txt", "fresh-", -1, dibsNode(`{"id":"d","title":"everyone wins","kind":"coupon","stock":10000000}`, nil)), tokens: "fresh.txt", path: "/v1/drops/d/claims"},
		want: 30,
	},
}

// withTokens mints the passport file a target's client needs before the
// target starts (n < 0: cfg.tokens of them).
func withTokens(file, prefix string, n int, start func(ctx context.Context, cfg config, addr string) (func(), error)) func(ctx context.Context, cfg config, addr string) (func(), error) {
	return func(ctx context.Context, cfg config, addr string) (func(), error) {
		if n < 0 {
			n = cfg.tokens
		}
		if err := mintTokens(cfg, file, prefix, n); err != nil {
			return nil, err
		}
		return start(ctx, cfg, addr)
	}
}

// sellOut takes the only slot of drop d.
func sellOut(url string) error {
	tok, err := passport.Issue([]byte(secret), "the-winner", time.Now(), time.Hour)
	if err != nil {
		return err
	}
	return post(url+"/v1/drops/d/claims", tok, "", http.StatusCreated)
}

// dibsOnPostgres starts a dibs node whose record is a fresh schema of the
// benchmark database, with extra arguments. If peer is not nil, it is set
// to the arguments a second node needs to share that record.
func dibsOnPostgres(dropJSON string, peer *[]string, extra ...string) func(ctx context.Context, cfg config, addr string) (func(), error) {
	return func(ctx context.Context, cfg config, addr string) (func(), error) {
		url := databaseURL()
		schema := "bench_dibs_" + strconv.FormatInt(time.Now().UnixNano(), 36)
		q, err := neturl.Parse(url)
		if err != nil {
			return nil, err
		}
		v := q.Query()
		v.Set("search_path", schema)
		q.RawQuery = v.Encode()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, err
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			return nil, err
		}
		args := append([]string{"--postgres", q.String()}, extra...)
		stop, err := dibsNode(dropJSON, nil, args...)(ctx, cfg, addr)
		if err != nil {
			return nil, err
		}
		if peer != nil {
			*peer = args
		}
		return func() {
			stop()
			if c, err := pgx.Connect(context.Background(), url); err == nil {
				c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
				c.Close(context.Background())
			}
		}, nil
	}
}

func databaseURL() string {
	if url := os.Getenv("TEST_DATABASE_URL"); url != "" {
		return url
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}
