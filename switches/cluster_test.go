package switches_test

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/postgres/pgtest"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/switches"
)

// cluster is nodes sharing one PostgreSQL record and, when they have
// notifiers, one Redis key prefix.
type cluster struct {
	url, schema string
	redisURL    string
	prefix      string
}

func newCluster(t *testing.T, withRedis bool) *cluster {
	t.Helper()
	c := &cluster{url: pgtest.URL(t)}
	c.schema = pgtest.NewSchema(t, c.url)
	if withRedis {
		c.redisURL = testenv.RedisURL(t)
		c.prefix = "dibs-test:" + strings.ToLower(rand.Text()[:10]) + ":"
	}
	return c
}

// node is one node's store, Redis client and Service.
type node struct {
	store  *postgres.Store
	client redis.Client
	svc    *switches.Service
}

// start starts a node that re-reads the record every reread; it has a
// notifier when the cluster has Redis.
func (c *cluster) start(t *testing.T, reread time.Duration) *node {
	t.Helper()
	return c.startWith(t, reread, func(n switches.Notifier) switches.Notifier { return n })
}

// startWith starts a node whose notifier, if any, is wrapped by wrap.
func (c *cluster) startWith(t *testing.T, reread time.Duration, wrap func(switches.Notifier) switches.Notifier) *node {
	t.Helper()
	n := &node{store: pgtest.MustOpenWith(t, c.url, postgres.Options{Schema: c.schema})}
	opts := switches.Options{Reread: reread}
	if c.redisURL != "" {
		var err error
		if n.client, err = redis.NewClient(c.redisURL, redis.ClientOptions{ConnWriteTimeout: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.client.Close)
		opts.Notifier = wrap(redis.NewNotifier(n.client, c.prefix, nil))
	}
	n.svc = switches.New(n.store, dibs.NewActionLog(n.store), opts)
	if err := n.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.svc.Stop() })
	return n
}

// subscribed waits until nodes clients listen on the cluster's channel.
func (c *cluster) subscribed(t *testing.T, on *node, nodes int64) {
	t.Helper()
	channel := redis.NewNotifier(on.client, c.prefix, nil).Channel()
	testenv.WaitFor(t, "the nodes' subscriptions", func() bool {
		m, err := on.client.Do(context.Background(), on.client.B().PubsubNumsub().Channel(channel).Build()).AsIntMap()
		return err == nil && m[channel] == nodes
	})
}

func flip(t *testing.T, n *node, change map[dibs.Switch]bool, by string) dibs.Switches {
	t.Helper()
	sw, err := n.svc.SetSwitches(context.Background(), change, by)
	if err != nil {
		t.Fatal(err)
	}
	return sw
}

// messagesOnly passes on a Notifier's pokes but the first, which says
// that the subscription is in place: the node it serves then reads the
// record on notifications only.
type messagesOnly struct{ switches.Notifier }

func (m messagesOnly) Subscribe(ctx context.Context) <-chan struct{} {
	in, out := m.Notifier.Subscribe(ctx), make(chan struct{})
	go func() {
		defer close(out)
		<-in
		for range in {
			select {
			case out <- struct{}{}:
			case <-ctx.Done():
			}
		}
	}()
	return out
}

// The flip reaches the other node by its notification: its re-read is
// an hour away, and it does not read on subscribing.
func TestFlipReachesOtherNodeByNotification(t *testing.T) {
	t.Parallel()
	c := newCluster(t, true)
	a := c.start(t, time.Hour)
	b := c.startWith(t, time.Hour, func(n switches.Notifier) switches.Notifier { return messagesOnly{n} })
	c.subscribed(t, a, 2)
	want := flip(t, a, map[dibs.Switch]bool{dibs.SwitchClaims: false}, "sre-alice")
	took := testenv.WaitFor(t, "node b seeing the flip", func() bool { return b.svc.Switches() == want })
	t.Logf("node b saw the flip %s after it was saved", took.Round(time.Millisecond))

	// And back, from b to a.
	want = flip(t, b, map[dibs.Switch]bool{dibs.SwitchClaims: true}, "sre-bob")
	testenv.WaitFor(t, "node a seeing the flip back", func() bool { return a.svc.Switches() == want && a.svc.Version() == 2 })
}

// Without notifications, the periodic re-read alone carries the flip.
func TestFlipReachesOtherNodeByRereadAlone(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false)
	a, b := c.start(t, 0), c.start(t, 0)
	want := flip(t, a, map[dibs.Switch]bool{dibs.SwitchPayments: false, dibs.SwitchWebhooks: false}, "sre-alice")
	took := testenv.WaitFor(t, "node b seeing the flip", func() bool { return b.svc.Switches() == want })
	t.Logf("node b saw the flip %s after it was saved (re-read every %s)", took.Round(time.Millisecond), switches.DefaultReread)
}

// A node that starts again starts with the record's switches.
func TestRestartKeepsTheFlip(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false)
	a := c.start(t, 0)
	want := flip(t, a, map[dibs.Switch]bool{dibs.SwitchQueueJoins: false}, "sre-alice")
	if err := a.svc.Stop(); err != nil {
		t.Fatal(err)
	}
	again := c.start(t, time.Hour)
	if got := again.svc.Switches(); got != want {
		t.Fatalf("after a restart: %s, want %s", got, want)
	}
	acts, err := again.store.ListActions(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].Kind != dibs.ActionSwitchFlipped || acts[0].Actor != "sre-alice" {
		t.Fatalf("actions = %+v, want the one flip", acts)
	}
}

// Nodes flipping different switches at once all get their flip: each
// applies to the state the other's left, in the record's order, and
// every node ends with the record's state.
func TestConcurrentFlipsOnTwoNodes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, true)
	a, b := c.start(t, time.Hour), c.start(t, time.Hour)
	c.subscribed(t, a, 2)
	var wg sync.WaitGroup
	for i, sw := range dibs.AllSwitches {
		n := a
		if i%2 == 1 {
			n = b
		}
		wg.Go(func() { flip(t, n, map[dibs.Switch]bool{sw: false}, "sre") })
	}
	wg.Wait()
	want := dibs.Switches{}
	for _, sw := range dibs.AllSwitches {
		want = want.With(sw, false)
	}
	rec, version, err := a.store.LoadSwitches(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rec != want || version != int64(len(dibs.AllSwitches)) {
		t.Fatalf("record = %s at %d, want %s at %d", rec, version, want, len(dibs.AllSwitches))
	}
	for name, n := range map[string]*node{"a": a, "b": b} {
		testenv.WaitFor(t, "node "+name+" seeing every flip", func() bool { return n.svc.Switches() == want && n.svc.Version() == version })
	}
	acts, err := a.store.ListActions(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != len(dibs.AllSwitches) {
		t.Fatalf("%d actions, want %d", len(acts), len(dibs.AllSwitches))
	}
}
