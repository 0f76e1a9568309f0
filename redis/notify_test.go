package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
)

// subscribers is how many clients listen on channel.
func subscribers(t *testing.T, c redis.Client, channel string) int64 {
	t.Helper()
	m, err := c.Do(context.Background(), c.B().PubsubNumsub().Channel(channel).Build()).AsIntMap()
	if err != nil {
		t.Fatalf("pubsub numsub: %v", err)
	}
	return m[channel]
}

// receive waits for a value on ch, or fails t after testenv.WaitTimeout.
func receive(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
	case <-time.After(testenv.WaitTimeout):
		t.Fatalf("%s: nothing after %s", what, testenv.WaitTimeout)
	}
}

func TestNotifierReachesSubscribers(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	pub, sub := MustClient(t, url), MustClient(t, url)
	prefix := testenv.RedisPrefix(t, pub)
	a, b := redis.NewNotifier(pub, prefix, nil), redis.NewNotifier(sub, prefix, nil)
	if a.Channel() != prefix+"admin:switches" || redis.NewNotifier(pub, prefix+"x:", nil).Channel() == a.Channel() {
		t.Fatalf("channel %q: want one per prefix", a.Channel())
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := b.Subscribe(ctx)
	receive(t, ch, "the poke of the subscription")
	if n := subscribers(t, pub, a.Channel()); n != 1 {
		t.Fatalf("%d subscribers after the poke of the subscription, want 1", n)
	}
	if err := a.Publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "the notification")
	cancel()
	for range ch { // closed once ctx ends
	}
	testenv.WaitFor(t, "the unsubscription", func() bool { return subscribers(t, pub, a.Channel()) == 0 })
}

// A subscription lost with its server is made again, and pokes the
// subscriber, since a notification may have gone in between.
func TestNotifierSubscribesAgain(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	c := MustClient(t, srv.URL())
	n := redis.NewNotifier(c, "p:", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := n.Subscribe(ctx)
	receive(t, ch, "the poke of the subscription")
	srv.Restart(t)
	receive(t, ch, "the poke of the subscription made again")
	if n := subscribers(t, c, n.Channel()); n != 1 {
		t.Fatalf("%d subscribers after the poke, want 1", n)
	}
	if err := n.Publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "the notification after subscribing again")
}
