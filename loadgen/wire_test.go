package loadgen

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseServerTiming(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"app;dur=0.42", 420 * time.Microsecond, true},
		{"app;dur=12", 12 * time.Millisecond, true},
		{"app;desc=\"x\";dur=1.2345", 1234 * time.Microsecond, true},
		{"app;dur=3, db;dur=1", 3 * time.Millisecond, true},
		{"app", 0, false},
		{"app;dur=", 0, false},
		{"app;dur=-1", 0, false},
		{"app;dur=1e3", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseServerTiming([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseServerTiming(%q) = %s, %t; want %s, %t", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestProblemCode(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		`{"type":"about:blank","status":410,"code":"sold_out"}`: "sold_out",
		`{"code" : "new_code_of_a_newer_server"}`:               "new_code_of_a_newer_server",
		`{"status":500}`: "",
		`{"code":5}`:     "",
		`not json`:       "",
	}
	for in, want := range tests {
		if got := problemCode([]byte(in)); got != want {
			t.Errorf("problemCode(%s) = %q, want %q", in, got, want)
		}
	}
}

// The lean client reads answers by Content-Length and chunked, keeps the
// connection for the next request, and closes it on Connection: close.
func TestWireClientReadsAnswers(t *testing.T) {
	t.Parallel()
	answers := []string{
		"HTTP/1.1 410 Gone\r\nContent-Type: application/problem+json\r\nServer-Timing: app;dur=0.5\r\nContent-Length: 17\r\n\r\n{\"code\":\"closed\"}",
		"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nRetry-After: 2\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	}
	addr := serveScript(t, answers)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, ok := newWireClient(ctx, "http://"+addr, 1)
	if !ok {
		t.Fatal("no lean client for a plain http URL")
	}
	deadline := time.Now().Add(time.Minute) // a bound on a hang, not a timing
	req := &request{method: "POST", path: "/v1/drops/d/claims", bearer: "tok", headers: [][2]string{{"Idempotency-Key", "k"}}}
	type want struct {
		status int
		body   string
		retry  string
		server time.Duration
		close  bool
	}
	for i, wt := range []want{
		{410, `{"code":"closed"}`, "", 500 * time.Microsecond, false},
		{201, `{"a":1}`, "2", 0, false},
		{200, "ok", "", 0, true},
	} {
		c, err := w.conn(ctx, deadline)
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.do(w.host, req, deadline)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		got := want{a.status, string(a.body), a.retryAfter, a.serverDur, a.close}
		if got != wt {
			t.Errorf("answer %d = %+v, want %+v", i, got, wt)
		}
		w.release(c, !a.close)
	}
	if n := len(w.slots); n != 0 {
		t.Errorf("%d connections open after Connection: close, want 0", n)
	}
}

// serveScript accepts one connection and answers its requests in turn with
// answers, checking each request's head.
func serveScript(t *testing.T, answers []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for _, a := range answers {
			head := ""
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head += line
				if line == "\r\n" {
					break
				}
			}
			for _, want := range []string{"POST /v1/drops/d/claims HTTP/1.1\r\n", "Authorization: Bearer tok\r\n", "Idempotency-Key: k\r\n", "Content-Length: 0\r\n"} {
				if !strings.Contains(head, want) {
					t.Errorf("request head %q lacks %q", head, want)
				}
			}
			io.WriteString(c, a)
		}
	}()
	return ln.Addr().String()
}

// BenchmarkSend measures what one measured request costs the generator:
// building it, the lean client, reading the answer and recording it,
// against a server that answers every request with the same bytes at once
// (as close to free as a server gets). allocs/op is per request.
//
//	go test -run '^$' -bench Send -benchmem ./loadgen/
func BenchmarkSend(b *testing.B) {
	answer := "HTTP/1.1 410 Gone\r\nContent-Type: application/problem+json\r\nServer-Timing: app;dur=0.1\r\nContent-Length: 69\r\n\r\n" +
		`{"type":"about:blank","title":"Gone","status":410,"code":"sold_out"}` + "\n"
	addr := constantServer(b, answer)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &runner{cfg: Config{Target: "http://" + addr, DropID: "d", RequestTimeout: 10 * time.Second,
		Logger: slog.New(slog.DiscardHandler), Now: time.Now}}
	t := &target{url: "http://" + addr}
	t.wire, _ = newWireClient(ctx, t.url, 64)
	r.targets = []*target{t}
	r.rec = newRecorder(time.Now(), 100*time.Millisecond)
	r.book = newBook(1)
	r.spike = &dispatcher{slots: newLimiter(64), now: time.Now, log: r.cfg.Logger}
	req := request{op: opClaim, method: "POST", path: "/v1/drops/d/claims", bearer: strings.Repeat("x", 180)}
	b.ReportAllocs()
	b.SetParallelism(32) // requests in flight, as a spike keeps them
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := req
			req.intended = time.Now()
			if res := r.send(ctx, req); res.status != 410 || res.code != "sold_out" {
				b.Fatalf("answer %d %q", res.status, res.code)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// constantServer answers every request it reads (up to its empty line) with
// answer, on every connection.
func constantServer(tb testing.TB, answer string) string {
	tb.Helper()
	ans := []byte(answer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) == 2 && line[0] == '\r' {
						if _, err := c.Write(ans); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
