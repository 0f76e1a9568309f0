// Package testenv finds the real services integration tests run against.
//
// A test that needs PostgreSQL or Redis reads TEST_DATABASE_URL or
// TEST_REDIS_URL. When the variable is unset it is skipped, unless CI is set:
// then the default loopback URL is used, and a service that does not answer
// fails the test. `make test` sets both variables, so it runs them all.
package testenv

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// Defaults used under CI when the variables are unset.
const (
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// CI reports whether tests run in CI, where missing services are failures.
func CI() bool { return os.Getenv("CI") != "" && os.Getenv("CI") != "false" }

// DatabaseURL returns the PostgreSQL URL for tests, or skips or fails tb.
func DatabaseURL(tb testing.TB) string {
	return serviceURL(tb, "TEST_DATABASE_URL", DefaultDatabaseURL, "5432")
}

// RedisURL returns the Redis URL for tests, or skips or fails tb.
func RedisURL(tb testing.TB) string { return serviceURL(tb, "TEST_REDIS_URL", DefaultRedisURL, "6379") }

func serviceURL(tb testing.TB, name, def, port string) string {
	tb.Helper()
	raw := os.Getenv(name)
	if raw == "" {
		if !CI() {
			tb.Skipf("%s is not set (set it, or CI=true to use %s)", name, def)
		}
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), port)
	}
	conn, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		tb.Fatalf("%s=%s does not answer: %v", name, raw, err)
	}
	conn.Close()
	return raw
}
