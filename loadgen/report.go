package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dibs-io/dibs"
)

// Report is what a run did and found. It serialises to JSON as is; times are
// offsets in seconds or durations in milliseconds, never wall-clock times.
type Report struct {
	Config RunConfig `json:"config"`
	Drop   DropInfo  `json:"drop"`

	// DurationMS runs from the first arrival's intended time to the end of
	// the last user.
	DurationMS float64 `json:"duration_ms"`
	// SpikeStartS is the offset of the first arrival in the series (the
	// regular traffic's lead).
	SpikeStartS float64 `json:"spike_start_s"`
	Totals      Totals  `json:"totals"`
	// Answers counts every answer of the spike and the regular traffic by
	// request, status and problem code.
	Answers []Answer `json:"answers"`
	// RequestsPerSecond is the spike's answered requests over DurationMS.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// Latency is the claims', each from its intended send time: what a
	// user waited, the generator's own lag included.
	Latency Latency `json:"latency"`
	// ServerLatency is the claims' time inside the server, from the
	// Server-Timing header of each answer (absent when the server sends
	// none): the server's share of Latency.
	ServerLatency *Latency `json:"server_latency,omitempty"`
	// Ops is the latency of each kind of request.
	Ops []OpLatency `json:"ops"`
	// Generator says whether the generator kept its schedule.
	Generator Generator `json:"generator"`
	// SellOutMS runs from the first arrival to the first sign that the drop
	// sold out (a sold_out answer or a read of remaining 0); absent if it did
	// not sell out.
	SellOutMS *float64 `json:"sell_out_ms,omitempty"`
	// MissedStarts counts arrivals whose first request went out more than
	// StartSlack late (the dispatcher fell behind or the transport had no
	// free connection) or waited for an in-flight place: the generator
	// could not keep the schedule for them.
	MissedStarts  int64   `json:"missed_starts"`
	MaxStartLagMS float64 `json:"max_start_lag_ms"`
	// Nodes is what went to each target, when there were several.
	Nodes []NodeStats `json:"nodes,omitempty"`

	// Series is the run step by step, StepS seconds a step.
	StepS     float64           `json:"step_s"`
	Series    []Step            `json:"series"`
	Remaining []RemainingSample `json:"remaining"`
	Regular   *RegularReport    `json:"regular,omitempty"`
	Audit     Audit             `json:"audit"`

	// shard is what Merge needs of a shard's run (see WriteShard).
	shard *ShardResult
}

// RunConfig is the part of Config a report shows (no secrets).
type RunConfig struct {
	// Target is the one target, or the first of several: the node the
	// setup and the audit read from.
	Target string `json:"target"`
	// Targets are every target, when there were several.
	Targets         []string `json:"targets,omitempty"`
	Sticky          bool     `json:"sticky,omitempty"`
	DropID          string   `json:"drop_id"`
	Users           int      `json:"users"`
	Profile         string   `json:"profile"`
	SpanMS          float64  `json:"span_ms"`   // first to last intended arrival
	PeakRate        float64  `json:"peak_rate"` // arrivals per second at the peak
	RetryFraction   float64  `json:"retry_fraction"`
	IdempotencyKeys bool     `json:"idempotency_keys"`
	MaxRetries      int      `json:"max_retries"`
	MaxInFlight     int      `json:"max_in_flight"`
	RegularRate     float64  `json:"regular_rate"`
	Seed            int64    `json:"seed"`
}

// Generator is how well the generator kept its schedule. When it fell
// behind by itself (Bound), the latencies from intended send time include
// its own lag: they measure the generator, and ServerLatency is the
// server's share. k6 calls the arrivals it could not start on time dropped
// iterations.
type Generator struct {
	// Bound is set when the generator fell behind its schedule by itself:
	// its dispatcher's own lag (beyond the time it waited for the server's
	// backlog) exceeded both StartSlack and a tenth of the schedule's span,
	// or more than a tenth of the arrivals started late by its own lag.
	// Its lag is then part of the end-to-end latencies.
	Bound bool `json:"bound"`
	// ScheduledRate is the schedule's mean arrival rate, users over span;
	// AchievedRate the rate of arrivals actually started, first to last.
	ScheduledRate float64 `json:"scheduled_rate"`
	AchievedRate  float64 `json:"achieved_rate"`
	// MaxOwnLagMS is the dispatcher's largest lag of its own.
	MaxOwnLagMS float64 `json:"max_own_lag_ms"`
	// The missed starts by cause: the generator's own lag, and the
	// server's backlog (every in-flight place or connection busy with an
	// earlier request still unanswered).
	MissedOwnLag  int64 `json:"missed_own_lag"`
	MissedBacklog int64 `json:"missed_backlog"`
}

