package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/postgres/pgtest"
	"github.com/dibs-io/dibs/sqlite"
)

// The record benchmarks compare stores in one run: their contenders take
// turns, a batch or a round each, so that a machine whose load drifts
// weighs on all of them alike, and the results are ratios.
// docs/benchmarks.md has the figures.

// BenchmarkRecord measures durable winners per second through
// RecordClaims, one batch after another, on SQLite (a file in a temporary
// directory) and on PostgreSQL (the test database), at batch sizes 1, 64
// and 512.
//
//	TEST_DATABASE_URL=postgres://... go test -run '^$' -bench 'Record$' -benchtime 50x -count 3 ./cmd/dibs/
func BenchmarkRecord(b *testing.B) {
	dbURL := pgtest.URL(b)
	for _, size := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			lite, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "dibs.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer lite.Close()
			stores := []dibs.Store{lite, pgtest.MustOpenWith(b, dbURL, postgres.Options{RecordConns: 1})}
			drops := make([]*dibs.Drop, len(stores))
			for i, s := range stores {
				drops[i] = &dibs.Drop{ID: "bench", Title: "bench", Kind: dibs.KindCoupon, Stock: dibs.MaxStock}
				drops[i].Normalize(time.Now())
				if err := s.CreateDrop(ctx, drops[i]); err != nil {
					b.Fatal(err)
				}
			}
			spent := make([]time.Duration, len(stores))
			var slot int64
			for round := 0; b.Loop(); round++ {
				for k := range stores {
					i := (round + k) % len(stores) // who goes first alternates
					s := stores[i]
					claims := make([]*dibs.Claim, size)
					for j := range claims {
						slot++
						claims[j] = &dibs.Claim{
							ID: engine.NewClaimID(), DropID: drops[i].ID, UserID: fmt.Sprint("u", slot), Slot: slot, Nth: 1,
							State: dibs.ClaimConfirmed, CreatedAt: drops[i].CreatedAt, UpdatedAt: drops[i].CreatedAt,
						}
					}
					start := time.Now()
					res, err := s.RecordClaims(ctx, claims)
					spent[i] += time.Since(start)
					if err != nil {
						b.Fatal(err)
					}
					for _, r := range res {
						if r != nil {
							b.Fatal(r)
						}
					}
				}
			}
			n := float64(b.N * size)
			b.ReportMetric(n/spent[0].Seconds(), "sqlite-winners/s")
			b.ReportMetric(n/spent[1].Seconds(), "postgres-winners/s")
			b.ReportMetric(spent[0].Seconds()/spent[1].Seconds(), "postgres/sqlite")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkCommitters measures winners per second through the engine
// (memory gate, group commit) with 512 claimers at once, on PostgreSQL
// with 1, 2 and 4 commits in flight (the recorder's Committers, each on
// its own recording connection), against SQLite with its one committer.
// Each round gives every contender 2,048 claims in turn. It runs once on
// loopback and once through a proxy that delays every packet by 0.5 ms
// each way, as a database on another machine would.
//
//	TEST_DATABASE_URL=postgres://... go test -run '^$' -bench Committers -benchtime 10x -count 3 ./cmd/dibs/
func BenchmarkCommitters(b *testing.B) {
	for _, rtt := range []time.Duration{0, time.Millisecond} {
		b.Run(fmt.Sprintf("rtt=%s", rtt), func(b *testing.B) { benchCommitters(b, rtt) })
	}
}

func benchCommitters(b *testing.B, rtt time.Duration) {
	const claimers, round = 512, 2048
	dbURL := pgtest.URL(b)
	if rtt > 0 {
		u, err := url.Parse(dbURL)
		if err != nil {
			b.Fatal(err)
		}
		u.Host = delayProxy(b, u.Host, rtt/2)
		dbURL = u.String()
	}
	ctx := context.Background()
	type contender struct {
		name  string
		e     *engine.Engine
		spent time.Duration
	}
	var cs []*contender
	add := func(name string, s dibs.Store, committers int) {
		e := engine.New(engine.Config{Store: s, Gate: memory.NewGate(), Recorder: engine.RecorderConfig{Committers: committers}})
		if err := e.Open(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { e.Close() })
		if err := e.CreateDrop(ctx, &dibs.Drop{ID: "bench", Title: "bench", Kind: dibs.KindCoupon, Stock: dibs.MaxStock}); err != nil {
			b.Fatal(err)
		}
		cs = append(cs, &contender{name: name, e: e})
	}
	lite, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "dibs.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lite.Close() })
	add("sqlite-1", lite, 1)
	for _, n := range []int{1, 2, 4} {
		add(fmt.Sprintf("postgres-%d", n), pgtest.MustOpenWith(b, dbURL, postgres.Options{RecordConns: 4}), n)
	}

	var user atomic.Int64
	for turn := 0; b.Loop(); turn++ {
		for k := range cs {
			c := cs[(turn+k)%len(cs)] // who goes first rotates
			var left atomic.Int64
			left.Store(round)
			var wg sync.WaitGroup
			var failed atomic.Pointer[error]
			start := time.Now()
			for range claimers {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						_, _, err := c.e.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "bench", UserID: fmt.Sprint("u", user.Add(1))})
						if err != nil {
							failed.Store(&err)
						}
					}
				})
			}
			wg.Wait()
			c.spent += time.Since(start)
			if err := failed.Load(); err != nil {
				b.Fatalf("%s: %v", c.name, *err)
			}
		}
	}
	for _, c := range cs {
		b.ReportMetric(float64(b.N*round)/c.spent.Seconds(), c.name+"-winners/s")
		b.ReportMetric(meanBatch(b, c.e), c.name+"-claims/batch")
	}
	for _, c := range cs[1:] {
		b.ReportMetric(cs[1].spent.Seconds()/c.spent.Seconds(), c.name+"/postgres-1")
	}
	b.ReportMetric(0, "ns/op")
}

// delayProxy forwards TCP connections to target and holds every chunk of
// bytes for delay in each direction, in order: a network whose round trip
// is twice delay. It returns its address.
func delayProxy(tb testing.TB, target string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				server, err := net.Dial("tcp", target)
				if err != nil {
					client.Close()
					return
				}
				go delayCopy(server, client, delay)
				delayCopy(client, server, delay)
			}()
		}
	}()
	return ln.Addr().String()
}

func delayCopy(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		due  time.Time
		data []byte
	}
	chunks := make(chan chunk, 1024)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{time.Now().Add(delay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

// meanBatch is the mean number of claims per group commit of e.
func meanBatch(b *testing.B, e *engine.Engine) float64 {
	reg := prometheus.NewRegistry()
	if err := e.Register(reg); err != nil {
		b.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "dibs_recorder_batch_claims" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum() / float64(h.GetSampleCount())
		}
	}
	return 0
}
