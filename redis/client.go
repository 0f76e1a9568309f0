package redis

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
)

// Client is the part of a Redis client that dibs calls: the gate and the
// waiting rooms send commands through it, and the node closes it at
// shutdown. Every rueidis.Client satisfies it.
//
// It has no client-side caching and no way to send a command to a replica:
// every call goes to the primary, which is the only place a limiting counter
// may be read from.
type Client interface {
	B() rueidis.Builder
	Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult
	DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult
	Receive(ctx context.Context, subscribe rueidis.Completed, fn func(rueidis.PubSubMessage)) error
	// Close closes the client's connections; calls made after fail.
	Close()
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
	// Logger hears when Redis cannot be reached at start and when the
	// client connects after all. Discarded if nil.
	Logger *slog.Logger
	// ConnWriteTimeout is how long a connection may leave a call or its
	// keepalive unanswered before it is closed and its calls fail (default
	// 3 s). Tests on a starved machine set it longer.
	ConnWriteTimeout time.Duration
}

// Connecting in the background after a first attempt failed: the wait
// between attempts starts at connectRetryMin and doubles up to
// connectRetryMax.
const (
	connectRetryMin = 100 * time.Millisecond
	connectRetryMax = 2 * time.Second
)

// NewClient returns a client of the Redis primary named by url:
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
//
// Only a url that cannot be parsed is an error. When Redis does not answer
// (it is down, the sentinels know no master yet), NewClient returns a
// client all the same: its calls fail at once with the cause, as calls to
// a server that went away do, while it connects in the background, and
// once it has connected it is the client NewClient would have returned.
// A node therefore starts during a Redis outage, not ready, and recovers
// by itself.
func NewClient(url string, opts ClientOptions) (Client, error) {
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
	if opts.ConnWriteTimeout > 0 {
		opt.ConnWriteTimeout = opts.ConnWriteTimeout
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
	if err == nil {
		return c, nil
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	late, err := newLateClient(opt, err, log)
	if err != nil {
		return nil, err
	}
	return late, nil
}

// lateClient is the client of a Redis that did not answer when NewClient
// was called. rueidis connects as it creates a client and returns none
// when it cannot; none of its options keeps every deployment right:
// ForceSingleClient keeps a client whose dial failed, but a single-node
// client never discovers a Cluster (it would send every key to the one
// node it knows) and is never made for a Sentinel URL, whose client asks
// the sentinels at creation. So the real client is created late, by the
// same rueidis.NewClient with the same options: it is a Cluster,
// Sentinel or single-node client as the server says, primary-only, just as
// if Redis had answered at once.
//
// Until then every call goes to pending, a single-node rueidis client
// that never connects (its dialer returns the last cause of failure), so
// that each method fails as rueidis fails calls to a server that is down,
// with rueidis's own results. Its commands are built by
// pending's builder, which marks them slotless; a Cluster client cannot
// route such a command (it would index its slot table with the mark), so
// a slotless command that reaches the client after it became a Cluster
// client is failed by pending too, and the caller's retry builds it anew.
type lateClient struct {
	pending rueidis.Client
	noSlot  uint16 // the mark pending's builder gives commands
	real    atomic.Pointer[connected]
	cause   atomic.Pointer[error] // why pending fails

	log  *slog.Logger
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ Client = (*lateClient)(nil)

// connected is the real client, once created.
type connected struct {
	rueidis.Client
	cluster bool
}

// errConnectedSince fails a command built before the client connected and
// sent after, when the server turned out to be a Cluster.
var errConnectedSince = errors.New("redis: the client connected while this command was built; retry")

func newLateClient(opt rueidis.ClientOption, cause error, log *slog.Logger) (*lateClient, error) {
	c := &lateClient{log: log, stop: make(chan struct{}), done: make(chan struct{})}
	c.cause.Store(&cause)
	pending, _ := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{"redis"}, // a name: the dialer below never dials
		ForceSingleClient: true,
		DisableCache:      true,
		DisableRetry:      true, // fail at once, as the gate's callers expect
		DialCtxFn: func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
			return nil, *c.cause.Load()
		},
	})
	if pending == nil {
		return nil, fmt.Errorf("connect to redis: %w", cause)
	}
	c.pending = pending
	probe := pending.B().Ping().Build() // keyless: carries the mark alone
	c.noSlot = probe.Slot()
	log.Warn("connect to redis failed; going on without it and connecting in the background", "err", cause)
	go c.connect(opt)
	return c, nil
}

// connect creates the real client, retrying with backoff until it succeeds
// or Close is called.
func (c *lateClient) connect(opt rueidis.ClientOption) {
	defer close(c.done)
	wait := connectRetryMin
	last := (*c.cause.Load()).Error()
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, connectRetryMax)
		real, err := rueidis.NewClient(opt)
		if err != nil {
			c.cause.Store(&err)
			if msg := err.Error(); msg != last { // once per cause, not per attempt
				c.log.Warn("connect to redis failed again", "err", err)
				last = msg
			}
			continue
		}
		select {
		case <-c.stop:
			real.Close()
			return
		default:
		}
		c.cause.Store(&errConnectedSince)
		c.real.Store(&connected{Client: real, cluster: real.Mode() == rueidis.ClientModeCluster})
		c.log.Info("redis connected", "mode", string(real.Mode()))
		return
	}
}

// to is the client a call goes to, given the slots of its commands.
func (c *lateClient) to(slots ...uint16) rueidis.Client {
	r := c.real.Load()
	if r == nil {
		return c.pending
	}
	if r.cluster {
		for _, s := range slots {
			if s&c.noSlot != 0 {
				return c.pending
			}
		}
	}
	return r.Client
}

func (c *lateClient) B() rueidis.Builder { return c.to().B() }

func (c *lateClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	return c.to(cmd.Slot()).Do(ctx, cmd)
}

func (c *lateClient) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	return c.to(slots(multi)...).DoMulti(ctx, multi...)
}

func (c *lateClient) Receive(ctx context.Context, subscribe rueidis.Completed, fn func(rueidis.PubSubMessage)) error {
	return c.to(subscribe.Slot()).Receive(ctx, subscribe, fn)
}

func slots(multi []rueidis.Completed) []uint16 {
	s := make([]uint16, len(multi))
	for i := range multi {
		s[i] = multi[i].Slot()
	}
	return s
}

// Close stops connecting (waiting for an attempt in progress, at most a
// dial timeout per address) and closes the client. Safe to call twice.
func (c *lateClient) Close() {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		if r := c.real.Load(); r != nil {
			r.Close()
		}
		c.pending.Close()
	})
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
