package redisserver

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Lag is a TCP proxy to a server that holds back everything the server
// sends for a delay, as a slow replication link does: point a replica's
// --replicaof at it and the replica runs that far behind its primary. It
// can also stall both ways (a partition: bytes wait, connections stay up)
// and cut the link.
type Lag struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	delay   time.Duration
	jitter  time.Duration // delay ± up to this much, drawn per chunk
	rate    int           // bytes a second the server's side gets; 0: no limit
	conns   []net.Conn
	cut     bool
	stalled bool
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
		go l.forward(s, c, false)
		go l.forward(c, s, true)
	}
}

// forward copies from src to dst, each chunk (if delayed) the delay after
// it was read, and none while the link is stalled.
func (l *Lag) forward(dst, src net.Conn, delayed bool) {
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
				at := time.Now()
				if delayed {
					at = at.Add(l.chunkDelay(n))
				}
				ch <- chunk{at, buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		for l.is(&l.stalled) {
			time.Sleep(5 * time.Millisecond)
		}
		if l.is(&l.cut) {
			break
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	dst.Close()
}

// chunkDelay is how long n bytes from the server are held back: the delay,
// its jitter, and the time the rate takes to pass them.
func (l *Lag) chunkDelay(n int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.delay
	if l.jitter > 0 {
		d += time.Duration(rand.Int64N(int64(2*l.jitter))) - l.jitter
	}
	if l.rate > 0 {
		d += time.Duration(n) * time.Second / time.Duration(l.rate)
	}
	return max(d, 0)
}

// SetJitter makes each chunk's delay vary by up to j either way.
func (l *Lag) SetJitter(j time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.jitter = j
}

// SetRate limits what the server sends to bytesPerSecond (0: no limit), as
// a thin link does.
func (l *Lag) SetRate(bytesPerSecond int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = bytesPerSecond
}

// Reset closes every connection open now, as a peer's reset does; new
// connections are proxied like any other.
func (l *Lag) Reset() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Delay is how late the server's bytes come out now.
func (l *Lag) Delay() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.delay
}

// SetDelay changes the delay of what the server sends from now on; what
// it sent before keeps the delay it was read with.
func (l *Lag) SetDelay(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay = d
}

func (l *Lag) is(flag *bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return *flag
}

// Stall holds every byte both ways until Heal, as a partition does; the
// connections stay open.
func (l *Lag) Stall() { l.set(&l.stalled, true) }

// Heal lets the held bytes through and ends the stall.
func (l *Lag) Heal() { l.set(&l.stalled, false) }

func (l *Lag) set(flag *bool, v bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*flag = v
}

// Cut breaks the link at once: whatever the server sent that has not come
// out yet is lost, as it is when a primary dies with its replica behind.
func (l *Lag) Cut() {
	l.set(&l.cut, true)
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
