package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
)

func TestLiveBus(t *testing.T) {
	t.Parallel()
	c := MustClient(t, testenv.RedisURL(t))
	prefix := testenv.RedisPrefix(t, c)
	ctx := context.Background()
	// On a starved machine the first connection can take longer than the
	// client's dial timeout; it keeps connecting in the background.
	testenv.WaitFor(t, "Redis to answer", func() bool { return c.Do(ctx, c.B().Ping().Build()).Error() == nil })
	bus, err := redis.NewLiveBus(c, redis.LiveBusOptions{Prefix: prefix, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	other, err := redis.NewLiveBus(c, redis.LiveBusOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := bus.Reports(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Reports of an empty bus: %v, %v; want none", got, err)
	}
	// node-a's report expires after a second; node-b's after a minute.
	if err := bus.Publish(ctx, "node-a", []byte(`{"seq":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := other.Publish(ctx, "node-b", []byte(`{"seq":7}`)); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, "node-a", []byte(`{"seq":2}`)); err != nil {
		t.Fatal(err)
	}
	got, err := other.Reports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got["node-a"]) != `{"seq":2}` || string(got["node-b"]) != `{"seq":7}` {
		t.Fatalf("Reports: %q, want node-a's newest and node-b's", got)
	}
	testenv.WaitFor(t, "node-a's report to expire and the node to be unlisted", func() bool {
		got, err := bus.Reports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, listed := got["node-a"]
		return !listed && len(got) == 1
	})
	members, err := c.Do(ctx, c.B().Smembers().Key(prefix+"{live}:nodes").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || members[0] != "node-b" {
		t.Fatalf("listed nodes %v, want node-b alone", members)
	}
}

func TestLiveBusOptions(t *testing.T) {
	t.Parallel()
	for _, o := range []redis.LiveBusOptions{{Prefix: "a{b}:"}, {TTL: time.Millisecond}, {TTL: -time.Second}, {TTL: 25 * time.Hour}} {
		if _, err := redis.NewLiveBus(nil, o); err == nil {
			t.Errorf("NewLiveBus(%+v): no error", o)
		}
	}
}
