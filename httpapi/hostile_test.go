package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/httpapi"
)

// answerWait bounds how long a test waits for an answer the server gives at
// once: generous, because the machine may be starved; no assertion is a
// bound on time.
const answerWait = 30 * time.Second

// rawConn opens a TCP connection to b's server and writes head to it.
func rawConn(t *testing.T, b *bundle, head string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", b.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	return c
}

// readAnswer reads an HTTP answer from c and its problem, if it is one.
func readAnswer(t *testing.T, c net.Conn) (*http.Response, httpapi.Problem) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(answerWait))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer res.Body.Close()
	var p httpapi.Problem
	if res.Header.Get("Content-Type") == "application/problem+json" {
		if err := jsonDecode(res, &p); err != nil {
			t.Fatalf("problem body: %v", err)
		}
	}
	return res, p
}

// statusRecorder remembers the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func jsonDecode(res *http.Response, v any) error { return json.NewDecoder(res.Body).Decode(v) }

// TestSlowBodyHoldsNoWorker: eight connections of one passport that send
// Content-Length: 1000 and then trickle the body hold no claim worker and
// no place of any route class, so honest claims on another drop are
// answered as usual (201, then 410) while the eight are mid-body. The
// attackers never send more than a few of their thousand bytes: they are
// mid-body for the whole test, and each is refused at once (413).
func TestSlowBodyHoldsNoWorker(t *testing.T) {
	t.Parallel()
	const attackers = 8
	entered := make(chan struct{}, attackers)
	answered := make(chan int, attackers)
	b := setupRoom(t, roomSetup{
		// Two claim workers, as on one core: eight slow bodies would hold
		// them all if a claim took its worker before reading its body.
		limits: httpapi.Limits{Claim: 64, Read: 64, Admin: 64, Ops: 64, ClaimWorkers: 2},
		wrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.ContentLength != 1000 {
					next.ServeHTTP(w, r)
					return
				}
				entered <- struct{}{}
				rec := &statusRecorder{ResponseWriter: w}
				next.ServeHTTP(rec, r)
				answered <- rec.status
			})
		},
	})
	b.mustCreateDrop(t, `{"id":"target","title":"t","kind":"coupon","stock":100}`)
	b.mustCreateDrop(t, `{"id":"honest","title":"h","kind":"coupon","stock":3}`)

	mallory := pass(t, "mallory")
	var conns []net.Conn
	for range attackers {
		conns = append(conns, rawConn(t, b.bundle, "POST /v1/drops/target/claims HTTP/1.1\r\nHost: dibs\r\n"+
			"Authorization: Bearer "+mallory+"\r\nContent-Length: 1000\r\n\r\n{"))
	}
	for range attackers {
		<-entered // the server is handling every attacker's request
	}
	trickle := func() {
		for _, c := range conns {
			c.Write([]byte(" ")) // the server may have hung up already: fine
		}
	}

	created, gone := 0, 0
	for i := range 6 {
		trickle()
		r := b.do(t, "POST", "/v1/drops/honest/claims", pass(t, fmt.Sprint("honest-", i)), "")
		switch r.status {
		case http.StatusCreated:
			created++
		case http.StatusGone:
			gone++
		default:
			t.Fatalf("honest claim %d while eight slow bodies trickle: %d %s, want 201 or 410", i, r.status, r.raw)
		}
	}
	if created != 3 || gone != 3 {
		t.Fatalf("%d created, %d sold out; want 3 and 3", created, gone)
	}
	// Each attacker has sent at most 7 of its 1000 bytes, and was answered.
	for range attackers {
		select {
		case status := <-answered:
			if status != http.StatusRequestEntityTooLarge {
				t.Fatalf("a slow body was answered %d, want 413", status)
			}
		case <-time.After(answerWait):
			t.Fatal("a slow body was not refused before its end")
		}
	}
}

