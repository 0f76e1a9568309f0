package memory_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/room"
	"github.com/dibs-io/dibs/roomtest"
)

// TestRoomMemoryPerPerson: a million people joining one waiting room grow
// the heap by less than 50 MB. Run alone for the figure in
// docs/benchmarks.md:
//
//	go test ./memory -run RoomMemoryPerPerson -v
func TestRoomMemoryPerPerson(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("joins a million people: not with -short or the race detector")
	}
	const people = 1_000_000
	svc, err := room.New(room.Config{Backend: memory.NewRoom(), Secret: roomtest.Secret})
	if err != nil {
		t.Fatal(err)
	}
	d := roomtest.NewDrop(1000, 500, dibs.OrderShuffle, time.Now().Add(time.Hour))
	ctx := context.Background()
	if _, err := svc.Join(ctx, d, "first"); err != nil { // the room itself is not a person's cost
		t.Fatal(err)
	}
	before := heap()
	start := time.Now()
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < people; i += workers {
				if _, err := svc.Join(ctx, d, fmt.Sprintf("user-%07d", i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	grew := heap() - before
	runtime.KeepAlive(svc)
	t.Logf("%d people joined in %s (%.0f/s); heap grew %.1f MB, %.1f bytes a person",
		people, took.Round(time.Millisecond), people/took.Seconds(), float64(grew)/1e6, float64(grew)/people)
	if grew >= 50e6 {
		t.Fatalf("a million people cost %.1f MB, want under 50 MB", float64(grew)/1e6)
	}
}

func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