// generatorBound judges a run (see Generator.Bound). A short stall of a
// starved machine is not a verdict on a long run, nor are a few late
// starts.
func generatorBound(ownLag, slack, span time.Duration, missedOwn, arrived int64) bool {
	return ownLag > max(slack, span/10) || missedOwn*10 > arrived
}

// NodeStats is what the generator sent to one of several targets.
type NodeStats struct {
	Target string `json:"target"`
	// Requests reached the node: answered, or cut off after connecting.
	Requests int64 `json:"requests"`
	// Refused counts requests whose connection the node refused; they went
	// on to the next node.
	Refused int64 `json:"refused"`
}

// TargetList names the targets, separated by commas.
func (c RunConfig) TargetList() string {
	if len(c.Targets) == 0 {
		return c.Target
	}
	return strings.Join(c.Targets, ",")
}

// DropInfo is the drop as the server described it before the run.
type DropInfo struct {
	ID            string `json:"id"`
	Title         string `json:"title"`
	Kind          string `json:"kind"`
	Stock         int64  `json:"stock"`
	PerUserLimit  int    `json:"per_user_limit"`
	Admission     string `json:"admission"`
	AdmissionRate int    `json:"admission_rate,omitempty"`
}

// Totals are the run's counts.
type Totals struct {
	Users   int   `json:"users"`
	Arrived int64 `json:"arrived"`
	// ArrivalRate is the achieved rate of arrivals, first to last, per second.
	ArrivalRate float64 `json:"arrival_rate"`
	Requests    int64   `json:"requests"` // spike requests answered or failed
	Claims      int64   `json:"claims"`
	Wins        int64   `json:"wins"`        // 201 answers
	AlreadyWon  int64   `json:"already_won"` // 200 answers
	SoldOut     int64   `json:"sold_out"`    // 410 sold_out answers
	Shed        int64   `json:"shed"`        // 429 and 503 answers
	NoAnswer    int64   `json:"no_answer"`   // timeouts and connection errors
	// Queue counts how users left the waiting room (queued drops).
	Queue map[string]int64 `json:"queue,omitempty"`
	// Payments counts how the payments of purchase drops settled.
	Payments map[string]int64 `json:"payments,omitempty"`
}

// Answer is a count of one kind of answer.
type Answer struct {
	Op     string `json:"op"`
	Status int    `json:"status"` // 0: no answer, see Code
	Code   string `json:"code,omitempty"`
	Count  int64  `json:"count"`
}

// unknownClaims counts the claims whose outcome the client never learnt:
// no answer, a 5xx, or a 503 unavailable (the server could not tell
// whether its gate took a slot); a shed claim (503 overloaded or paused)
// did nothing.
func (r *Report) unknownClaims() int64 {
	var n int64
	for _, a := range r.Answers {
		shed := a.Status == 503 && a.Code != dibs.EUNAVAILABLE
		if a.Op == string(opClaim) && (a.Status == 0 || a.Status >= 500 && !shed) {
			n += a.Count
		}
	}
	return n
}

// Latency summarises a histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// OpLatency is the latency of one kind of request.
type OpLatency struct {
	Op string `json:"op"`
	Latency
	// Server is its time inside the server (Server-Timing), when the
	// server said.
	Server *Latency `json:"server,omitempty"`
}

