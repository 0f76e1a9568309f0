package main_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
)

// TestFaultSentinelFailover is a Redis failover through Sentinel, with real
// processes: a primary, a replica and three sentinels, and a dibs serve
// node given the sentinels' URL. The node starts before the sentinels do
// and serves 503 meanwhile, then finds the primary through them by itself.
// Mid-spike the primary is killed (-9); the sentinels promote the replica
// and the node follows it with nobody telling it: the gate is rebuilt from
// the record, claims resume within ten seconds of the kill, every
// acknowledged winner is in the record, and the drop ends with exactly its
// stock of winners.
func TestFaultSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end failover test")
	}
	t.Parallel()
	testenv.RedisURL(t)
	const stock, users = 300, 1200
	primary := redisserver.Start(t, "--repl-diskless-sync-delay", "0")
	replica := redisserver.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port))
	redisserver.WaitFor(t, 30*time.Second, "replication link up", func() bool {
		return replica.Info("replication", "master_link_status") == "up"
	})
	sentinels := redisserver.NewSentinels(t, "dibs", primary, 3)

	n := startNode(t, t.TempDir(), "--redis", sentinels.URL(), "--redis-prefix", "fault:",
		"--reconcile-interval", "1s", "--reconcile-grace", "3s")
	if code := status(http.DefaultClient, n.url+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the sentinels down = %d, want 503", code)
	}
	if code := status(http.DefaultClient, n.url+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz with the sentinels down = %d, want 200", code)
	}
	sentinels.Start(t)
	sentinels.WaitReady(t, 1)
	// Within 30 s: the node retries every 2 s at most, and the sentinels
	// take seconds to agree on a starved machine.
	redisserver.WaitFor(t, 30*time.Second, "node ready through the sentinels", func() bool {
		return status(http.DefaultClient, n.url+"/readyz") == http.StatusOK
	})
	createDrop(t, n.url, fmt.Sprintf(`{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":%d}`, stock))

	rebuilds := metricSum(t, n.url, "dibs_gate_redis_calls_total", `op="rebuild"`)
	spike := newFaultSpike(t, "pepero", stock, []string{n.url})
	spike.run(32, users, func() {
		primary.Kill(t)
		spike.struck()
	})
	if got := sentinels.MasterAddr(t); got != replica.Addr() {
		t.Fatalf("the sentinels name %s the master, want the replica %s", got, replica.Addr())
	}
	if metricSum(t, n.url, "dibs_gate_redis_calls_total", `op="rebuild"`) == rebuilds {
		t.Fatal("the gate was not rebuilt from the record on the promoted replica")
	}
	// The sentinels call the primary down after 1.5 s of silence and
	// promote the replica a second or two later; ten seconds is the
	// longest claim pause a failover may cause.
	pause := spike.pause()
	if pause > 10*time.Second {
		t.Errorf("claims paused %v after the primary died, want at most 10 s", pause)
	}
	winners := spike.finish(n.url)
	t.Logf("%d claims acknowledged during the spike, all in the record of %d winners; claims paused %v by the failover",
		len(spike.acked), len(winners), pause.Round(time.Millisecond))
}

// metricSum is the sum of a metric's samples on a node whose labels
// contain sel.
func metricSum(t *testing.T, url, name, sel string) float64 {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var sum float64
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || !strings.Contains(line, sel) {
			continue
		}
		var v float64
		fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v)
		sum += v
	}
	return sum
}
