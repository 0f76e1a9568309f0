package redis

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
)

// Client is the part of a Redis client that dibs calls. A rueidis.Client
// satisfies it.
//
// It has no client-side caching and no way to send a command to a replica:
// every call goes to the primary, which is the only place a limiting counter
// may be read from.
type Client interface {
	B() rueidis.Builder
	Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult
	DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult
	Receive(ctx context.Context, subscribe rueidis.Completed, fn func(rueidis.PubSubMessage)) error
}

// ClientOptions tune NewClient. The zero value is what production uses.
type ClientOptions struct {
	// NoAutoPipelining sends every command on a connection of its own
	// instead of pipelining concurrent commands together. Only the
	// per-request reference the benchmarks compare against sets it.
	NoAutoPipelining bool
	// Dial replaces the TCP dialer, e.g. to follow a promoted replica in
	// tests the way a Sentinel-aware client does.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// NewClient connects to the Redis primary named by url:
//
//	redis://[user:password@]host:port[/db]     one primary
//	rediss://...                               the same over TLS
//	redis://sentinel1:26379?addr=sentinel2:26379&master_set=NAME
//	                                           Sentinel: the client asks the
//	                                           sentinels for the master and
//	                                           follows failovers
//
// A Cluster is found from any of its nodes. Whatever the URL says,
// client-side caching is off and no command is ever sent to a replica.
func NewClient(url string, opts ClientOptions) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	opt.DisableCache = true
	opt.SendToReplicas = nil
	opt.ReplicaSelector = nil
	opt.ReadNodeSelector = nil
	opt.ReplicaOnly = false
	opt.DisableAutoPipelining = opts.NoAutoPipelining
	if opt.Dialer.Timeout == 0 {
		opt.Dialer.Timeout = 2 * time.Second
	}
	if opt.ConnWriteTimeout == 0 {
		// A primary that stops answering (a partition) fails calls in
		// seconds, not in the default ten.
		opt.ConnWriteTimeout = 3 * time.Second
	}
	if opts.Dial != nil {
		opt.DialCtxFn = func(ctx context.Context, addr string, _ *net.Dialer, _ *tls.Config) (net.Conn, error) {
			return opts.Dial(ctx, addr)
		}
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("connect to redis: %w", err)
	}
	return c, nil
}

// script is a Lua script run with EVALSHA, falling back to EVAL when the
// server does not have it (a restart, a failover, SCRIPT FLUSH).
type script struct {
	name string
	src  string
	sha  string
}

func newScript(name, src string) *script {
	sum := sha1.Sum([]byte(src))
	return &script{name: name, src: src, sha: hex.EncodeToString(sum[:])}
}

// run executes the script. evalOnly sends the source every time (EVAL), as
// the per-request reference does.
func (s *script) run(ctx context.Context, c Client, evalOnly bool, keys []string, args ...string) rueidis.RedisResult {
	if !evalOnly {
		r := c.Do(ctx, c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
		if rerr, ok := rueidis.IsRedisErr(r.Error()); !ok || !rerr.IsNoScript() {
			return r
		}
	}
	return c.Do(ctx, c.B().Eval().Script(s.src).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
}

// fail is unavailable, and also suspects the primary when err says the
// connection broke, timed out, or reached a server that is not (or not
// yet, or no longer) a usable primary: the next claims wait for an
// identity check.
func (g *Gate) fail(ctx context.Context, op string, err error) error {
	if err == nil || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		return unavailable(ctx, op, err)
	}
	rerr, isRedis := rueidis.IsRedisErr(err)
	if g.watching.Load() && (!isRedis || rerr.IsLoading() || hasCode(rerr, "READONLY") || hasCode(rerr, "MASTERDOWN") || hasCode(rerr, "NOREPLICAS")) {
		if g.suspect.CompareAndSwap(false, true) {
			g.log.Warn("redis call failed; claims wait until the primary is checked", "op", op, "err", err)
		}
		g.checkSoon()
	}
	return unavailable(ctx, op, err)
}

// hasCode reports whether a Redis error reply starts with code, the
// protocol's error code (READONLY, MASTERDOWN, ...).
func hasCode(err *rueidis.RedisError, code string) bool {
	s := err.Error()
	return len(s) > len(code) && s[:len(code)] == code && s[len(code)] == ' '
}

// unavailable translates a failed Redis call into a dibs error. The caller's
// own cancellation passes through unchanged; anything else (Redis down, a
// timeout, a read-only replica where the primary was, out of memory) is
// EUNAVAILABLE, with the cause kept for the log.
func unavailable(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return err
	}
	return dibs.WrapError(dibs.EUNAVAILABLE, "The gate is unavailable; please retry.", fmt.Errorf("redis %s: %w", op, err))
}
