package gatetest

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
)

// BenchmarkReserve measures parallel reserves of new users on a drop that
// never sells out, and sold-out answers, on gates made by newGate. Every
// gate runs the same benchmark; BenchmarkMutexReference is the reference:
// the least a reserve can cost, a mutex-guarded counter.
func BenchmarkReserve(b *testing.B, newGate func(b *testing.B) dibs.Gate) {
	b.Run("new-users", func(b *testing.B) {
		g := newGate(b)
		d := NewDrop(dibs.MaxStock, 1)
		if err := g.Prepare(context.Background(), d, nil); err != nil {
			b.Fatal(err)
		}
		var n atomic.Int64
		now := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := strconv.FormatInt(n.Add(1), 10)
				if _, err := g.Reserve(context.Background(), dibs.ReserveRequest{Drop: d, UserID: "u" + i, ClaimID: "c" + i, Now: now}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reserves/s")
	})
	b.Run("sold-out", func(b *testing.B) {
		g := newGate(b)
		d := NewDrop(1, 1)
		if err := g.Prepare(context.Background(), d, nil); err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		g.Reserve(context.Background(), dibs.ReserveRequest{Drop: d, UserID: "winner", ClaimID: "w", Now: now})
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := g.Reserve(context.Background(), dibs.ReserveRequest{Drop: d, UserID: "loser", ClaimID: "l", Now: now}); dibs.ErrorCode(err) != dibs.ESOLDOUT {
					b.Fatalf("reserve on a sold-out drop: %v", err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
	})
}

// BenchmarkMutexReference is a mutex-guarded counter incremented in
// parallel: the floor any gate's reserve is compared with.
func BenchmarkMutexReference(b *testing.B) {
	var mu sync.Mutex
	var n int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			mu.Unlock()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
