package sqlite_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/storetest"
)

// BenchmarkRecordClaims: durable winners per second through group commit,
// at several batch sizes. Batch size 1 is one transaction (one fsync) per
// winner: the reference group commit is measured against.
func BenchmarkRecordClaims(b *testing.B) {
	for _, size := range []int{1, 32, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := MustOpen(b)
			d := storetest.MustCreateDrop(b, s, dibs.MaxStock, 1)
			now := time.Now()
			slot := int64(0)
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i += size {
				batch := make([]*dibs.Claim, 0, size)
				for range size {
					slot++
					batch = append(batch, &dibs.Claim{ID: engine.NewClaimID(), DropID: d.ID, UserID: fmt.Sprintf("user-%d", slot*7919%1000003), Slot: slot, Nth: 1,
						State: dibs.ClaimConfirmed, CreatedAt: now, UpdatedAt: now})
				}
				if _, err := s.RecordClaims(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
			// CPU per claim does not depend on how long fsync waits on a
			// shared disk, so it compares runs better than the wall clock.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/claim")
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
