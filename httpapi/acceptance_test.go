package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/loadgen"
)

// queueRequest tells a waiting-room poll or join of drop apart from the
// other requests, and names the poll's ticket.
func queueRequest(r *http.Request, drop string) (ticket string, poll, join bool) {
	queue := "/v1/drops/" + drop + "/queue"
	ticket, poll = strings.CutPrefix(r.URL.Path, queue+"/")
	poll = poll && r.Method == http.MethodGet && !strings.Contains(ticket, "/")
	join = r.URL.Path == queue && r.Method == http.MethodPost
	return ticket, poll, join
}

// ticketAnswer is what the watches read of a poll's or a join's answer.
type ticketAnswer struct {
	Ticket      string `json:"ticket"`
	State       string `json:"state"`
	PollAfterMS int64  `json:"poll_after_ms"`
}

// watch sees every answer of one queued drop's API as the server gives
// it: when the last slot went, when the server first said sold_out, the
// last waiting answer of each ticket and the return it advised, and
// whether any claim won without an admission.
type watch struct {
	drop string

	mu          sync.Mutex
	lastWin     time.Time
	firstSold   time.Time       // the first sold_out answer written
	waitingRead map[string]read // ticket → last waiting answer (join or poll)
	lateWaiting []time.Duration // waiting answers to requests that arrived after firstSold, by how much
	admitted    map[string]bool
	wins        int
	unadmitted  int // 201s to claims without Dibs-Admission
	statuses    map[int]int
}

// read is an answer that said waiting: when, and when to come back.
type read struct {
	at, next time.Time
}

type capture struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
	keep   bool
}

func (c *capture) WriteHeader(s int) { c.status = s; c.ResponseWriter.WriteHeader(s) }
func (c *capture) Write(b []byte) (int, error) {
	if c.keep {
		c.body.Write(b)
	}
	return c.ResponseWriter.Write(b)
}

func (w *watch) wrap(next http.Handler) http.Handler {
	claims := "/v1/drops/" + w.drop + "/claims"
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		arrived := time.Now()
		ticket, isPoll, isJoin := queueRequest(r, w.drop)
		c := &capture{ResponseWriter: rw, status: 200, keep: isPoll || isJoin}
		next.ServeHTTP(c, r)
		var ans ticketAnswer
		if (isPoll || isJoin) && c.status/100 == 2 {
			json.Unmarshal(c.body.Bytes(), &ans)
			if isJoin {
				ticket = ans.Ticket
			}
		}
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		w.statuses[c.status]++
		switch {
		case r.URL.Path == claims && c.status == http.StatusCreated:
			w.wins++
			w.lastWin = now
			if r.Header.Get("Dibs-Admission") == "" {
				w.unadmitted++
			}
		case ans.State == "admitted":
			w.admitted[ticket] = true
		case ans.State == "sold_out":
			if w.firstSold.IsZero() {
				w.firstSold = now
			}
		case ans.State == "waiting":
			w.waitingRead[ticket] = read{at: now, next: now.Add(time.Duration(ans.PollAfterMS) * time.Millisecond)}
			if !w.firstSold.IsZero() && arrived.After(w.firstSold) {
				w.lateWaiting = append(w.lateWaiting, arrived.Sub(w.firstSold))
			}
		}
	})
}

// clientWatch sees the same answers as the load generator's users receive
// them: for each ticket, when the first sold_out arrived, and when the
// poll that brought it was due by the advice of the answer before.
type clientWatch struct {
	next http.RoundTripper
	drop string

	mu      sync.Mutex
	tickets map[string]*clientTicket
	polls   []clientPoll // every poll answered, for the machine's lateness
}

type clientTicket struct {
	due    time.Time // when the latest answer advised to come back
	soldAt time.Time // receipt of the first sold_out answer
	soldBy time.Time // when the poll that brought it was due
}

// clientPoll is one poll: when it was due and when its answer arrived.
type clientPoll struct {
	due, at time.Time
}

