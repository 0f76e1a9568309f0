package redis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/gatetest"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/redis"
)

// BenchmarkGate compares parallel reserves (new users on a drop that never
// sells out) and sold-out answers of the memory gate, the Redis gate, and
// the Redis gate as a per-request reference (EVAL each call, a connection
// per command, no sold-out cache):
//
//	TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Gate -cpu 64 ./redis
func BenchmarkGate(b *testing.B) {
	url := testenv.RedisURL(b)
	b.Run("memory", func(b *testing.B) {
		gatetest.BenchmarkReserve(b, func(b *testing.B) dibs.Gate { return memory.NewGate() })
	})
	b.Run("redis", func(b *testing.B) {
		client := MustClient(b, url)
		gatetest.BenchmarkReserve(b, func(b *testing.B) dibs.Gate { return benchGate(b, client, redis.GateOptions{}) })
	})
	b.Run("redis-reference", func(b *testing.B) {
		client, err := redis.NewClient(url, redis.ClientOptions{NoAutoPipelining: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(client.Close)
		gatetest.BenchmarkReserve(b, func(b *testing.B) dibs.Gate { return benchGate(b, client, redis.GateOptions{Reference: true}) })
	})
}

// benchGate is a started gate whose sold-out cache is in place before a
// sub-benchmark measures sold-out answers.
func benchGate(b *testing.B, client redis.Client, opts redis.GateOptions) dibs.Gate {
	return settled{MustGate(b, client, opts)}
}

// settled waits, after the first sold-out answer, until the node answers
// from memory: the benchmark measures the steady state of a sell-out.
type settled struct{ *redis.Gate }

func (s settled) Reserve(ctx context.Context, r dibs.ReserveRequest) (dibs.Hold, error) {
	h, err := s.Gate.Reserve(ctx, r)
	if dibs.ErrorCode(err) == dibs.ESOLDOUT {
		s.Settle(r.Drop.ID)
	}
	return h, err
}

// BenchmarkSoldOutRoster measures what a node pays when a drop sells out:
// loading the roster of holders' fingerprints, from the first "sold out"
// to the first answer from memory, for 1,111 and 1,000,000 holders.
//
//	TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Roster -benchtime 5x ./redis
func BenchmarkSoldOutRoster(b *testing.B) {
	url := testenv.RedisURL(b)
	client := MustClient(b, url)
	for _, holders := range []int{1111, 1_000_000} {
		b.Run(strconv.Itoa(holders), func(b *testing.B) {
			ctx := context.Background()
			prefix := testenv.RedisPrefix(b, client)
			d := gatetest.NewDrop(int64(holders), 1)
			gatetest.MustPrepare(b, MustGate(b, client, redis.GateOptions{Prefix: prefix}), d)
			// Fill the roster and take every slot without a million
			// reserves: the roster is all a sold-out answer reads.
			fill := MustGate(b, client, redis.GateOptions{Prefix: prefix})
			buf := make([]byte, 8)
			for done := 0; done < holders; {
				n := min(holders-done, 1<<14)
				chunk := make([]byte, 0, 16*n)
				for range n {
					rand.Read(buf)
					chunk = hex.AppendEncode(chunk, buf)
				}
				if err := client.Do(ctx, client.B().Append().Key(fill.Key(d.ID, "roster")).Value(string(chunk)).Build()).Error(); err != nil {
					b.Fatal(err)
				}
				done += n
			}
			if err := client.Do(ctx, client.B().Hset().Key(fill.Key(d.ID, "state")).FieldValue().FieldValue("left", "0").Build()).Error(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				g := MustGate(b, client, redis.GateOptions{Prefix: prefix, Timeout: 10 * time.Second}) // a node that has not seen the sell-out
				gatetest.MustPrepare(b, g, d)
				if _, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: "loser", ClaimID: "l", Now: time.Now()}); dibs.ErrorCode(err) != dibs.ESOLDOUT {
					b.Fatal(err)
				}
				g.Settle(d.ID)
				if !g.SoldOutCached(d.ID) {
					b.Fatal("no sold-out cache after the roster loaded")
				}
			}
			b.ReportMetric(float64(holders*16)/1e6, "MB-in-redis")
			b.ReportMetric(float64(holders*8)/1e6, "MB-per-node")
		})
	}
}
