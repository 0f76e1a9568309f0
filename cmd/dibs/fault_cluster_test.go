package main_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/postgres/pgtest"
)

// TestFaultRedisClusterFailover is a failover on a Redis Cluster: three
// dibs serve nodes share a PostgreSQL record and a real Cluster of three
// primaries with a replica each, knowing only one node's URL. Mid-spike,
// over all three nodes, the primary serving the drop's slot is killed
// (-9) and the Cluster promotes its replica by itself. No acknowledged
// winner is lost, the record never holds more than the stock, claims
// resume within ten seconds of the kill, and once the holds the failover
// stranded come back (the reconcile grace) the drop ends with exactly its
// stock of winners.
func TestFaultRedisClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end failover test")
	}
	t.Parallel()
	testenv.RedisURL(t)
	const stock, users = 300, 1200
	// A primary silent for 2 s is failed; its replica asks for votes up to
	// a second later.
	rc := redisserver.StartCluster(t, 3, 1, 2*time.Second)
	nodes := startCluster(t, 3, []string{
		"--redis", rc.URL(), "--redis-prefix", "fault:", "--postgres", pgtest.SchemaURL(t),
		"--postgres-record-conns", "2", "--postgres-background-conns", "1", "--postgres-read-conns", "2",
		"--reconcile-interval", "1s", "--reconcile-grace", "3s",
	})
	createDrop(t, nodes[0].url, fmt.Sprintf(`{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":%d}`, stock))
	everyNode(t, "the drop open", nodes, time.Now(), func(url string) bool { return dropState(url, "pepero") == "open" })
	const key = "fault:{drop:pepero}:state"
	primary := rc.PrimaryOf(t, key)
	replica := rc.ReplicaOf(t, primary)

	spike := newFaultSpike(t, "pepero", stock, urls(nodes))
	spike.run(48, users, func() {
		primary.Kill(t)
		spike.struck()
	})
	if got := rc.PrimaryOf(t, key); got != replica {
		t.Fatalf("the drop's slot is served by the node on port %d, want its promoted replica %d", got.Port, replica.Port)
	}
	// Failure detection (2 s), the replica's election (up to a second),
	// the nodes' clients finding the new slot owner: ten seconds is the
	// longest claim pause a failover may cause.
	pause := spike.pause()
	if pause > 10*time.Second {
		t.Errorf("claims paused %v after the primary died, want at most 10 s", pause)
	}
	winners := spike.finish(nodes[1].url)
	t.Logf("%d claims acknowledged during the spike, all in the record of %d winners; claims paused %v by the failover",
		len(spike.acked), len(winners), pause.Round(time.Millisecond))
}
