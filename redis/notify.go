package redis

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/rueidis"
)

// NotifyRetry is how long a Notifier waits before it subscribes again
// after its subscription was lost.
const NotifyRetry = 500 * time.Millisecond

// Notifier tells the nodes of a deployment that the kill switches' record
// changed, by Redis pub/sub on one channel per key prefix
// (<prefix>admin:switches). A notification carries nothing but the news:
// each node reads the record itself, so a lost or repeated one does no
// harm. It implements switches.Notifier. Safe for concurrent use.
type Notifier struct {
	client  Client
	channel string
	log     *slog.Logger
}

// NewNotifier returns a Notifier on client for the deployment whose keys
// start with prefix (the gate's and the room's Prefix). logger hears of
// lost subscriptions; it is discarded if nil.
func NewNotifier(client Client, prefix string, logger *slog.Logger) *Notifier {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Notifier{client: client, channel: prefix + "admin:switches", log: logger}
}

// Channel is the pub/sub channel of the notifications.
func (n *Notifier) Channel() string { return n.channel }

// Publish tells every subscriber that the switches changed.
func (n *Notifier) Publish(ctx context.Context) error {
	if err := n.client.Do(ctx, n.client.B().Publish().Channel(n.channel).Message("changed").Build()).Error(); err != nil {
		return fmt.Errorf("publish %s: %w", n.channel, err)
	}
	return nil
}

// Subscribe returns a channel that receives a value once the subscription
// is in place, after each notification, and after each subscription made
// again once the connection was lost (its gap may have lost one), until
// ctx ends; then it is closed. Values merge when the receiver is behind.
// A subscription the client cannot make again is tried after NotifyRetry.
func (n *Notifier) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	poke := func() {
		select {
		case ch <- struct{}{}:
		default: // one pending value stands for any number
		}
	}
	// The client subscribes again by itself after a reconnection; each
	// subscription confirmed pokes, since a notification may have been
	// published while there was none. The first one does too: the caller
	// may have read the record before the subscription was in place.
	rctx := rueidis.WithOnSubscriptionHook(ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == "subscribe" {
			poke()
		}
	})
	// A Receive that ends with its context leaves the connection
	// subscribed; unsubscribe, so that a stopped node is not counted.
	rctx = rueidis.WithOnReceiveReturnHook(rctx, func(err error, c rueidis.CommandClient) error {
		if ctx.Err() != nil {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			c.Do(uctx, c.B().Unsubscribe().Channel(n.channel).Build())
		}
		return err
	})
	go func() {
		defer close(ch)
		failures := 0
		for {
			began := time.Now()
			err := n.client.Receive(rctx, n.client.B().Subscribe().Channel(n.channel).Build(),
				func(rueidis.PubSubMessage) { poke() })
			if ctx.Err() != nil {
				return
			}
			poke()
			if time.Since(began) > time.Second {
				failures = 0 // it was up: a new outage
			}
			failures++
			// Once per outage, then every hundredth attempt.
			if failures == 1 || failures%100 == 0 {
				n.log.Warn("redis: switches subscription lost; subscribing again", "channel", n.channel, "attempts", failures, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(NotifyRetry):
			}
		}
	}()
	return ch
}
