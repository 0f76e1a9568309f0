package redis

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// LiveBus carries the nodes' live reports (package live's Bus) through
// Redis:
//
//	{live}:node:ID  the node's newest report, expiring after the TTL
//	{live}:nodes    a set of the node ids that reported (a day's TTL)
//
// Both keys share a hash tag, so that one MGET reads every report on a
// Cluster too. A reader reads at most MaxLiveNodes reports, and takes the
// ids whose report expired out of the set.
type LiveBus struct {
	client Client
	prefix string
	ttl    time.Duration
}

// Live bus limits and defaults.
const (
	// DefaultLiveTTL is how long a report outlives its node's last
	// publish: as long as a stopped node is listed (stale) on the console.
	DefaultLiveTTL = time.Minute
	// MaxLiveNodes bounds the reports one read returns.
	MaxLiveNodes = 256
	// liveSetTTL is how long the set of node ids outlives the last
	// publish. Readers unlist the nodes whose report expired; the TTL
	// only clears the set of a deployment that went away. It is longer
	// than any report's so that no publisher's TTL shortens another's.
	liveSetTTL = 24 * time.Hour
)

// LiveBusOptions tune a LiveBus.
type LiveBusOptions struct {
	// Prefix starts every key. It must not contain '{' or '}'.
	Prefix string
	// TTL is how long a node's report is kept after it was published;
	// DefaultLiveTTL if zero. A second to a day.
	TTL time.Duration
}

// NewLiveBus returns a bus of live reports kept in Redis through client.
func NewLiveBus(client Client, o LiveBusOptions) (*LiveBus, error) {
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("live key prefix %q must not contain braces", o.Prefix)
	}
	if o.TTL == 0 {
		o.TTL = DefaultLiveTTL
	}
	if o.TTL < time.Second || o.TTL > liveSetTTL {
		return nil, fmt.Errorf("live report TTL %s is not between a second and %s", o.TTL, liveSetTTL)
	}
	return &LiveBus{client: client, prefix: o.Prefix, ttl: o.TTL}, nil
}

func (b *LiveBus) nodeKey(node string) string { return b.prefix + "{live}:node:" + node }
func (b *LiveBus) setKey() string             { return b.prefix + "{live}:nodes" }

// Publish stores node's report for the TTL and lists the node.
// EUNAVAILABLE if Redis does not answer.
func (b *LiveBus) Publish(ctx context.Context, node string, report []byte) error {
	c := b.client
	for _, r := range c.DoMulti(ctx,
		c.B().Set().Key(b.nodeKey(node)).Value(rueidis.BinaryString(report)).Px(b.ttl).Build(),
		c.B().Sadd().Key(b.setKey()).Member(node).Build(),
		c.B().Expire().Key(b.setKey()).Seconds(int64(liveSetTTL/time.Second)).Build(),
	) {
		if err := r.Error(); err != nil {
			return unavailable(ctx, "publish live report", err)
		}
	}
	return nil
}

// Reports returns the newest report of every listed node whose report has
// not expired, at most MaxLiveNodes of them (the first ids in order).
// EUNAVAILABLE if Redis does not answer.
func (b *LiveBus) Reports(ctx context.Context) (map[string][]byte, error) {
	c := b.client
	ids, err := c.Do(ctx, c.B().Smembers().Key(b.setKey()).Build()).AsStrSlice()
	if err != nil {
		return nil, unavailable(ctx, "read live nodes", err)
	}
	slices.Sort(ids)
	ids = ids[:min(len(ids), MaxLiveNodes)]
	out := make(map[string][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = b.nodeKey(id)
	}
	vals, err := c.Do(ctx, c.B().Mget().Key(keys...).Build()).ToArray()
	if err != nil {
		return nil, unavailable(ctx, "read live reports", err)
	}
	var gone []string
	for i, v := range vals {
		s, err := v.ToString()
		if rueidis.IsRedisNil(err) {
			gone = append(gone, ids[i])
			continue
		}
		if err != nil {
			return nil, unavailable(ctx, "read live reports", err)
		}
		out[ids[i]] = []byte(s)
	}
	if len(gone) > 0 {
		// A node that publishes between the MGET and here is unlisted
		// until its next publish, a second later.
		if err := c.Do(ctx, c.B().Srem().Key(b.setKey()).Member(gone...).Build()).Error(); err != nil {
			return nil, unavailable(ctx, "unlist expired live nodes", err)
		}
	}
	return out, nil
}
