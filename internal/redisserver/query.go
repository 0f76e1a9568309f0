package redisserver

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// Query sends one command to this server alone (never following a Cluster
// redirection or a Sentinel) and returns the whole reply.
func (s *Server) Query(args ...string) (rueidis.RedisMessage, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{s.Addr()}, ForceSingleClient: true, DisableCache: true,
		AlwaysRESP2: true, DisableRetry: true, Dialer: net.Dialer{Timeout: time.Second},
	})
	if err != nil {
		return rueidis.RedisMessage{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Arbitrary(args...).Build()).ToMessage()
}

// Info returns one field of INFO section, "" if the server does not answer.
func (s *Server) Info(section, field string) string {
	m, err := s.Query("INFO", section)
	if err != nil {
		return ""
	}
	text, _ := m.ToString()
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == field {
			return v
		}
	}
	return ""
}

// WaitFor polls cond every 20 ms until it holds, or fails tb after limit,
// and returns how long it took.
func WaitFor(tb testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			tb.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
