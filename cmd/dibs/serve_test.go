package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// syncBuffer is a log destination safe for the node's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var errListenerDied = errors.New("listener died")

// dyingListener is a listener that fails for good when die is called, as
// one does when its socket is lost.
type dyingListener struct {
	net.Listener
	dead atomic.Bool
}

func (l *dyingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.dead.Load() {
		return nil, errListenerDied
	}
	return c, err
}

func (l *dyingListener) die() {
	l.dead.Store(true)
	l.Listener.Close()
}

// TestServeExitsWhenListenerDies: a node whose listener fails stops,
// logs why and returns an error (dibs serve exits 1), instead of running
// on without serving until a signal comes.
func TestServeExitsWhenListenerDies(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	m := NewMain(testConfig(t), newLogger(&log, "info", "json"))
	var ln *dyingListener
	m.listen = func(network, addr string) (net.Listener, error) {
		l, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		ln = &dyingListener{Listener: l}
		return ln, nil
	}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	if code, body := call(t, "GET", m.URL()+"/readyz", ""); code != http.StatusOK {
		m.Close()
		t.Fatalf("readyz before the failure = %d %s", code, body)
	}

	ln.die()
	// No signal ever comes: serve must return on the failure alone.
	err := serve(context.Background(), m)
	if !errors.Is(err, errListenerDied) {
		t.Fatalf("serve = %v, want the listener's error", err)
	}
	if code := exitCode(err); code != 1 {
		t.Fatalf("exit code = %d, want 1", code)
	}
	if got := log.String(); !strings.Contains(got, `"msg":"stopped serving; shutting down"`) || !strings.Contains(got, errListenerDied.Error()) {
		t.Fatalf("log does not say the node stopped serving and why:\n%s", got)
	}
}

// TestServeStopsOnSignal: the signal path still shuts down cleanly.
func TestServeStopsOnSignal(t *testing.T) {
	t.Parallel()
	m := NewMain(testConfig(t), slog.New(slog.DiscardHandler))
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := serve(ctx, m); err != nil {
		t.Fatalf("serve after the signal = %v, want nil", err)
	}
}