// Step is one step of the run: counts over the step (divide by StepS for
// rates) and latencies of the answers that came in during it. Answers belong
// to the step they came in; arrivals to the step they were due.
type Step struct {
	T        float64          `json:"t"` // seconds from the start of the series
	Arrivals int64            `json:"arrivals"`
	Requests int64            `json:"requests"`
	Answers  map[string]int64 `json:"answers"` // claims by status, or timeout/transport
	P50      float64          `json:"p50_ms"`
	P99      float64          `json:"p99_ms"`
	Max      float64          `json:"max_ms"`
	Regular  *RegularStep     `json:"regular,omitempty"`
}

// RegularStep is the regular traffic of one step.
type RegularStep struct {
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"` // answers other than 2xx
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
}

// RemainingSample is a read of the drop's remaining stock, T seconds into
// the series.
type RemainingSample struct {
	T         float64 `json:"t"`
	Remaining int64   `json:"remaining"`
}

// RegularReport is the regular traffic, measured apart from the spike.
type RegularReport struct {
	Rate         float64 `json:"rate"`
	Requests     int64   `json:"requests"`
	Errors       int64   `json:"errors"`
	MissedStarts int64   `json:"missed_starts"`
	Latency      Latency `json:"latency"`
	// Baseline is the latency before the first arrival, Spike during the
	// spike: the regular service kept its latency if they are close.
	Baseline Latency `json:"baseline"`
	Spike    Latency `json:"spike"`
}

