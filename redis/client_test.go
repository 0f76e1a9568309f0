package redis_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
)

// waitConnected pings through c until Redis answers, or fails tb.
func waitConnected(tb testing.TB, c redis.Client) {
	tb.Helper()
	testenv.WaitFor(tb, "the client connects after redis came back", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Do(ctx, c.B().Ping().Build()).Error() == nil
	})
}

// TestClientWhileRedisDown: a client made while its Redis is down is a
// client all the same; its calls fail at once with the cause, and once the
// server is up it connects by itself.
func TestClientWhileRedisDown(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	srv := redisserver.Start(t)
	srv.Kill(t)

	c, err := redis.NewClient(srv.URL(), redis.ClientOptions{})
	if err != nil {
		t.Fatalf("client with redis down = %v, want a client", err)
	}
	defer c.Close()
	start := time.Now()
	err = c.Do(context.Background(), c.B().Ping().Build()).Error()
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("ping with redis down = %v, want connection refused", err)
	}
	// The call fails with the cause of the last failed connect, without
	// dialling; a call that waited for the server instead would not return
	// before the server is back (below). It takes milliseconds; the bound
	// leaves a starved machine seconds of margin.
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("ping with redis down took %v, want a prompt failure", took)
	}
	if err := c.Receive(context.Background(), c.B().Subscribe().Channel("x").Build(), func(rueidis.PubSubMessage) {}); err == nil {
		t.Fatal("subscribe with redis down succeeded")
	}

	srv.Restart(t)
	waitConnected(t, c)
	if got := redis.Mode(c); got != rueidis.ClientModeStandalone {
		t.Fatalf("mode = %s, want %s", got, rueidis.ClientModeStandalone)
	}
	key := "{x}:k"
	if err := c.Do(context.Background(), c.B().Set().Key(key).Value("v").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Do(context.Background(), c.B().Get().Key(key).Build()).ToString(); err != nil || got != "v" {
		t.Fatalf("get = %q, %v", got, err)
	}
}

// TestClientFindsClusterLate: a client made while a Cluster is down is a
// Cluster client once it connects, and a command built before then is
// refused (the caller retries) rather than sent unroutable.
func TestClientFindsClusterLate(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	// A one-node Cluster that owns every slot; its nodes.conf, in the
	// server's directory, keeps that across the restart.
	srv := redisserver.Start(t, "--cluster-enabled", "yes")
	srv.MustDo(t, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
	waitClusterOK(t, srv)
	srv.Kill(t)

	c, err := redis.NewClient(srv.URL(), redis.ClientOptions{})
	if err != nil {
		t.Fatalf("client with the cluster down = %v, want a client", err)
	}
	defer c.Close()
	early := c.B().Set().Key("{drop:a}:k").Value("v").Build()

	srv.Restart(t)
	waitConnected(t, c)
	if got := redis.Mode(c); got != rueidis.ClientModeCluster {
		t.Fatalf("mode = %s, want %s", got, rueidis.ClientModeCluster)
	}
	if err := c.Do(context.Background(), early).Error(); err == nil {
		t.Fatal("a command built before the client connected went to the cluster")
	}
	waitClusterOK(t, srv) // a restarted node takes a moment to call its cluster up
	for i := range 20 {   // keys all over the slot range
		key := "{drop:" + strconv.Itoa(i) + "}:k"
		if err := c.Do(context.Background(), c.B().Set().Key(key).Value("v").Build()).Error(); err != nil {
			t.Fatalf("set %s = %v", key, err)
		}
	}
}

// waitClusterOK waits until the node says its cluster is up, or fails t.
func waitClusterOK(t *testing.T, srv *redisserver.Server) {
	t.Helper()
	testenv.WaitFor(t, "the cluster is up", func() bool { return clusterOK(srv) })
}

// clusterOK reports whether CLUSTER INFO says cluster_state:ok.
func clusterOK(srv *redisserver.Server) bool {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, ForceSingleClient: true, DisableCache: true})
	if err != nil {
		return false
	}
	defer c.Close()
	info, err := c.Do(context.Background(), c.B().ClusterInfo().Build()).ToString()
	return err == nil && strings.Contains(info, "cluster_state:ok")
}
