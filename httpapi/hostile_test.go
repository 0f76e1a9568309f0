package httpapi_test

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

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

// TestControlCharacters: titles, idempotency keys and passport subjects
// with control or format characters are refused with a stable code.
func TestControlCharacters(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"d","title":"Pepero Day – 빼빼로","kind":"coupon","stock":50}`)
	for _, title := range []string{`a\r\nb`, `a\nb`, `a\u0000b`, `a\u0085b`, `a\u2028b`, `a\u2029b`, `a\u202eb`, `a\u200db`, `a\u0007b`} {
		r := b.do(t, "POST", "/v1/admin/drops", adminToken, `{"title":"`+title+`","kind":"coupon","stock":1}`)
		if r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
			t.Errorf("title %s: %d %s, want 400 invalid", title, r.status, r.raw)
		}
	}
	for _, id := range []string{`a\u202eb`, `a\u0000`, `a\u2028`, `a\r\n`} {
		r := b.do(t, "POST", "/v1/admin/drops", adminToken, `{"id":"`+id+`","title":"t","kind":"coupon","stock":1}`)
		if r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
			t.Errorf("drop id %s: %d %s, want 400 invalid", id, r.status, r.raw)
		}
	}
	for _, path := range []string{"/v1/drops/a%E2%80%AEb", "/v1/drops/a%00b", "/v1/drops/a%C2%85b"} {
		if r := b.do(t, "GET", path, "", ""); r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
			t.Errorf("GET %s: %d %s, want 400 invalid", path, r.status, r.raw)
		}
	}
	for _, key := range []string{"a\u202eb", "a\u0085b", "a\u2028b", "a\u200bb"} {
		r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "u"), "", "Idempotency-Key", key)
		if r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
			t.Errorf("idempotency key %q: %d %s, want 400 invalid", key, r.status, r.raw)
		}
	}
	for _, sub := range []string{"evil\u202eexe", "a\u0085b", "a\u2028b", "a\u200eb"} {
		// The passport's issuer signed it; the subject cannot name a user.
		r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, sub), "")
		if r.status != http.StatusUnauthorized || r.problem.Code != dibs.EUNAUTHORIZED {
			t.Errorf("passport sub %q: %d %s, want 401 unauthorized", sub, r.status, r.raw)
		}
	}
	if r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "사용자-ünïcödé"), "", "Idempotency-Key", "키-1"); r.status != http.StatusCreated {
		t.Fatalf("printable non-ASCII user and key: %d %s", r.status, r.raw)
	}
}

// TestWinnersCSVInjection: a winners CSV cell that a spreadsheet would
// take for a formula starts with a single quote.
func TestWinnersCSVInjection(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":10}`)
	users := []string{`=HYPERLINK("http://x")`, "+1+1", "-2+3", "@SUM(A1)", "alice", "a=b"}
	for _, u := range users {
		if r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, u), ""); r.status != http.StatusCreated {
			t.Fatalf("claim of %q: %d %s", u, r.status, r.raw)
		}
	}
	r := b.do(t, "GET", "/v1/admin/drops/d/winners", adminToken, "", "Accept", "text/csv")
	rows, err := csv.NewReader(strings.NewReader(r.raw)).ReadAll()
	if err != nil || len(rows) != len(users)+1 {
		t.Fatalf("csv %q: %v", r.raw, err)
	}
	for i, u := range users {
		want := u
		if strings.ContainsAny(u[:1], "=+-@") {
			want = "'" + u
		}
		if got := rows[i+1][1]; got != want {
			t.Errorf("user_id cell %q, want %q", got, want)
		}
	}
}

// TestDuplicateNames: a JSON body may not name a member twice, however it
// spells it; unknown members stay refused.
func TestDuplicateNames(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	for _, body := range []string{
		`{"id":"a","ID":"b","title":"t","kind":"coupon","stock":1}`,
		`{"id":"a","id":"b","title":"t","kind":"coupon","stock":1}`,
		`{"id":"a","title":"t","kind":"coupon","stock":1,"Stock":2}`,
		`{"id":"a","title":"t","kind":"coupon","stoc\u212a":1,"stock":2}`, // the Kelvin sign folds to k
		`{"id":"a","title":"t","kind":"purchase","stock":1,"admission":{"mode":"queue","rate":1,"RATE":5}}`,
	} {
		r := b.do(t, "POST", "/v1/admin/drops", adminToken, body)
		if r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID || !strings.Contains(r.problem.Detail, "more than once") {
			t.Errorf("%s: %d %s, want 400 invalid naming the field", body, r.status, r.raw)
		}
	}
	if r := b.do(t, "GET", "/v1/admin/drops/a", adminToken, ""); r.status != http.StatusNotFound {
		t.Fatalf("a drop was created from a body with duplicate names: %d %s", r.status, r.raw)
	}
	// Names in different objects, and equal strings as values, are fine.
	b.mustCreateDrop(t, `{"id":"mode","title":"mode","kind":"coupon","stock":1,"admission":{"mode":"queue","rate":1}}`)
	if r := b.do(t, "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"coupon","stock":1,"x":1}`); r.status != http.StatusBadRequest || !strings.Contains(r.problem.Detail, `"x"`) {
		t.Fatalf("unknown field: %d %s", r.status, r.raw)
	}
}

