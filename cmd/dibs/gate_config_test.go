package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/redis"
)

// TestGateConfigFlags: --redis-* set the Redis settings and --reconcile-*
// the reconciler's, from the command line or from DIBS_* (the command line
// wins); unset, the reconciler keeps the engine's defaults.
func TestGateConfigFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantRedis  RedisConfig
		wantReconc ReconcileConfig
	}{
		{
			name:       "defaults",
			wantRedis:  RedisConfig{Prefix: DefaultRedisPrefix, Timeout: redis.DefaultTimeout, Refresh: 500 * time.Millisecond},
			wantReconc: ReconcileConfig{Interval: engine.DefaultReconcileInterval, Grace: engine.DefaultReconcileGrace},
		},
		{
			name: "flags",
			args: []string{"--redis", "redis://r:6379/0", "--redis-prefix", "p:", "--redis-timeout", "2s", "--refresh", "1s",
				"--reconcile-interval", "3s", "--reconcile-grace", "4s"},
			wantRedis:  RedisConfig{URL: "redis://r:6379/0", Prefix: "p:", Timeout: 2 * time.Second, Refresh: time.Second},
			wantReconc: ReconcileConfig{Interval: 3 * time.Second, Grace: 4 * time.Second},
		},
		{
			name: "environment",
			args: []string{"--reconcile-grace", "9s"},
			env: map[string]string{"DIBS_REDIS": "redis://e:6379/1", "DIBS_RECONCILE_INTERVAL": "5s",
				"DIBS_RECONCILE_GRACE": "6s"},
			wantRedis:  RedisConfig{URL: "redis://e:6379/1", Prefix: DefaultRedisPrefix, Timeout: redis.DefaultTimeout, Refresh: 500 * time.Millisecond},
			wantReconc: ReconcileConfig{Interval: 5 * time.Second, Grace: 9 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			fs := flag.NewFlagSet("dibs serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg.flags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := flagsFromEnv(fs, testEnv(tt.env)); err != nil {
				t.Fatal(err)
			}
			if cfg.Redis != tt.wantRedis {
				t.Errorf("redis = %+v, want %+v", cfg.Redis, tt.wantRedis)
			}
			if cfg.Reconcile != tt.wantReconc {
				t.Errorf("reconcile = %+v, want %+v", cfg.Reconcile, tt.wantReconc)
			}
		})
	}
}

// TestGateConfigValidate: the gate's settings are checked with the rest of
// the node's, whichever gate they are for.
func TestGateConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string // empty: valid
	}{
		{"in memory", func(*Config) {}, ""},
		{"redis", func(c *Config) { c.Redis.URL = "redis://r:6379/0" }, ""},
		{"negative interval in memory", func(c *Config) { c.Reconcile.Interval = -time.Second }, "--reconcile-interval"},
		{"negative grace on redis", func(c *Config) { c.Redis.URL, c.Reconcile.Grace = "redis://r:6379/0", -time.Second }, "--reconcile-grace"},
		{"braces in prefix", func(c *Config) { c.Redis.Prefix = "a{b}" }, "--redis-prefix"},
		{"negative redis timeout", func(c *Config) { c.Redis.Timeout = -time.Second }, "--redis-timeout"},
		{"no refresh on redis", func(c *Config) { c.Redis.URL, c.Redis.Refresh = "redis://r:6379/0", 0 }, "--refresh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.gateFlags(nopFlags())
			tt.mod(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}