func (c *clientWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	ticket, isPoll, isJoin := queueRequest(r, c.drop)
	if !isPoll && !isJoin {
		return c.next.RoundTrip(r)
	}
	res, err := c.next.RoundTrip(r)
	if err != nil {
		return res, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil || res.StatusCode/100 != 2 {
		return res, err
	}
	at := time.Now()
	var ans ticketAnswer
	json.Unmarshal(body, &ans)
	if isJoin {
		ticket = ans.Ticket
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tickets[ticket]
	if t == nil {
		t = &clientTicket{}
		c.tickets[ticket] = t
	}
	if isPoll && !t.due.IsZero() {
		c.polls = append(c.polls, clientPoll{due: t.due, at: at})
	}
	if ans.State == "sold_out" && t.soldAt.IsZero() {
		t.soldAt, t.soldBy = at, t.due
	}
	t.due = at.Add(time.Duration(ans.PollAfterMS) * time.Millisecond)
	return res, nil
}

// TestAcceptanceQueuedDrop runs the whole waiting room under load: a
// queued drop of 1,000 admitting 500 people a second; 20,000 users join,
// poll as the server advises, and claim when admitted, while others try
// to claim around the room. Exactly 1,000 win, no claim wins without a
// valid admission, and every user still waiting reads sold_out within a
// second of the last slot going.
//
// The load generator and the server share the machine, so what a user
// sees is the server's doing plus the machine's queueing. The server's
// part is asserted exactly: from the first sold_out it says, it never says
// waiting again, and each waiting answer it gave asked the user back
// within the second after the last slot went. What users saw is asserted
// too: the 99th percentile of their time to sold_out within the second
// plus how late the machine ran their polls (the 99th percentile of polls
// answered after they were due, which is a few milliseconds on an idle
// machine). A run in which the timed checks fail is tried again, twice.
func TestAcceptanceQueuedDrop(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a load test: not with -short or the race detector")
	}
	retryTimed(t, 3, func() []string { return acceptanceRun(t) })
}

// retryTimed runs a check with timed parts up to n times and passes on
// the first run whose timed parts pass (loadgen's tests do the same): a
// timed property is shown by one run that keeps it, and a run on a
// machine whose cores other work took is logged and tried again. The run
// fails the test at once for what does not depend on timing.
func retryTimed(t *testing.T, n int, run func() (timed []string)) {
	t.Helper()
	var last []string
	for i := range n {
		if last = run(); len(last) == 0 || t.Failed() {
			return
		}
		t.Logf("attempt %d of %d: %s", i+1, n, strings.Join(last, "; "))
	}
	t.Errorf("every attempt failed; the last: %s", strings.Join(last, "; "))
}

func acceptanceRun(t *testing.T) []string {
	const stock, rate, users = 1000, 500, 20_000
	w := &watch{drop: "iphone", waitingRead: map[string]read{}, admitted: map[string]bool{}, statuses: map[int]int{}}
	cw := &clientWatch{next: loadgen.NewTransport(loadgen.DefaultMaxConns), drop: "iphone", tickets: map[string]*clientTicket{}}
	b := setupRoom(t, roomSetup{wrap: w.wrap, limits: httpapi.Limits{Claim: 4096, Read: 4096, Admin: 64, Ops: 64, Queue: 20_000}})
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	if err := loadgen.CreateDrop(ctx, nil, b.srv.URL, adminToken, loadgen.DropSpec{ID: "iphone", Stock: stock, QueueRate: rate}); err != nil {
		t.Fatal(err)
	}

	// Meanwhile, people try to claim around the room.
	stop := make(chan struct{})
	var bypassed, tries atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		forged := "a1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			req, _ := http.NewRequest("POST", b.srv.URL+"/v1/drops/iphone/claims", nil)
			req.Header.Set("Authorization", "Bearer "+pass(t, "intruder"))
			if i%2 == 0 {
				req.Header.Set("Dibs-Admission", forged)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				continue
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			tries.Add(1)
			if res.StatusCode != http.StatusForbidden {
				bypassed.Add(1)
			}
		}
	})

	rep, err := loadgen.Run(ctx, loadgen.Config{
		Target: b.srv.URL, DropID: "iphone", Users: users,
		Profile:        loadgen.Profile{Shape: loadgen.Spike, Duration: 2 * time.Second},
		RetryFraction:  0.2,
		PassportSecret: secret, AdminToken: adminToken, Seed: 1,
		MaxInFlight: 20_000, QueueWait: time.Minute,
		Client: &http.Client{Transport: cw},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	var sum bytes.Buffer
	rep.Summary(&sum)
	t.Log(sum.String())
	for _, op := range rep.Ops {
		t.Logf("%-12s %+v", op.Op, op.Latency)
	}
	if !rep.Audit.OK {
		t.Fatalf("audit failed: %v", rep.Err())
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if rep.Totals.Wins != stock || w.wins != stock || w.unadmitted != 0 {
		t.Fatalf("%d wins reported, %d seen, %d without an admission; want %d, %d, 0", rep.Totals.Wins, w.wins, w.unadmitted, stock, stock)
	}
	if n := bypassed.Load(); n != 0 || tries.Load() == 0 {
		t.Fatalf("%d of %d claims around the room were not refused with 403", n, tries.Load())
	}
	if got := rep.Totals.Queue["admitted"]; got != stock {
		t.Fatalf("%d users admitted, want exactly the stock %d (queue: %v)", got, stock, rep.Totals.Queue)
	}

	// The server's part. From its first sold_out on, it never says waiting
	// (the room's view says sold out from then on, on every read), and
	// every waiting answer asked the user back within the second.
	deadline := w.lastWin.Add(time.Second)
	if n := len(w.lateWaiting); n > 0 {
		t.Errorf("%d waiting answers to polls that arrived after the first sold_out (up to %s after)", n, slices.Max(w.lateWaiting))
	}
	var lastAdvice time.Duration
	var late []time.Duration // client-observed, per ticket waiting at the sell-out
	for ticket, last := range w.waitingRead {
		if w.admitted[ticket] {
			continue
		}
		if last.next.After(deadline) {
			t.Errorf("a ticket read waiting %s before the last slot went was told to come back %s after it",
				w.lastWin.Sub(last.at), last.next.Sub(w.lastWin))
		}
		lastAdvice = max(lastAdvice, last.next.Sub(w.lastWin))
		c := cw.tickets[ticket]
		if c == nil || c.soldAt.IsZero() {
			t.Fatalf("a ticket waiting at the sell-out never read sold_out")
		}
		late = append(late, c.soldAt.Sub(w.lastWin))
	}
	if waiting := len(late); waiting < users-2*stock {
		t.Fatalf("only %d tickets were seen waiting", waiting)
	}
	if t.Failed() {
		return nil
	}

	// What users saw, and how late the machine ran the polls due around
	// the sell-out.
	var lag []time.Duration
	for _, p := range cw.polls {
		if !p.due.Before(w.lastWin.Add(-time.Second)) && p.due.Before(deadline) {
			lag = append(lag, max(p.at.Sub(p.due), 0))
		}
	}
	q := func(d []time.Duration, f float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[int(f*float64(len(d)-1))].Round(time.Millisecond)
	}
	slices.Sort(late)
	slices.Sort(lag)
	noticed := w.firstSold.Sub(w.lastWin).Round(time.Millisecond)
	t.Logf("after the last slot went: the server said sold_out after %s; the latest return it advised %s", noticed, lastAdvice.Round(time.Millisecond))
	t.Logf("%d users waiting at the sell-out read sold_out after it: p50 %s, p90 %s, p99 %s, max %s",
		len(late), q(late, .5), q(late, .9), q(late, .99), q(late, 1))
	t.Logf("the machine ran the %d polls due around the sell-out late by p50 %s, p99 %s, max %s; answers by status %v",
		len(lag), q(lag, .5), q(lag, .99), q(lag, 1), w.statuses)

	var timed []string
	if noticed > 250*time.Millisecond {
		timed = append(timed, fmt.Sprintf("the server said sold_out %s after the last slot went, want within 250ms", noticed))
	}
	if budget := time.Second + q(lag, .99); q(late, .99) > budget {
		timed = append(timed, fmt.Sprintf("users read sold_out at p99 %s after the sell-out, over the second plus the machine's p99 lateness (%s)", q(late, .99), budget))
	}
	return timed
}
