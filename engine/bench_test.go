package engine_test

import (
	"context"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
)

// BenchmarkWinningClaims: every claim is a new user's win, durably recorded
// in SQLite before Claim returns.
func BenchmarkWinningClaims(b *testing.B) {
	bd := openBench(b)
	mustCreateB(b, bd.engine, "d", dibs.MaxStock)
	var n atomic.Int64
	b.SetParallelism(32) // many claims in flight, as under a spike
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, created, err := bd.engine.ClaimAndWait(context.Background(), dibs.ClaimRequest{DropID: "d", UserID: "u" + strconv.FormatInt(n.Add(1), 10)}); err != nil || !created {
				b.Fatalf("claim: %v", err)
			}
		}
	})
	b.StopTimer()
	reportRecorder(b, bd.engine)
}

// BenchmarkSoldOutClaims: every claim is a loser's, answered from the gate
// after the drop sold out, the hot path of a spike.
func BenchmarkSoldOutClaims(b *testing.B) {
	bd := openBench(b)
	mustCreateB(b, bd.engine, "d", 1)
	if _, _, err := bd.engine.ClaimAndWait(context.Background(), dibs.ClaimRequest{DropID: "d", UserID: "winner"}); err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			user := "u" + strconv.FormatInt(n.Add(1), 10)
			if _, err := bd.engine.Claim(context.Background(), dibs.ClaimRequest{DropID: "d", UserID: user}); dibs.ErrorCode(err) != dibs.ESOLDOUT {
				b.Fatalf("claim on a sold-out drop: %v", err)
			}
		}
	})
}

// reportRecorder adds the mean batch size and commit time to the result.
func reportRecorder(b *testing.B, e *engine.Engine) {
	reg := prometheus.NewRegistry()
	if err := e.Register(reg); err != nil {
		b.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		h := mf.GetMetric()[0].GetHistogram()
		switch mf.GetName() {
		case "dibs_recorder_batch_claims":
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "claims/batch")
		case "dibs_recorder_commit_seconds":
			b.ReportMetric(1e6*h.GetSampleSum()/float64(h.GetSampleCount()), "µs/commit")
		}
	}
}

func openBench(b *testing.B) *bundle {
	b.Helper()
	return openTB(b, filepath.Join(b.TempDir(), "dibs.db"))
}

func mustCreateB(b *testing.B, e *engine.Engine, id string, stock int64) {
	b.Helper()
	if err := e.CreateDrop(context.Background(), &dibs.Drop{ID: id, Title: id, Kind: dibs.KindCoupon, Stock: stock}); err != nil {
		b.Fatal(err)
	}
}
