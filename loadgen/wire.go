package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/dibs-io/dibs"
)

// wireClient is a lean HTTP/1.1 keep-alive client for the measured load:
// the generator must cost less than the server it measures, and net/http's
// client (a goroutine pair per connection, a Request and a Response with
// their header maps per call, tracing) costs about as much as a dibs node
// answering a sold-out claim. A request is written from a buffer the
// connection keeps; the answer is read in place, and only what the
// generator uses is kept: the status, the problem code, a 2xx body,
// Retry-After and Server-Timing. It speaks plain http only; https targets
// and a Config.Client go through net/http.
type wireClient struct {
	addr   string // host:port to dial
	host   string // the Host header
	dialer net.Dialer

	idle  chan *wireConn // connections free for a request
	slots chan struct{}  // one per open connection, bounding them

	mu    sync.Mutex
	open  map[*wireConn]struct{}
	ended bool
}

// wireConn is one connection and its buffers.
type wireConn struct {
	c   net.Conn
	raw syscall.RawConn // to see whether the server closed it while idle

	// peerClosed's function and its results, made once per connection.
	peek       func(fd uintptr) bool
	peekBuf    [1]byte
	peekClosed bool
	br         *bufio.Reader
	req        []byte // the request being written
	body       []byte // the body of the last answer
}

// errWireClosed is a request cut off by the end of the run.
var errWireClosed = errors.New("connection closed: the run ended")

// newWireClient returns a client of up to maxConns connections to the
// http URL base, or false when base is not plain http. Its connections
// close when ctx ends.
func newWireClient(ctx context.Context, base string, maxConns int) (*wireClient, bool) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, false
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	w := &wireClient{
		addr: addr, host: u.Host,
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		idle:   make(chan *wireConn, maxConns),
		slots:  make(chan struct{}, maxConns),
		open:   make(map[*wireConn]struct{}),
	}
	context.AfterFunc(ctx, w.closeAll)
	return w, true
}

// closeAll closes every connection, cutting off requests in flight: the
// run was stopped.
func (w *wireClient) closeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
	for c := range w.open {
		c.c.Close()
	}
}

// conn returns a free connection, dialling one while fewer than maxConns
// are open, else waiting for one until deadline.
func (w *wireClient) conn(ctx context.Context, deadline time.Time) (*wireConn, error) {
	for {
		select {
		case c := <-w.idle:
			if c.peerClosed() {
				w.release(c, false)
				continue
			}
			return c, nil
		default:
		}
		select {
		case c := <-w.idle:
			if c.peerClosed() {
				w.release(c, false)
				continue
			}
			return c, nil
		case w.slots <- struct{}{}:
			return w.dialSlot(ctx, deadline)
		default:
		}
		break
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		select {
		case c := <-w.idle:
			if c.peerClosed() {
				w.release(c, false)
				continue
			}
			return c, nil
		case w.slots <- struct{}{}: // a connection closed meanwhile
			return w.dialSlot(ctx, deadline)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, context.DeadlineExceeded
		}
	}
}

// dialSlot dials a connection for the slot the caller took.
func (w *wireClient) dialSlot(ctx context.Context, deadline time.Time) (*wireConn, error) {
	c, err := w.dial(ctx, deadline)
	if err != nil {
		<-w.slots
	}
	return c, err
}

func (w *wireClient) dial(ctx context.Context, deadline time.Time) (*wireConn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	nc, err := w.dialer.DialContext(ctx, "tcp", w.addr)
	if err != nil {
		return nil, err
	}
	c := &wireConn{c: nc, br: bufio.NewReaderSize(nc, 4096), req: make([]byte, 0, 1024)}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		nc.Close()
		return nil, errWireClosed
	}
	w.open[c] = struct{}{}
	return c, nil
}

// warm opens up to n more connections before the load, each carrying one
// request (path, a read) so the server counts it as a live client. Its
// requests are not measured.
func (w *wireClient) warm(ctx context.Context, n int, path string) {
	deadline := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for range n {
		select {
		case w.slots <- struct{}{}:
		default:
			return // as many open as allowed
		}
		wg.Go(func() {
			c, err := w.dial(ctx, deadline)
			if err != nil {
				<-w.slots
				return
			}
			a, err := c.do(w.host, &request{method: "GET", path: path}, deadline)
			w.release(c, err == nil && !a.close)
		})
	}
	wg.Wait()
}

// release gives c back for the next request, or closes it when it cannot
// carry one (an error mid-answer, Connection: close).
func (w *wireClient) release(c *wireConn, reuse bool) {
	if reuse {
		w.idle <- c
		return
	}
	c.c.Close()
	w.mu.Lock()
	delete(w.open, c)
	w.mu.Unlock()
	<-w.slots
}

// wireAnswer is what the generator reads of an answer. body is the
// connection's buffer, valid until the connection's next request.
type wireAnswer struct {
	status     int
	body       []byte
	retryAfter string
	serverDur  time.Duration
	hasServer  bool
	close      bool
}