// Err returns nil when the audit passed, else an error naming the failed
// checks.
func (r *Report) Err() error {
	if r.Audit.OK {
		return nil
	}
	var failed []string
	for _, c := range r.Audit.Checks {
		if c.Status == CheckFail {
			failed = append(failed, c.Name)
		}
	}
	if len(failed) == 0 {
		return errors.New("audit did not run")
	}
	return fmt.Errorf("audit failed: %s", strings.Join(failed, ", "))
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Summary writes a short account of r for people.
func (r *Report) Summary(w io.Writer) error {
	var b strings.Builder
	t := r.Totals
	fmt.Fprintf(&b, "%s\n", r.Headline())
	fmt.Fprintf(&b, "drop %s (%s, %s admission): stock %d, %d users over %s (%s, peak %.0f/s)\n",
		r.Drop.ID, r.Drop.Kind, r.Drop.Admission, r.Drop.Stock, r.Config.Users, ms(r.Config.SpanMS), r.Config.Profile, r.Config.PeakRate)
	fmt.Fprintf(&b, "winners:   %d acknowledged (201), %d already won (200), %d sold out (410)\n", t.Wins, t.AlreadyWon, t.SoldOut)
	if r.SellOutMS != nil {
		fmt.Fprintf(&b, "sell-out:  %s after the first arrival\n", ms(*r.SellOutMS))
	} else {
		fmt.Fprintf(&b, "sell-out:  not sold out\n")
	}
	fmt.Fprintf(&b, "load:      %d requests in %s, %.0f requests/s; arrivals %.0f/s\n", t.Requests, ms(r.DurationMS), r.RequestsPerSecond, t.ArrivalRate)
	fmt.Fprintf(&b, "claims:    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s (end to end, from intended send time)\n",
		ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.P999), ms(r.Latency.Max))
	if s := r.ServerLatency; s != nil {
		fmt.Fprintf(&b, "server:    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s (inside the server, from Server-Timing)\n",
			ms(s.P50), ms(s.P90), ms(s.P99), ms(s.P999), ms(s.Max))
	}
	fmt.Fprintf(&b, "answers:   %s\n", answerList(r.Answers, opClaim))
	if r.MissedStarts > 0 {
		fmt.Fprintf(&b, "missed:    %d starts (max lag %s): %d the generator's own lag, %d the server's backlog (--max-inflight or --max-conns busy)\n",
			r.MissedStarts, ms(r.MaxStartLagMS), r.Generator.MissedOwnLag, r.Generator.MissedBacklog)
	} else {
		fmt.Fprintf(&b, "missed:    0 starts (every arrival on schedule)\n")
	}
	if len(r.Nodes) > 0 {
		var nodes []string
		for _, n := range r.Nodes {
			l := fmt.Sprintf("%s %d requests", n.Target, n.Requests)
			if n.Refused > 0 {
				l += fmt.Sprintf(" (%d refused, sent on)", n.Refused)
			}
			nodes = append(nodes, l)
		}
		spread := "each user's requests round-robin"
		if r.Config.Sticky {
			spread = "each user on one node"
		}
		fmt.Fprintf(&b, "nodes:     %s; %s\n", strings.Join(nodes, ", "), spread)
	}
	if len(t.Queue) > 0 {
		fmt.Fprintf(&b, "queue:     %s\n", orNone(countList(t.Queue)))
	}
	if len(t.Payments) > 0 {
		fmt.Fprintf(&b, "payments:  %s\n", orNone(countList(t.Payments)))
	}
	if g := r.Regular; g != nil {
		fmt.Fprintf(&b, "regular:   %d requests at %.0f/s, %d errors, p99 %s before the spike, %s during it\n",
			g.Requests, g.Rate, g.Errors, ms(g.Baseline.P99), ms(g.Spike.P99))
	}
	verdict := "PASS"
	if !r.Audit.OK {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "audit:     %s\n", verdict)
	for _, c := range r.Audit.Checks {
		fmt.Fprintf(&b, "  %-5s %-22s %s\n", strings.ToUpper(string(c.Status)), c.Name, c.Detail)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Headline says in one line what the run measured: the server (its
// answers per second and its own p99), or, when the generator fell behind
// its schedule by itself, that the run was generator-bound, with the
// arrival rate it achieved.
func (r *Report) Headline() string {
	var server string
	if s := r.ServerLatency; s != nil {
		server = fmt.Sprintf(", server p99 %s (Server-Timing)", ms(s.P99))
	}
	g := r.Generator
	if g.Bound {
		return fmt.Sprintf("GENERATOR-BOUND: the generator fell behind its schedule by itself (its dispatcher up to %s late; %.0f arrivals/s achieved of %.0f/s scheduled; %d starts late by its own lag): its lag is part of the end-to-end latencies; the server answered %.0f requests/s%s",
			ms(g.MaxOwnLagMS), g.AchievedRate, g.ScheduledRate, g.MissedOwnLag, r.RequestsPerSecond, server)
	}
	return fmt.Sprintf("the generator kept its schedule; the server answered %.0f requests/s%s, end-to-end claim p99 %s",
		r.RequestsPerSecond, server, ms(r.Latency.P99))
}

// ms prints a duration given in milliseconds, rounded for reading.
func ms(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d >= 10*time.Second:
		d = d.Round(100 * time.Millisecond)
	case d >= 10*time.Millisecond:
		d = d.Round(time.Millisecond)
	case d >= 100*time.Microsecond:
		d = d.Round(10 * time.Microsecond)
	}
	return d.String()
}

func answerList(as []Answer, o op) string {
	var s []string
	for _, a := range as {
		if a.Op != string(o) {
			continue
		}
		l := label(a.Status, a.Code)
		if a.Status != 0 && a.Code != "" {
			l += " " + a.Code
		}
		s = append(s, fmt.Sprintf("%s×%d", l, a.Count))
	}
	return orNone(s)
}

// report assembles the Report once the run is over. Each piece reads one
// part of the run under that part's own lock, or none.
func (r *runner) report() *Report {
	rep := r.reportHead()
	end := r.book.fillReport(rep, r.spikeStart)
	r.rec.fillAnswers(rep)
	if rep.DurationMS > 0 {
		rep.RequestsPerSecond = float64(rep.Totals.Requests) / (rep.DurationMS / 1000)
	}
	spike := window{from: r.spikeStart.Sub(r.start).Seconds(), to: end.Sub(r.start).Seconds()}
	regular := r.rec.fillSeries(rep, spike, r.cfg.Regular.Rate > 0)
	if r.cfg.Regular.Rate > 0 {
		regular.Rate = r.cfg.Regular.Rate
		regular.MissedStarts = r.regular.missed.Load()
		rep.Regular = regular
	}
	rep.Remaining = r.remainingSamples()
	return rep
}

// reportHead is the part of the report that needs no lock: the config, the
// drop, and the dispatcher's counters (atomic, or written by its goroutine
// that has returned).
func (r *runner) reportHead() *Report {
	c := r.cfg
	rep := &Report{
		Config: RunConfig{
			Target: r.targets[0].url, Sticky: c.Sticky && len(r.targets) > 1,
			DropID: c.DropID, Users: c.Users, Profile: string(c.Profile.Shape),
			SpanMS: msOf(r.sched.span()), PeakRate: r.sched.peakRate(),
			RetryFraction: c.RetryFraction, IdempotencyKeys: c.IdempotencyKeys, MaxRetries: c.MaxRetries,
			MaxInFlight: c.MaxInFlight, RegularRate: c.Regular.Rate, Seed: c.Seed,
		},
		Drop: DropInfo{
			ID: r.drop.ID, Title: r.drop.Title, Kind: r.drop.Kind, Stock: r.drop.Stock,
			PerUserLimit: r.drop.PerUserLimit, Admission: r.drop.Admission.Mode, AdmissionRate: r.drop.Admission.Rate,
		},
		SpikeStartS:   r.spikeStart.Sub(r.start).Seconds(),
		MissedStarts:  r.spike.missed.Load(),
		MaxStartLagMS: msOf(time.Duration(r.spike.maxLag.Load())),
		Totals:        Totals{Users: c.Users, Arrived: r.spike.arrived.Load()},
	}
	if len(r.targets) > 1 {
		for _, t := range r.targets {
			rep.Config.Targets = append(rep.Config.Targets, t.url)
			rep.Nodes = append(rep.Nodes, NodeStats{Target: t.url, Requests: t.requests.Load(), Refused: t.refused.Load()})
		}
	}
	if d := r.spike; d.arrived.Load() > 1 && d.last.After(d.first) {
		rep.Totals.ArrivalRate = float64(d.arrived.Load()-1) / d.last.Sub(d.first).Seconds()
	}
	span := r.sched.span()
	rep.Generator = Generator{
		Bound: generatorBound(r.spike.maxOwnLag, c.StartSlack, span,
			r.spike.missedOwn.Load(), r.spike.arrived.Load()),
		AchievedRate: rep.Totals.ArrivalRate, MaxOwnLagMS: msOf(max(r.spike.maxOwnLag, 0)),
		MissedOwnLag: r.spike.missedOwn.Load(), MissedBacklog: r.spike.missedBacklog.Load(),
	}
	if span > 0 && c.Users > 1 {
		rep.Generator.ScheduledRate = float64(c.Users-1) / span.Seconds() / float64(max(c.Shard.Count, 1))
	}
	return rep
}

// fillReport sets what the book knows: the run's duration from spikeStart,
// the sell-out, the waiting room's and the payments' outcomes. It returns
// when the last user finished.
func (b *book) fillReport(rep *Report, spikeStart time.Time) (end time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rep.DurationMS = msOf(b.end.Sub(spikeStart))
	if !b.soldOutAt.IsZero() {
		v := msOf(max(b.soldOutAt.Sub(spikeStart), 0))
		rep.SellOutMS = &v
	}
	rep.Totals.Queue = stringKeys(b.queue)
	if len(b.payments) > 0 || b.unsettled > 0 {
		rep.Totals.Payments = map[string]int64{}
		for k, v := range b.payments {
			rep.Totals.Payments[k] = v
		}
		if b.unsettled > 0 {
			rep.Totals.Payments["pending"] = b.unsettled
		}
	}
	return b.end
}

// fillAnswers sets the answers, the totals they add up to, and the
// latencies of each kind of request.
func (rec *recorder) fillAnswers(rep *Report) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rep.Totals.Requests = rec.requests
	for k, n := range rec.answers {
		rep.Answers = append(rep.Answers, Answer{Op: string(k.op), Status: k.status, Code: k.code, Count: n})
	}
	sortAnswers(rep.Answers)
	countClaims(&rep.Totals, rep.Answers)
	if h := rec.ops[opClaim]; h != nil {
		rep.Latency = summarize(h)
	}
	if h := rec.server[opClaim]; h != nil {
		l := summarize(h)
		rep.ServerLatency = &l
	}
	for o, h := range rec.ops {
		ol := OpLatency{Op: string(o), Latency: summarize(h)}
		if sh := rec.server[o]; sh != nil {
			l := summarize(sh)
			ol.Server = &l
		}
		rep.Ops = append(rep.Ops, ol)
	}
	sort.Slice(rep.Ops, func(i, j int) bool { return rep.Ops[i].Op < rep.Ops[j].Op })
}

// countClaims adds the claim answers up into t.
func countClaims(t *Totals, answers []Answer) {
	for _, a := range answers {
		if a.Op != string(opClaim) {
			continue
		}
		n := a.Count
		t.Claims += n
		switch {
		case a.Status == 201:
			t.Wins += n
		case a.Status == 200:
			t.AlreadyWon += n
		case a.Status == 410 && a.Code == dibs.ESOLDOUT:
			t.SoldOut += n
		case a.Status == 429 || a.Status == 503:
			t.Shed += n
		case a.Status == 0 && a.Code != codeCanceled:
			t.NoAnswer += n
		}
	}
}

func sortAnswers(as []Answer) {
	sort.Slice(as, func(i, j int) bool {
		a, b := as[i], as[j]
		if a.Op != b.Op {
			return a.Op < b.Op
		}
		if a.Status != b.Status {
			return a.Status < b.Status
		}
		return a.Code < b.Code
	})
}

// window is a span of the series, in seconds from its start.
type window struct{ from, to float64 }

// fillSeries sets the series step by step. With regular traffic it also
// returns the regular report's latencies and errors: over the run, before
// the spike (steps that ended before spike.from) and during it.
func (rec *recorder) fillSeries(rep *Report, spike window, regular bool) *RegularReport {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	baseline, during := newHistogram(2), newHistogram(2)
	var regularErrors int64
	rep.StepS = rec.step.Seconds()
	for i, s := range rec.steps {
		t := float64(i) * rep.StepS
		if s == nil {
			rep.Series = append(rep.Series, Step{T: t, Answers: map[string]int64{}})
			continue
		}
		st := Step{T: t, Arrivals: s.arrivals, Requests: s.requests, Answers: s.answers}
		if s.claims.TotalCount() > 0 {
			st.P50, st.P99, st.Max = quantileMS(s.claims, 50), quantileMS(s.claims, 99), quantileMS(s.claims, 100)
		}
		if regular {
			g := &RegularStep{Requests: s.regularRequests, Errors: s.regularErrors}
			if s.regular.TotalCount() > 0 {
				g.P50, g.P99, g.Max = quantileMS(s.regular, 50), quantileMS(s.regular, 99), quantileMS(s.regular, 100)
			}
			st.Regular = g
			regularErrors += s.regularErrors
			switch {
			case t+rep.StepS <= spike.from:
				baseline.Merge(s.regular)
			case t >= spike.from && t < spike.to:
				during.Merge(s.regular)
			}
		}
		rep.Series = append(rep.Series, st)
	}
	if !regular {
		return nil
	}
	return &RegularReport{
		Requests: rec.regular.TotalCount(), Errors: regularErrors, Latency: summarize(rec.regular),
		Baseline: summarize(baseline), Spike: summarize(during),
	}
}

// remainingSamples copies the reads of the remaining stock.
func (r *runner) remainingSamples() []RemainingSample {
	r.samplesMu.Lock()
	defer r.samplesMu.Unlock()
	return append([]RemainingSample(nil), r.samples...)
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.TotalCount(),
		P50:   quantileMS(h, 50), P90: quantileMS(h, 90), P99: quantileMS(h, 99),
		P999: quantileMS(h, 99.9), Max: quantileMS(h, 100),
	}
}

// quantileMS reads a histogram of microseconds in milliseconds.
func quantileMS(h *hdrhistogram.Histogram, q float64) float64 {
	if q >= 100 {
		return float64(h.Max()) / 1000
	}
	return float64(h.ValueAtQuantile(q)) / 1000
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func stringKeys[K ~string](m map[K]int64) map[string]int64 {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[string(k)] = v
	}
	return out
}
