package redis_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/room"
	"github.com/dibs-io/dibs/roomtest"
)

// TestRoomBytesPerPerson joins people to one waiting room in Redis and
// reports what each costs: the MEMORY USAGE of the room's keys, and the
// change of used_memory in INFO memory (noisy on a shared Redis). A
// million people (the figure in docs/benchmarks.md) take a while:
//
//	DIBS_ROOM_PEOPLE=1000000 TEST_REDIS_URL=redis://127.0.0.1:6379/0 \
//	  go test ./redis -run RoomBytesPerPerson -v
//
// By default it joins 100,000, where the room's 65,536 bucket keys weigh
// more per person; under 50 bytes a person is asserted from a million.
func TestRoomBytesPerPerson(t *testing.T) {
	people := 100_000
	if v := os.Getenv("DIBS_ROOM_PEOPLE"); v != "" {
		var err error
		if people, err = strconv.Atoi(v); err != nil || people < 1 {
			t.Fatalf("DIBS_ROOM_PEOPLE=%q", v)
		}
	}
	c := newClient(t)
	prefix := testenv.RedisPrefix(t, c)
	r, err := redisRoom(c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := room.New(room.Config{Backend: r, Secret: roomtest.Secret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := roomtest.NewDrop(1000, 500, dibs.OrderShuffle, time.Now().Add(time.Hour))
	if _, err := svc.Join(ctx, d, "first"); err != nil {
		t.Fatal(err)
	}
	before := usedMemory(t, c)
	start := time.Now()
	var wg sync.WaitGroup
	const workers = 64 // requests in flight: rueidis pipelines them
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
	used := usedMemory(t, c) - before
	keys, usage := keysUsage(t, c, prefix)
	t.Logf("%d people joined in %s (%.0f/s); %d keys use %.1f MB by MEMORY USAGE: %.1f bytes a person; used_memory grew %.1f MB: %.1f bytes a person",
		people, took.Round(time.Millisecond), float64(people)/took.Seconds(), keys, float64(usage)/1e6,
		float64(usage)/float64(people), float64(used)/1e6, float64(used)/float64(people))
	if people >= 1_000_000 && float64(usage)/float64(people) >= 50 {
		t.Fatalf("%.1f bytes a person, want under 50", float64(usage)/float64(people))
	}
}

func usedMemory(t *testing.T, c redis.Client) int64 {
	t.Helper()
	info, err := c.Do(context.Background(), c.B().Info().Section("memory").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

// keysUsage sums MEMORY USAGE over the keys under prefix.
func keysUsage(t *testing.T, c redis.Client, prefix string) (int, int64) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(5000).Build()).AsScanEntry()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, e.Elements...)
		if cursor = e.Cursor; cursor == 0 {
			break
		}
	}
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = c.B().MemoryUsage().Key(k).Samples(0).Build()
	}
	var total int64
	for _, res := range c.DoMulti(ctx, cmds...) {
		n, err := res.AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return len(keys), total
}
