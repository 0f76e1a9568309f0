package loadgen

import (
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// op names a kind of request the generator sends.
type op string

const (
	opClaim     op = "claim"      // POST /v1/drops/{id}/claims
	opQueueJoin op = "queue_join" // POST /v1/drops/{id}/queue
	opQueuePoll op = "queue_poll" // GET /v1/drops/{id}/queue/{ticket}
	opPay       op = "pay"        // POST /v1/claims/{id}/pay
	opClaimPoll op = "claim_poll" // GET /v1/claims/{id}, a winner waiting for its payment
	opDropRead  op = "drop_read"  // regular: GET /v1/drops/{id}
	opClaimRead op = "claim_read" // regular: GET /v1/claims/{id}
)

func (o op) regular() bool { return o == opDropRead || o == opClaimRead }

// Labels of answers that are not HTTP statuses.
const (
	codeTimeout   = "timeout"   // the request timed out: outcome unknown
	codeTransport = "transport" // the connection failed: outcome unknown
	codeCanceled  = "canceled"  // the run was stopped
)

// Latencies are recorded in microseconds, from 1µs to two minutes; a longer
// one is recorded as two minutes.
const (
	maxLatencyMicros = int64(2 * time.Minute / time.Microsecond)
	maxSeries        = 3600 // steps of the series; later ones fold into the last
)

func newHistogram(sigfigs int) *hdrhistogram.Histogram {
	return hdrhistogram.New(1, maxLatencyMicros, sigfigs)
}

type answerKey struct {
	op     op
	status int
	code   string
}

// label is how an answer is named in the series and the progress line: its
// status, or for an answer that never came, why.
func label(status int, code string) string {
	if status == 0 {
		return code
	}
	if status > 0 && status < len(statusLabels) {
		return statusLabels[status]
	}
	return strconv.Itoa(status)
}

// statusLabels are the HTTP statuses as strings, made once: a label per
// answer would otherwise allocate one.
var statusLabels = func() (l [600]string) {
	for i := range l {
		l[i] = strconv.Itoa(i)
	}
	return l
}()

// recorder collects every answer. It is safe for concurrent use; one mutex
// suffices at the rates one machine can send (a record is a few hundred ns).
type recorder struct {
	start time.Time     // time 0 of the series
	step  time.Duration // width of one step of the series

	mu       sync.Mutex
	ops      map[op]*hdrhistogram.Histogram
	server   map[op]*hdrhistogram.Histogram // the server's time, from Server-Timing
	regular  *hdrhistogram.Histogram        // both regular ops together
	answers  map[answerKey]int64
	claims   map[string]int64 // claim answers by label, for the progress line
	requests int64            // spike requests answered
	steps    []*step
}

// step is what happened during one step of the run's series.
type step struct {
	arrivals        int64
	requests        int64            // spike requests answered
	answers         map[string]int64 // claim answers by label
	claims          *hdrhistogram.Histogram
	regular         *hdrhistogram.Histogram
	regularRequests int64
	regularErrors   int64 // regular answers other than 2xx
}

func newRecorder(start time.Time, step time.Duration) *recorder {
	return &recorder{
		start:   start,
		step:    step,
		ops:     make(map[op]*hdrhistogram.Histogram),
		server:  make(map[op]*hdrhistogram.Histogram),
		regular: newHistogram(3),
		answers: make(map[answerKey]int64),
		claims:  make(map[string]int64),
	}
}

// at returns the step holding t; the caller holds mu.
func (r *recorder) at(t time.Time) *step {
	i := int(t.Sub(r.start) / r.step)
	i = min(max(i, 0), maxSeries-1)
	for len(r.steps) <= i {
		r.steps = append(r.steps, nil)
	}
	if r.steps[i] == nil {
		// Two significant figures keep a step's histograms near 20 KB each.
		r.steps[i] = &step{answers: make(map[string]int64), claims: newHistogram(2), regular: newHistogram(2)}
	}
	return r.steps[i]
}

// arrival counts a user arriving at its intended time.
func (r *recorder) arrival(intended time.Time) {
	r.mu.Lock()
	r.at(intended).arrivals++
	r.mu.Unlock()
}

// answer records one request: intended is when it should have been sent,
// done when its answer (or failure) came. The latency runs from intended,
// so a server stall shows in full even when it held the sender back.
//
// server is the server's own time on it (Server-Timing), when hasServer.
func (r *recorder) answer(o op, status int, code string, intended, done time.Time, server time.Duration, hasServer bool) {
	lat := min(max(done.Sub(intended).Microseconds(), 1), maxLatencyMicros)
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.ops[o]
	if h == nil {
		h = newHistogram(3)
		r.ops[o] = h
	}
	_ = h.RecordValue(lat)
	if hasServer {
		sh := r.server[o]
		if sh == nil {
			sh = newHistogram(3)
			r.server[o] = sh
		}
		_ = sh.RecordValue(min(max(server.Microseconds(), 1), maxLatencyMicros))
	}
	r.answers[answerKey{o, status, code}]++
	s := r.at(done)
	if o.regular() {
		_ = r.regular.RecordValue(lat)
		_ = s.regular.RecordValue(lat)
		s.regularRequests++
		if status < 200 || status > 299 {
			s.regularErrors++
		}
		return
	}
	r.requests++
	s.requests++
	if o == opClaim {
		l := label(status, code)
		r.claims[l]++
		s.answers[l]++
		_ = s.claims.RecordValue(lat)
	}
}

// progress is a moment's view for the progress line.
type progress struct {
	requests int64
	claims   []labelCount
	p99      time.Duration
}

type labelCount struct {
	label string
	n     int64
}

func (r *recorder) progress() progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := progress{requests: r.requests}
	if h := r.ops[opClaim]; h != nil {
		p.p99 = time.Duration(h.ValueAtQuantile(99)) * time.Microsecond
	}
	for l, n := range r.claims {
		p.claims = append(p.claims, labelCount{l, n})
	}
	sort.Slice(p.claims, func(i, j int) bool { return p.claims[i].label < p.claims[j].label })
	return p
}
