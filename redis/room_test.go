package redis_test

import (
	"testing"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/roomtest"
)

// newClient connects to the test Redis, or skips (fails under CI).
func newClient(tb testing.TB) redis.Client {
	tb.Helper()
	return testenv.RedisClient(tb, testenv.RedisURL(tb))
}

func newRoom(tb testing.TB, c redis.Client) *redis.Room {
	tb.Helper()
	r, err := redisRoom(c, testenv.RedisPrefix(tb, c))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func redisRoom(c redis.Client, prefix string) (*redis.Room, error) {
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
