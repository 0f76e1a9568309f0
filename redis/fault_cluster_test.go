package redis_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/gatetest"
	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/roomtest"
)

// TestFaultRedisClusterConformance runs the gate's and the waiting room's
// conformance suites on a real Redis Cluster of three primaries, each with
// a replica (six redis-server processes joined by redis-cli --cluster
// create), through the client dibs makes from any one node's URL: every
// drop's keys share a hash tag, so each script finds all its keys in one
// slot, whichever primary serves it.
func TestFaultRedisClusterConformance(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	// A primary busy for longer than the node timeout is failed over,
	// which the suites, run without faults, do not expect: on a starved
	// machine a node can stall for seconds.
	c := redisserver.StartCluster(t, 3, 1, 30*time.Second)
	// dibs's own client, waiting up to a minute for an answer instead of
	// 3 s, and gates whose calls may take as long instead of 1 s: the
	// suites check answers, not latency. Their stampede sends 2,000 claims
	// at once through one pipeline per node, which under the race detector
	// on two starved cores shared with six redis-servers moves at a few
	// hundred calls a second; and one of the room's cases wins ticket
	// 2^32-1, whose bit makes a 512 MB bitmap a starved node takes seconds
	// to allocate.
	client := MustClient(t, c.URL()+"?write_timeout=1m")
	if got := redis.Mode(client); got != rueidis.ClientModeCluster {
		t.Fatalf("client mode = %s, want %s", got, rueidis.ClientModeCluster)
	}
	// Each gate and room has a prefix of its own; the keys go with the
	// cluster's processes (the shared helpers' clean-up unlinks keys of
	// many slots at once, which a Cluster refuses).
	var n atomic.Int64
	prefix := func() string { return fmt.Sprintf("fault-%d:", n.Add(1)) }
	t.Run("Gate", func(t *testing.T) {
		gatetest.Run(t, func(t *testing.T) dibs.Gate {
			return MustGate(t, client, redis.GateOptions{Prefix: prefix(), Timeout: time.Minute})
		})
	})
	t.Run("Room", func(t *testing.T) {
		roomtest.Run(t, func(t *testing.T) dibs.Room {
			r, err := redisRoom(client, prefix())
			if err != nil {
				t.Fatal(err)
			}
			return r
		})
	})
}
