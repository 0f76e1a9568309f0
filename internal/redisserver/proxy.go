package redisserver

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Lag is a TCP proxy to a server that holds back everything the server
// sends for a delay, as a slow replication link does: point a replica's
// --replicaof at it and the replica runs that far behind its primary.
type Lag struct {
	ln     net.Listener
	target string
	delay  time.Duration

	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

// StartLag proxies to target with delay on the way back, until tb ends.
func StartLag(tb testing.TB, target string, delay time.Duration) *Lag {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l := &Lag{ln: ln, target: target, delay: delay}
	go l.accept()
	tb.Cleanup(l.close)
	return l
}

// Port is the port the proxy listens on.
func (l *Lag) Port() int { return l.ln.Addr().(*net.TCPAddr).Port }

func (l *Lag) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		l.conns = append(l.conns, c, s)
		l.mu.Unlock()
		go func() { io.Copy(s, c); s.Close() }()
		go l.delayed(c, s)
	}
}

// delayed copies from src to dst, each chunk delay after it was read.
func (l *Lag) delayed(dst, src net.Conn) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	ch := make(chan chunk, 1<<16)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{time.Now().Add(l.delay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		l.mu.Lock()
		cut := l.cut
		l.mu.Unlock()
		if cut {
			break
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	dst.Close()
}

// Cut breaks the link at once: whatever the server sent that has not come
// out yet is lost, as it is when a primary dies with its replica behind.
func (l *Lag) Cut() {
	l.mu.Lock()
	l.cut = true
	l.mu.Unlock()
	l.close()
}

func (l *Lag) close() {
	l.ln.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}