// TestAuthorizationAndCaching: two Authorization headers are refused;
// claim and admin answers are never cached.
func TestAuthorizationAndCaching(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	for _, path := range []string{"/v1/drops/d/claims", "/v1/admin/drops/d/pause"} {
		req, _ := http.NewRequest("POST", b.srv.URL+path, nil)
		req.Header.Add("Authorization", "Bearer "+adminToken)
		req.Header.Add("Authorization", "Bearer "+pass(t, "u"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p httpapi.Problem
		err = jsonDecode(res, &p)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || err != nil || p.Code != dibs.EINVALID {
			t.Fatalf("%s with two Authorization headers: %d %+v", path, res.StatusCode, p)
		}
	}

	alice := pass(t, "alice")
	won := b.do(t, "POST", "/v1/drops/d/claims", alice, "")
	id, _ := won.body["claim_id"].(string)
	answers := map[string]response{
		"claim 201":     won,
		"claim 200":     b.do(t, "POST", "/v1/drops/d/claims", alice, ""),
		"claim read":    b.do(t, "GET", "/v1/claims/"+id, alice, ""),
		"claim problem": b.do(t, "POST", "/v1/drops/nope/claims", alice, ""),
		"create drop":   b.do(t, "POST", "/v1/admin/drops", adminToken, `{"id":"e","title":"e","kind":"coupon","stock":1}`),
		"list drops":    b.do(t, "GET", "/v1/admin/drops", adminToken, ""),
		"drop stats":    b.do(t, "GET", "/v1/admin/drops/d", adminToken, ""),
		"winners":       b.do(t, "GET", "/v1/admin/drops/d/winners", adminToken, ""),
		"winners csv":   b.do(t, "GET", "/v1/admin/drops/d/winners", adminToken, "", "Accept", "text/csv"),
		"pause":         b.do(t, "POST", "/v1/admin/drops/d/pause", adminToken, ""),
		"jobs":          b.do(t, "GET", "/v1/admin/drops/d/jobs", adminToken, ""),
		"failed hooks":  b.do(t, "GET", "/v1/admin/webhooks/failed", adminToken, ""),
	}
	for name, r := range answers {
		if r.status >= 500 || r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d, Cache-Control %q, want no-store", name, r.status, r.header.Get("Cache-Control"))
		}
	}
}

// TestAlgorithmSwap: a passport signed with the right secret under another
// algorithm than HS256 is refused, so is one whose header names RS256 over
// an HMAC signature (the key-confusion attack).
func TestAlgorithmSwap(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	claims := jwt.MapClaims{"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()}
	var tokens []string
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		tok, err := jwt.NewWithClaims(m, claims).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
	}
	enc := base64.RawURLEncoding
	for _, alg := range []string{"RS256", "ES256", "none", "hs256"} {
		head := enc.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"JWT"}`))
		body := enc.EncodeToString(fmt.Appendf(nil, `{"sub":"mallory","exp":%d}`, time.Now().Add(time.Hour).Unix()))
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(head + "." + body))
		tokens = append(tokens, head+"."+body+"."+enc.EncodeToString(mac.Sum(nil)))
	}
	for _, tok := range tokens {
		if r := b.do(t, "POST", "/v1/drops/d/claims", tok, ""); r.status != http.StatusUnauthorized || r.problem.Code != dibs.EUNAUTHORIZED {
			t.Errorf("passport %s…: %d %s, want 401", tok[:20], r.status, r.raw)
		}
	}
}

// hardened starts a server with the connection limits dibs serve uses.
func hardened(t *testing.T) *roomBundle {
	return setupRoom(t, roomSetup{server: func(s *http.Server) {
		ref := httpapi.NewHTTPServer(nil)
		s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout = ref.ReadHeaderTimeout, ref.ReadTimeout, ref.WriteTimeout
		s.IdleTimeout, s.MaxHeaderBytes = ref.IdleTimeout, ref.MaxHeaderBytes
	}})
}

// TestSlowHeaders: a client sending its headers a line at a time is cut
// off (after ReadHeaderTimeout) and holds nothing others need meanwhile.
func TestSlowHeaders(t *testing.T) {
	t.Parallel()
	b := hardened(t)
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	c := rawConn(t, b.bundle, "POST /v1/drops/d/claims HTTP/1.1\r\nHost: dibs\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the attack: a header line now and then, never the end
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := fmt.Fprintf(c, "X-Slow-%d: 1\r\n", i); err != nil {
					return
				}
			}
		}
	}()
	for i := range 5 {
		if r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, fmt.Sprint("u", i)), ""); r.status != http.StatusCreated {
			t.Fatalf("claim while headers trickle: %d %s", r.status, r.raw)
		}
	}
	// Cut off: the read ends, with nothing or a 408, well before the
	// deadline (generous: the machine may be starved).
	c.SetReadDeadline(time.Now().Add(httpapi.ReadHeaderTimeout + answerWait))
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("a connection trickling its headers was never cut off")
			}
			return
		}
		if n > 0 && !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 408") {
			t.Fatalf("a connection trickling its headers was answered %q", buf[:n])
		}
	}
}

// TestOversizedHeaders: headers over MaxHeaderBytes are refused (431,
// answered by net/http in text/plain before any handler runs).
func TestOversizedHeaders(t *testing.T) {
	t.Parallel()
	b := hardened(t)
	c := rawConn(t, b.bundle, "GET /healthz HTTP/1.1\r\nHost: dibs\r\nX-Big: "+strings.Repeat("x", 2*httpapi.MaxHeaderBytes)+"\r\n\r\n")
	res, _ := readAnswer(t, c)
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers: %d, want 431", res.StatusCode)
	}
	if r := b.do(t, "GET", "/healthz", "", ""); r.status != http.StatusOK {
		t.Fatalf("healthz after: %d", r.status)
	}
}

// TestPageEscaping: a drop's title never reaches the waiting-room page as
// markup: the page is static, the script sets text only, and the JSON it
// reads escapes <, > and &.
func TestPageEscaping(t *testing.T) {
	t.Parallel()
	b := setupRoom(t, roomSetup{})
	const title = `<script>alert(1)</script><img src=x onerror=alert(2)>&amp;`
	b.mustCreateDrop(t, `{"id":"q","title":"`+strings.ReplaceAll(title, `"`, `\"`)+`","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":1}}`)
	page := b.do(t, "GET", "/d/q", "", "")
	if page.status != http.StatusOK || strings.Contains(page.raw, "alert(") || !strings.Contains(page.header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("page: %d %q", page.status, page.raw)
	}
	drop := b.do(t, "GET", "/v1/drops/q", "", "")
	if drop.body["title"] != title || strings.ContainsAny(drop.raw, "<>") || strings.Contains(drop.raw, "&amp;") {
		t.Fatalf("public drop: %s", drop.raw)
	}
	js := b.do(t, "GET", "/assets/room.js", "", "")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(js.raw, sink) {
			t.Errorf("room.js uses %s", sink)
		}
	}
}

// TestAdmissionReplayAtOnce: one admission replayed by 200 claims released
// together wins once (201) and answers the other 199 with that claim (200).
func TestAdmissionReplayAtOnce(t *testing.T) {
	t.Parallel()
	b := setupRoom(t, roomSetup{})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":100,"admission":{"mode":"queue","rate":100}}`)
	alice := pass(t, "alice")
	j := b.do(t, "POST", "/v1/drops/q/queue", alice, "")
	adm := b.waitAdmitted(t, "q", alice, j.body["ticket"].(string)).body["admission"].(string)
	const replays = 200
	start := make(chan struct{})
	answers := make(chan response, replays)
	var wg sync.WaitGroup
	for range replays {
		wg.Go(func() {
			<-start
			answers <- b.do(t, "POST", "/v1/drops/q/claims", alice, "", "Dibs-Admission", adm)
		})
	}
	close(start)
	wg.Wait()
	close(answers)
	status, claims := map[int]int{}, map[any]bool{}
	for r := range answers {
		status[r.status]++
		claims[r.body["claim_id"]] = true
	}
	if status[http.StatusCreated] != 1 || status[http.StatusOK] != replays-1 || len(claims) != 1 {
		t.Fatalf("answers by status %v, %d distinct claims; want 1 × 201, %d × 200, one claim", status, len(claims), replays-1)
	}
}