// TestNoBodyRefusedAtOnce: a request that takes no body is refused, before
// its body arrives, if it announces more than MaxNoBody bytes or a chunked
// body; a small empty object is still accepted.
func TestNoBodyRefusedAtOnce(t *testing.T) {
	t.Parallel()
	b := setupWith(t, httpapi.Limits{}, nil)
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	auth := "Authorization: Bearer " + pass(t, "mallory") + "\r\n"
	for _, path := range []string{"POST /v1/drops/d/claims", "POST /v1/drops/d/queue", "POST /v1/claims/abc/pay", "GET /v1/drops/d", "POST /v1/admin/drops/d/pause"} {
		for _, tt := range []struct {
			name, head string
			status     int
			code       string
		}{
			{"long", fmt.Sprintf("Content-Length: %d\r\n\r\n{", httpapi.MaxNoBody+1), 413, dibs.ETOOLARGE},
			{"chunked", "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", 400, dibs.EINVALID},
		} {
			t.Run(path+" "+tt.name, func(t *testing.T) {
				c := rawConn(t, b, path+" HTTP/1.1\r\nHost: dibs\r\n"+auth+tt.head)
				res, p := readAnswer(t, c)
				if res.StatusCode != tt.status || p.Code != tt.code || p.Detail == "" {
					t.Fatalf("%d %+v, want %d %s", res.StatusCode, p, tt.status, tt.code)
				}
				if !res.Close {
					t.Fatal("the connection stays open, want Connection: close: the rest of the body is not read")
				}
			})
		}
	}
	if r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "u"), " { } "); r.status != http.StatusCreated {
		t.Fatalf("a claim with an empty object: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "v"), `{"a":1}`); r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
		t.Fatalf("a claim with a field: %d %s", r.status, r.raw)
	}
}

// TestStreamsPerTicket: a ticket has at most StreamsPerTicket event
// streams, a second one only while the node's streams are less than half
// used; refused streams are told to poll, and polling works.
func TestStreamsPerTicket(t *testing.T) {
	t.Parallel()
	// refusals hears of each refused stream once its handler has returned
	// and given back its place in the stream class.
	refusals := make(chan struct{}, 8)
	b := setupRoom(t, roomSetup{
		limits: httpapi.Limits{Claim: 10, Read: 10, Admin: 10, Ops: 10, Queue: 10, Stream: 4},
		wrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rec := &statusRecorder{ResponseWriter: w}
				next.ServeHTTP(rec, r)
				if strings.HasSuffix(r.URL.Path, "/events") && rec.status != http.StatusOK {
					refusals <- struct{}{}
				}
			})
		},
	})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":5,"opens_at":"2099-01-01T00:00:00Z","admission":{"mode":"queue","rate":1}}`)
	users := []string{"a", "b", "c", "d"}
	tickets := map[string]string{}
	for _, u := range users {
		tickets[u] = b.do(t, "POST", "/v1/drops/q/queue", pass(t, u), "").body["ticket"].(string)
	}
	open := func(u string) *http.Response {
		res := openStream(t, b, "q", pass(t, u), tickets[u])
		if res.StatusCode == http.StatusOK {
			<-readEvents(res) // its first event: the stream is counted
		}
		return res
	}
	refused := func(res *http.Response, status int, code string) {
		t.Helper()
		var p httpapi.Problem
		if err := jsonDecode(res, &p); err != nil || res.StatusCode != status || p.Code != code || !strings.Contains(p.Detail, "poll") {
			t.Fatalf("refused stream: %d %+v (%v), want %d %s telling to poll", res.StatusCode, p, err, status, code)
		}
		<-refusals
	}
	if httpapi.StreamsPerTicket != 2 {
		t.Fatalf("StreamsPerTicket = %d; the docs say 2", httpapi.StreamsPerTicket)
	}
	for range 2 {
		if res := open("a"); res.StatusCode != http.StatusOK {
			t.Fatalf("a's stream: %d", res.StatusCode)
		}
	}
	refused(open("a"), http.StatusTooManyRequests, dibs.ETHROTTLED) // a third
	if res := open("b"); res.StatusCode != http.StatusOK {
		t.Fatalf("b's stream: %d", res.StatusCode)
	}
	refused(open("b"), http.StatusTooManyRequests, dibs.ETHROTTLED) // 3 of 4 open: firsts only
	if res := open("c"); res.StatusCode != http.StatusOK {
		t.Fatalf("c's stream: %d", res.StatusCode)
	}
	refused(open("d"), http.StatusServiceUnavailable, dibs.EOVERLOADED) // all 4 open
	if r := b.do(t, "GET", "/v1/drops/q/queue/"+tickets["d"], pass(t, "d"), ""); r.status != http.StatusOK {
		t.Fatalf("polling while streams are full: %d %s", r.status, r.raw)
	}
}