// do sends one request on c and reads its answer, by deadline.
func (c *wireConn) do(host string, req *request, deadline time.Time) (wireAnswer, error) {
	b := c.req[:0]
	b = append(b, req.method...)
	b = append(b, ' ')
	b = append(b, req.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	if req.bearer != "" {
		b = append(b, "\r\nAuthorization: Bearer "...)
		b = append(b, req.bearer...)
	}
	for _, h := range req.headers {
		b = append(b, "\r\n"...)
		b = append(b, h[0]...)
		b = append(b, ": "...)
		b = append(b, h[1]...)
	}
	if req.method == "POST" || req.method == "PUT" {
		b = append(b, "\r\nContent-Length: 0"...)
	}
	b = append(b, "\r\n\r\n"...)
	c.req = b
	if err := c.c.SetDeadline(deadline); err != nil {
		return wireAnswer{}, err
	}
	if _, err := c.c.Write(b); err != nil {
		return wireAnswer{}, err
	}
	return c.read(req.method == "HEAD")
}

// read reads one answer: the status line, the headers the generator uses,
// and the body (by Content-Length, or chunked).
func (c *wireConn) read(head bool) (wireAnswer, error) {
	var a wireAnswer
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return a, err
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return a, fmt.Errorf("malformed status line %q", line)
	}
	if a.status, err = atoi(line[9:12]); err != nil {
		return a, fmt.Errorf("malformed status line %q", line)
	}
	length, chunked := -1, false
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return a, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return a, fmt.Errorf("malformed header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = atoi(value); err != nil {
				return a, fmt.Errorf("malformed Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			a.close = bytes.EqualFold(value, []byte("close"))
		case bytes.EqualFold(name, []byte("Retry-After")):
			a.retryAfter = string(value)
		case bytes.EqualFold(name, []byte("Server-Timing")):
			a.serverDur, a.hasServer = parseServerTiming(value)
		}
	}
	c.body = c.body[:0]
	switch {
	case head || a.status == 204 || a.status == 304 || a.status/100 == 1:
	case chunked:
		err = c.readChunked()
	case length >= 0:
		err = c.readN(length)
	default: // the body runs to the end of the connection
		a.close = true
		err = c.readN(-1)
	}
	if err != nil {
		return a, err
	}
	a.body = c.body
	return a, nil
}

// readN appends n bytes of body (n < 0: up to EOF), keeping at most
// maxBody of them.
func (c *wireConn) readN(n int) error {
	if n < 0 {
		rest, err := io.ReadAll(io.LimitReader(c.br, maxBody))
		c.body = append(c.body, rest...)
		if err == nil {
			_, err = io.Copy(io.Discard, c.br)
		}
		return err
	}
	keep := min(n, maxBody-len(c.body))
	if keep > 0 {
		start := len(c.body)
		c.body = append(c.body, make([]byte, keep)...)
		if _, err := io.ReadFull(c.br, c.body[start:]); err != nil {
			return err
		}
	}
	if n > keep {
		if _, err := c.br.Discard(n - keep); err != nil {
			return err
		}
	}
	return nil
}

func (c *wireConn) readChunked() error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("malformed chunk size %q", line)
		}
		if size == 0 {
			for { // trailers, up to the empty line
				line, err := c.br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if err := c.readN(int(size)); err != nil {
			return err
		}
		if _, err := c.br.Discard(2); err != nil { // CRLF after the chunk
			return err
		}
	}
}

// atoi reads a small non-negative decimal number.
func atoi(b []byte) (int, error) {
	if len(b) == 0 || len(b) > 18 {
		return 0, errors.New("not a number")
	}
	n := 0
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, errors.New("not a number")
		}
		n = n*10 + int(d-'0')
	}
	return n, nil
}

// parseServerTiming reads the dur of the first metric of a Server-Timing
// header, e.g. app;dur=0.42 (milliseconds), without allocating.
func parseServerTiming(v []byte) (time.Duration, bool) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	i := bytes.Index(v, []byte("dur="))
	if i < 0 {
		return 0, false
	}
	v = v[i+len("dur="):]
	if j := bytes.IndexByte(v, ';'); j >= 0 {
		v = v[:j]
	}
	v = bytes.TrimSpace(v)
	var micros, scale int64 = 0, 1000 // milliseconds to microseconds
	seenDot, digits := false, 0
	for _, c := range v {
		switch {
		case c == '.' && !seenDot:
			seenDot = true
		case c >= '0' && c <= '9':
			digits++
			if micros > 1<<40 {
				return 0, false
			}
			if !seenDot {
				micros = micros*10 + int64(c-'0')
			} else if scale > 1 {
				scale /= 10
				micros = micros*10 + int64(c-'0')
			}
		default:
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	if !seenDot {
		scale = 1000
	}
	return time.Duration(micros*scale) * time.Microsecond, true
}

// problemCode reads the code member of a problem+json body without
// decoding the rest; the codes dibs sends come back without allocating.
func problemCode(body []byte) string {
	i := bytes.Index(body, []byte(`"code"`))
	if i < 0 {
		return ""
	}
	rest := bytes.TrimLeft(body[i+len(`"code"`):], " \t\r\n")
	rest, ok := bytes.CutPrefix(rest, []byte(":"))
	if !ok {
		return ""
	}
	rest, ok = bytes.CutPrefix(bytes.TrimLeft(rest, " \t\r\n"), []byte(`"`))
	if !ok {
		return ""
	}
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return ""
	}
	if c, ok := knownCodes[string(rest[:j])]; ok {
		return c
	}
	return string(rest[:j])
}

var knownCodes = func() map[string]string {
	m := make(map[string]string)
	for _, c := range []string{dibs.ECONFLICT, dibs.EINTERNAL, dibs.EINVALID, dibs.ENOTFOUND, dibs.EUNAUTHORIZED,
		dibs.EFORBIDDEN, dibs.ESOLDOUT, dibs.ECLOSED, dibs.ENOTOPEN, dibs.EPAUSED, dibs.ELIMIT,
		dibs.EADMISSIONREQUIRED, dibs.EADMISSIONINVALID, dibs.ETHROTTLED, dibs.EOVERLOADED,
		dibs.EUNAVAILABLE, dibs.ETOOLARGE} {
		m[c] = c
	}
	return m
}()
