package redisserver

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs/internal/testenv"
)

// Cluster is a Redis Cluster of redis-server processes on loopback ports.
type Cluster struct {
	Nodes []*Server
}

// StartCluster runs primaries × (1 + replicas) nodes with cluster mode on
// and cluster-node-timeout nodeTimeout (a primary silent that long is
// failed, and its replica promotes itself a second or so later), joins them with redis-cli --cluster create, waits until every node says
// the cluster is up and every replica is in sync, and stops them when tb
// ends.
func StartCluster(tb testing.TB, primaries, replicas int, nodeTimeout time.Duration) *Cluster {
	tb.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if !testenv.CI() {
			tb.Skip("redis-cli is not installed")
		}
		tb.Fatal(err)
	}
	c := &Cluster{}
	create := []string{"--cluster", "create"}
	for range primaries * (1 + replicas) {
		// The bus port is chosen too: the default, port+10000, may be
		// taken or past 65535.
		n := Start(tb, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(FreePort(tb)),
			"--cluster-node-timeout", strconv.Itoa(int(nodeTimeout.Milliseconds())))
		c.Nodes = append(c.Nodes, n)
		create = append(create, n.Addr())
	}
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, create...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli %s: %v\n%s", strings.Join(create, " "), err, out)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, n := range c.Nodes {
				tb.Logf("cluster node %d:\n%s", n.Port, n.LogTail(30))
			}
		}
	})
	c.WaitOK(tb)
	return c
}

// URL names one node; a client discovers the others from it.
func (c *Cluster) URL() string { return c.Nodes[0].URL() }

// WaitOK waits until every running node says cluster_state:ok and every
// running replica's link to its primary is up.
func (c *Cluster) WaitOK(tb testing.TB) {
	tb.Helper()
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		WaitFor(tb, 60*time.Second, fmt.Sprintf("cluster node %d ok", n.Port), func() bool {
			m, err := n.Query("CLUSTER", "INFO")
			if err != nil {
				return false
			}
			info, _ := m.ToString()
			if !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			return n.Info("replication", "role") == "master" || n.Info("replication", "master_link_status") == "up"
		})
	}
}

// PrimaryOf is the node that serves key's slot now, as a running node
// sees it.
func (c *Cluster) PrimaryOf(tb testing.TB, key string) *Server {
	tb.Helper()
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		m, err := n.Query("CLUSTER", "KEYSLOT", key)
		if err != nil {
			continue
		}
		slot, _ := m.AsInt64()
		m, err = n.Query("CLUSTER", "SLOTS")
		if err != nil {
			continue
		}
		ranges, _ := m.ToArray()
		for _, r := range ranges {
			f, _ := r.ToArray()
			if len(f) < 3 {
				continue
			}
			lo, _ := f[0].AsInt64()
			hi, _ := f[1].AsInt64()
			if slot < lo || slot > hi {
				continue
			}
			if s := c.at(f[2]); s != nil {
				return s
			}
		}
	}
	tb.Fatalf("no node serves the slot of %s", key)
	return nil
}

// ReplicaOf is a node that replicates primary.
func (c *Cluster) ReplicaOf(tb testing.TB, primary *Server) *Server {
	tb.Helper()
	for _, n := range c.Nodes {
		if n != primary && n.cmd != nil && n.Info("replication", "master_port") == strconv.Itoa(primary.Port) {
			return n
		}
	}
	tb.Fatalf("no replica of the node on port %d", primary.Port)
	return nil
}

// at is the node of a CLUSTER SLOTS address entry [ip, port, id, ...].
func (c *Cluster) at(entry rueidis.RedisMessage) *Server {
	f, _ := entry.ToArray()
	if len(f) < 2 {
		return nil
	}
	port, _ := f[1].AsInt64()
	for _, n := range c.Nodes {
		if int64(n.Port) == port {
			return n
		}
	}
	return nil
}
