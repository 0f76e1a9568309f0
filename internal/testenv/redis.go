package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// RedisCaller is what the Redis helpers need of a client. A rueidis.Client
// and the gate's redis.Client both have it.
type RedisCaller interface {
	B() rueidis.Builder
	Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult
}

// RedisClient connects to the Redis at url and closes the client when tb
// ends. It reads the primary only, with no client-side cache, and waits
// 30 s for an answer where production waits 3 s: on a starved machine
// Redis or the test can go seconds without running, and an i/o timeout
// would say nothing of the code under test.
func RedisClient(tb testing.TB, url string) rueidis.Client {
	tb.Helper()
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		tb.Fatalf("redis url: %v", err)
	}
	opt.DisableCache = true
	opt.ConnWriteTimeout = 30 * time.Second
	c, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("connect to redis: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// RedisPrefix returns a key prefix no other test uses and, when tb ends,
// unlinks every key under it through c. Register c's own clean-up (its
// Close) before calling RedisPrefix, so that it runs after.
func RedisPrefix(tb testing.TB, c RedisCaller) string {
	tb.Helper()
	prefix := "dibs-test:" + strings.ToLower(rand.Text()[:10]) + ":"
	tb.Cleanup(func() {
		if err := DeleteRedisKeys(c, prefix); err != nil {
			tb.Logf("delete the test's redis keys: %v", err)
		}
	})
	return prefix
}

// DeleteRedisKeys unlinks every key whose name starts with prefix, a SCAN
// page at a time, within 10 s. A Cluster refuses an UNLINK of keys of
// several slots: tests on a Cluster leave their keys to the cluster's
// processes instead.
func DeleteRedisKeys(c RedisCaller, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			return fmt.Errorf("scan %s*: %w", prefix, err)
		}
		if len(e.Elements) > 0 {
			if err := c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build()).Error(); err != nil {
				return fmt.Errorf("unlink %s*: %w", prefix, err)
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return nil
		}
	}
}
