package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/redis"
)

// RedisConfig selects the gate: in memory (the default, one node) or on
// Redis, shared by every node of a deployment.
type RedisConfig struct {
	URL    string // --redis: empty for the in-memory gate
	Prefix string // --redis-prefix: keys of this deployment
	// Timeout is the claim deadline: how long a claim waits for Redis
	// before it answers 503 with Retry-After. It bounds every other call
	// of the gate too (preparing a drop, a rebuild step); zero is the
	// gate's default.
	Timeout time.Duration
	// Refresh is how often a node reloads drops from the record, so that
	// drops and operator actions of other nodes reach it.
	Refresh time.Duration
}

// DefaultRedisPrefix is the key prefix of a deployment that sets none.
const DefaultRedisPrefix = "dibs:"

func (c *RedisConfig) flags(fs *flag.FlagSet) {
	if c.Prefix == "" {
		c.Prefix = DefaultRedisPrefix
	}
	if c.Refresh == 0 {
		c.Refresh = 500 * time.Millisecond
	}
	fs.StringVar(&c.URL, "redis", c.URL, "Redis primary for the gate, shared by every node: redis://host:6379/0, or sentinels with ?master_set=NAME (default: in memory, one node)")
	fs.StringVar(&c.Prefix, "redis-prefix", c.Prefix, "prefix of every Redis key, to share one Redis between deployments")
	fs.DurationVar(&c.Timeout, "redis-timeout", redis.DefaultTimeout, "claim deadline: how long a call to Redis may take before the claim answers 503 (and the bound of every other gate call)")
	fs.DurationVar(&c.Refresh, "refresh", c.Refresh, "how often a node reloads drops and their status from the record (with --redis)")
}

// Validate reports the first thing wrong with c.
func (c *RedisConfig) Validate() error {
	switch {
	case c.URL != "" && c.Refresh <= 0:
		return errors.New("--refresh must be positive")
	case c.Timeout < 0:
		return errors.New("--redis-timeout must not be negative")
	case strings.ContainsAny(c.Prefix, "{}"):
		return errors.New("--redis-prefix must not contain braces: a drop's keys share the hash tag {drop:ID}")
	}
	return nil
}

// ReconcileConfig tunes the reconciler, which every gate has: in memory as
// on Redis, a hold the gate took and the record never got (a claim that
// failed after its reserve) gives its slot back.
type ReconcileConfig struct {
	Interval time.Duration // --reconcile-interval: how often it runs
	Grace    time.Duration // --reconcile-grace: how old an unrecorded hold must be
}

func (c *ReconcileConfig) flags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Interval, "reconcile-interval", engine.DefaultReconcileInterval, "how often the gate is reconciled with the record")
	fs.DurationVar(&c.Grace, "reconcile-grace", engine.DefaultReconcileGrace, "how old a gate hold with no record must be before its slot goes back")
}

// Validate reports the first thing wrong with c.
func (c *ReconcileConfig) Validate() error {
	if c.Interval < 0 || c.Grace < 0 {
		return errors.New("--reconcile-interval and --reconcile-grace must not be negative")
	}
	return nil
}

// gateFlags registers the flags of the gate and of its reconciler.
func (c *Config) gateFlags(fs *flag.FlagSet) {
	c.Redis.flags(fs)
	c.Reconcile.flags(fs)
}

// validateGate reports the first thing wrong with the gate's settings.
func (c *Config) validateGate() error {
	if err := c.Redis.Validate(); err != nil {
		return err
	}
	return c.Reconcile.Validate()
}

// gateService is the gate of a node and the work that keeps it right: the
// reconciler always; with Redis, the gate's own background work and a
// periodic refresh of drops from the record.
type gateService struct {
	cfg       RedisConfig
	reconcile ReconcileConfig
	log       *slog.Logger
	gate      dibs.Gate
	redis     *redis.Gate
	client    redis.Client // the primary-only client, for the waiting rooms too; nil in memory
	closer    func()

	rec    *engine.Reconciler
	cancel context.CancelFunc
	done   chan struct{}
}

func openGate(cfg RedisConfig, reconcile ReconcileConfig, reg prometheus.Registerer, log *slog.Logger) (*gateService, error) {
	s := &gateService{cfg: cfg, reconcile: reconcile, log: log}
	if cfg.URL == "" {
		s.gate = memory.NewGate()
		return s, nil
	}
	// A Redis that does not answer does not stop the node: the client
	// connects in the background (redis.NewClient), the engine serves the
	// drops it cannot prepare yet with 503 and prepares them once Redis
	// answers, and /readyz says not ready meanwhile. Only a URL that does
	// not parse is an error.
	client, err := redis.NewClient(cfg.URL, redis.ClientOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	s.redis = redis.NewGate(client, redis.GateOptions{Prefix: cfg.Prefix, Timeout: cfg.Timeout, Logger: log})
	if err := reg.Register(s.redis); err != nil {
		client.Close()
		return nil, fmt.Errorf("register gate metrics: %w", err)
	}
	s.gate, s.client, s.closer = s.redis, client, client.Close
	return s, nil
}

// start runs the background work against e.
func (s *gateService) start(e *engine.Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	s.rec = engine.NewReconciler(e, engine.ReconcilerConfig{Interval: s.reconcile.Interval, Grace: s.reconcile.Grace, Logger: s.log})
	s.rec.Start(ctx)
	if s.redis == nil {
		close(s.done)
		return
	}
	s.redis.Start(ctx)
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.cfg.Refresh)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// Logged when it starts failing and when it recovers, not twice
			// a second through an outage.
			switch err := e.Refresh(ctx); {
			case err != nil && ctx.Err() == nil && !failing:
				s.log.Warn("refresh drops from the record", "err", err)
				failing = true
			case err == nil && failing:
				s.log.Info("refresh drops from the record: recovered")
				failing = false
			}
		}
	}()
}

// stopWork ends the reconciler and the refresh. Safe to call twice.
func (s *gateService) stopWork() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.rec.Stop()
	<-s.done
	s.cancel = nil
}

// close stops the gate's background work and closes its connections.
func (s *gateService) close() {
	s.stopWork()
	if s.redis != nil {
		s.redis.Stop()
	}
	if s.closer != nil {
		s.closer()
	}
}
