package redis_test

import (
	"context"
	"crypto/rand"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/roomtest"
)

// newClient connects to the test Redis, or skips (fails under CI).
func newClient(tb testing.TB) rueidis.Client {
	tb.Helper()
	u, err := url.Parse(testenv.RedisURL(tb))
	if err != nil {
		tb.Fatal(err)
	}
	// A connection waits 30 s for an answer, as MustClient's do.
	opt := rueidis.ClientOption{InitAddress: []string{u.Host}, DisableCache: true, ConnWriteTimeout: 30 * time.Second}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if opt.SelectDB, err = strconv.Atoi(db); err != nil {
			tb.Fatalf("redis db %q: %v", db, err)
		}
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// testPrefix returns a key prefix of the test's own and removes its keys
// when the test ends.
func testPrefix(tb testing.TB, c rueidis.Client) string {
	tb.Helper()
	prefix := "test-room-" + strings.ToLower(rand.Text()[:10]) + ":"
	tb.Cleanup(func() {
		ctx := context.Background()
		var cursor uint64
		for {
			e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				tb.Logf("scan test keys: %v", err)
				return
			}
			if len(e.Elements) > 0 {
				c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
	return prefix
}

func newRoom(tb testing.TB, c rueidis.Client) *redis.Room {
	tb.Helper()
	r, err := redisRoom(c, testPrefix(tb, c))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func redisRoom(c rueidis.Client, prefix string) (*redis.Room, error) {
	return redis.NewRoom(c, redis.RoomOptions{Prefix: prefix})
}

func TestRoomConformance(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	roomtest.Run(t, func(t *testing.T) dibs.Room { return newRoom(t, c) })
}

func TestRoomPrefixWithoutBraces(t *testing.T) {
	t.Parallel()
	if _, err := redis.NewRoom(nil, redis.RoomOptions{Prefix: "a{b}"}); err == nil {
		t.Fatal("a prefix with a hash tag was accepted")
	}
}
