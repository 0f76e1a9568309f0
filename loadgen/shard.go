package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// shardVersion is the format of a shard's result; Merge refuses others.
const shardVersion = 1

// ShardResult is what one shard of a run writes for Merge: its report, its
// histograms in HdrHistogram's encoded form, and its book (the users it
// heard about, the claims acknowledged to them, the evidence the audit
// weighs). Times are Unix nanoseconds: shards start at the same instant
// (Config.StartAt), so their clocks are comparable to within the
// machines' clock offsets.
type ShardResult struct {
	Version  int    `json:"version"`
	Shard    Shard  `json:"shard"`
	Complete bool   `json:"complete"` // the shard ran to its end
	Report   Report `json:"report"`

	// What the audit needs of the run's configuration; the secrets come
	// from the merging side's environment.
	Targets    []string `json:"targets"`
	UserPrefix string   `json:"user_prefix"`
	StartUnix  int64    `json:"start_unix_ns"`
	SpikeUnix  int64    `json:"spike_start_unix_ns"`

	Histograms map[string][]byte `json:"histograms"` // "op" and "server/op", "regular"
	Book       shardBook         `json:"book"`
}

// shardBook is a book on the wire.
type shardBook struct {
	Users        map[int]uint8     `json:"users"` // user index → flags, for users with any
	Acked        []shardAck        `json:"acked"`
	AckClash     []string          `json:"ack_clash,omitempty"`
	SoldOutAt    int64             `json:"sold_out_at,omitempty"`
	End          int64             `json:"end"`
	Seconds      int64             `json:"seconds"`
	SecondBroken int64             `json:"second_broken"`
	BrokenSample []string          `json:"broken_sample,omitempty"`
	MayHaveWon   []int64           `json:"may_have_won"`
	ReleasesSeen []int64           `json:"releases_seen,omitempty"`
	LateRefusals [][2]int64        `json:"late_refusals,omitempty"`
	Queue        map[string]int64  `json:"queue,omitempty"`
	Payments     map[string]int64  `json:"payments,omitempty"`
	Unsettled    int64             `json:"unsettled"`
	ServerErrs   map[int]int64     `json:"server_errors,omitempty"`
	Samples      []RemainingSample `json:"samples,omitempty"`
}

type shardAck struct {
	ClaimID string `json:"claim_id"`
	User    int32  `json:"user"`
	Slot    int64  `json:"slot"`
	State   string `json:"state"`
	Settled bool   `json:"settled,omitempty"`
}

func unixNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// shardResult gathers what Merge needs once the shard's run is over.
func (r *runner) shardResult(rep *Report, complete bool) *ShardResult {
	res := &ShardResult{
		Version: shardVersion, Shard: r.cfg.Shard, Complete: complete, Report: *rep,
		UserPrefix: r.cfg.UserPrefix, StartUnix: unixNS(r.start), SpikeUnix: unixNS(r.spikeStart),
		Histograms: map[string][]byte{},
	}
	for _, t := range r.targets {
		res.Targets = append(res.Targets, t.url)
	}
	rec := r.rec
	rec.mu.Lock()
	for o, h := range rec.ops {
		res.Histograms[string(o)] = encodeHistogram(h)
	}
	for o, h := range rec.server {
		res.Histograms["server/"+string(o)] = encodeHistogram(h)
	}
	res.Histograms["regular"] = encodeHistogram(rec.regular)
	rec.mu.Unlock()

	b := r.book
	b.mu.Lock()
	defer b.mu.Unlock()
	sb := shardBook{
		Users: map[int]uint8{}, AckClash: b.ackClash, SoldOutAt: unixNS(b.soldOutAt), End: unixNS(b.end),
		Seconds: b.seconds, SecondBroken: b.secondBroken, BrokenSample: b.brokenSample,
		Queue: stringKeys(b.queue), Payments: b.payments, Unsettled: b.unsettled, ServerErrs: b.serverErrs,
		Samples: rep.Remaining,
	}
	for i, f := range b.users {
		if f != 0 {
			sb.Users[i] = f
		}
	}
	for id, a := range b.acked {
		sb.Acked = append(sb.Acked, shardAck{ClaimID: id, User: a.user, Slot: a.slot, State: a.state, Settled: a.settled})
	}
	sort.Slice(sb.Acked, func(i, j int) bool { return sb.Acked[i].ClaimID < sb.Acked[j].ClaimID })
	for _, t := range b.mayHaveWon {
		sb.MayHaveWon = append(sb.MayHaveWon, t.UnixNano())
	}
	for _, t := range b.releasesSeen {
		sb.ReleasesSeen = append(sb.ReleasesSeen, t.UnixNano())
	}
	for _, x := range b.lateRefusals {
		sb.LateRefusals = append(sb.LateRefusals, [2]int64{x.sent.UnixNano(), x.done.UnixNano()})
	}
	res.Book = sb
	return res
}

func encodeHistogram(h *hdrhistogram.Histogram) []byte {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		panic(fmt.Sprintf("encode histogram: %v", err)) // only for an unknown version
	}
	return b
}

// WriteShard writes the result of a shard's run (Config.Shard) for Merge.
// It fails on the report of a run that was not a shard.
func (r *Report) WriteShard(w io.Writer) error {
	if r.shard == nil {
		return errors.New("not the report of a shard's run")
	}
	return json.NewEncoder(w).Encode(r.shard)
}

// MergeConfig is what Merge needs beside the shards' results.
type MergeConfig struct {
	// PassportSecret and AdminToken, as for Run: the audit reads the
	// winners, and claims missing from them with their owner's passport.
	PassportSecret []byte
	AdminToken     string
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
	// Client reads the admin API (default: net/http with RequestTimeout).
	Client *http.Client
	// SettleWait is as in Config (default 60s; negative: do not wait).
	SettleWait time.Duration
}

// NamedShard is a shard's result file: its name (for errors) and content.
type NamedShard struct {
	Name string
	Data []byte
}

// Merge reads the results of every shard of one run, checks that they are
// all there and complete, audits the drop once over the union of what the
// shards' users were told, and returns the one report of the whole run.
// A missing, duplicated, unfinished or unreadable shard is an error naming
// it: a merge never passes with part of the users.
func Merge(ctx context.Context, cfg MergeConfig, files []NamedShard) (*Report, error) {
	shards, err := readShards(files)
	if err != nil {
		return nil, err
	}
	first := shards[0]
	rc := first.Report.Config
	rcfg := Config{
		Targets: first.Targets, DropID: rc.DropID, Users: rc.Users, Seed: rc.Seed, UserPrefix: first.UserPrefix,
		PassportSecret: cfg.PassportSecret, AdminToken: cfg.AdminToken, Logger: cfg.Logger, Client: cfg.Client,
		SettleWait: cfg.SettleWait, RetryFraction: rc.RetryFraction, MaxRetries: max(rc.MaxRetries, -1),
		Profile: Profile{Shape: Shape(rc.Profile), Duration: time.Duration(rc.SpanMS * float64(time.Millisecond))},
	}
	if rcfg.Profile.Shape != Spike && rcfg.Profile.Shape != Constant {
		rcfg.Profile.Shape = Constant
	}
	if rcfg.Profile.Duration <= 0 {
		rcfg.Profile.Duration = time.Millisecond
	}
	if err := rcfg.Validate(); err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	r := &runner{cfg: rcfg.withDefaults()}
	r.log = r.cfg.Logger
	for _, u := range r.cfg.Targets {
		r.targets = append(r.targets, &target{url: strings.TrimRight(u, "/")})
	}
	if err := r.getAdmin(ctx, "/v1/admin/drops/"+rc.DropID, &r.drop); err != nil {
		return nil, fmt.Errorf("read drop: %w", err)
	}
	if r.drop.PerUserLimit == 0 {
		r.drop.PerUserLimit = 1
	}
	exp := time.Now().Add(time.Hour)
	if r.passports, err = mintPassports(r.cfg.PassportSecret, r.userID, r.cfg.Users, exp, func(int) bool { return true }); err != nil {
		return nil, err
	}
	r.book, err = mergeBooks(rc.Users, shards)
	if err != nil {
		return nil, err
	}
	rep, err := mergeReports(shards)
	if err != nil {
		return nil, err
	}
	if unknown := rep.unknownClaims(); unknown > 0 && r.cfg.SettleWait > 0 {
		r.settle(ctx, unknown)
	}
	rep.Audit, err = r.audit(ctx)
	if err != nil {
		return rep, fmt.Errorf("audit: %w", err)
	}
	return rep, nil
}

// readShards decodes the files and checks that they are the complete
// shards 0..N-1 of one run, each once.
func readShards(files []NamedShard) ([]*ShardResult, error) {
	if len(files) == 0 {
		return nil, errors.New("merge: no shard results given")
	}
	var shards []*ShardResult
	byIndex := map[int]string{}
	for _, f := range files {
		var s ShardResult
		if err := json.Unmarshal(f.Data, &s); err != nil {
			return nil, fmt.Errorf("merge: %s is not a whole shard result (truncated?): %w", f.Name, err)
		}
		switch {
		case s.Version != shardVersion:
			return nil, fmt.Errorf("merge: %s: format version %d, want %d", f.Name, s.Version, shardVersion)
		case !s.Complete:
			return nil, fmt.Errorf("merge: %s: shard %s did not finish its run", f.Name, s.Shard)
		case len(shards) > 0 && (s.Shard.Count != shards[0].Shard.Count || s.Report.Config.DropID != shards[0].Report.Config.DropID ||
			s.Report.Config.Seed != shards[0].Report.Config.Seed || s.Report.Config.Users != shards[0].Report.Config.Users):
			return nil, fmt.Errorf("merge: %s: shard %s of drop %s, seed %d, %d users is not of the same run as %s",
				f.Name, s.Shard, s.Report.Config.DropID, s.Report.Config.Seed, s.Report.Config.Users, files[0].Name)
		}
		if prev, dup := byIndex[s.Shard.Index]; dup {
			return nil, fmt.Errorf("merge: %s and %s are both shard %s", prev, f.Name, s.Shard)
		}
		byIndex[s.Shard.Index] = f.Name
		shards = append(shards, &s)
	}
	var missing []string
	for i := range shards[0].Shard.Count {
		if _, ok := byIndex[i]; !ok {
			missing = append(missing, Shard{i, shards[0].Shard.Count}.String())
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("merge: missing shard %s: the run's users are not all there", strings.Join(missing, ", "))
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].Shard.Index < shards[j].Shard.Index })
	return shards, nil
}

// mergeBooks makes one book of the shards' books.
func mergeBooks(users int, shards []*ShardResult) (*book, error) {
	b := newBook(users)
	for _, s := range shards {
		sb := s.Book
		for i, f := range sb.Users {
			if i < 0 || i >= users {
				return nil, fmt.Errorf("merge: shard %s names user %d of %d", s.Shard, i, users)
			}
			b.users[i] |= f
		}
		for _, a := range sb.Acked {
			if prev, ok := b.acked[a.ClaimID]; ok {
				if prev.user != a.User || prev.slot != a.Slot {
					b.ackClash = appendSample(b.ackClash, fmt.Sprintf("claim %s acknowledged with user %d slot %d, then user %d slot %d", a.ClaimID, prev.user, prev.slot, a.User, a.Slot))
				}
				continue
			}
			b.acked[a.ClaimID] = ack{user: a.User, slot: a.Slot, state: a.State, settled: a.Settled}
			b.known = append(b.known, knownClaim{a.ClaimID, int(a.User)})
		}
		for _, c := range sb.AckClash {
			b.ackClash = appendSample(b.ackClash, c)
		}
		if t := fromNS(sb.SoldOutAt); !t.IsZero() && (b.soldOutAt.IsZero() || t.Before(b.soldOutAt)) {
			b.soldOutAt = t
		}
		if t := fromNS(sb.End); t.After(b.end) {
			b.end = t
		}
		b.seconds += sb.Seconds
		b.secondBroken += sb.SecondBroken
		for _, x := range sb.BrokenSample {
			b.brokenSample = appendSample(b.brokenSample, x)
		}
		for _, t := range sb.MayHaveWon {
			b.mayHaveWon = append(b.mayHaveWon, time.Unix(0, t))
		}
		for _, t := range sb.ReleasesSeen {
			b.releasesSeen = append(b.releasesSeen, time.Unix(0, t))
		}
		for _, x := range sb.LateRefusals {
			b.lateRefusals = append(b.lateRefusals, span{time.Unix(0, x[0]), time.Unix(0, x[1])})
		}
		for k, v := range sb.Queue {
			b.queue[queueOutcome(k)] += v
		}
		for k, v := range sb.Payments {
			b.payments[k] += v
		}
		b.unsettled += sb.Unsettled
		for k, v := range sb.ServerErrs {
			b.serverErrs[k] += v
		}
	}
	// The earliest release seen comes first (see book.settled).
	slices.SortFunc(b.releasesSeen, time.Time.Compare)
	return b, nil
}

// mergeReports adds the shards' reports up: counts are summed, latencies
// read from the merged histograms, the series summed step by step (its
// per-step percentiles are the highest of the shards'), the regular
// traffic and the stock samples are shard 0's, which sent the regular
// traffic.
func mergeReports(shards []*ShardResult) (*Report, error) {
	first := shards[0].Report
	rep := &Report{
		Config: first.Config, Drop: first.Drop, SpikeStartS: first.SpikeStartS, StepS: first.StepS,
		Regular: first.Regular, Remaining: first.Remaining,
		Totals: Totals{Users: first.Totals.Users},
	}
	answers := map[answerKey]int64{}
	nodes := map[string]*NodeStats{}
	var nodeOrder []string
	spikeStart := fromNS(shards[0].SpikeUnix)
	var end time.Time
	hists := map[string]*hdrhistogram.Histogram{}
	for _, s := range shards {
		sr := s.Report
		if t := fromNS(s.SpikeUnix); t.Before(spikeStart) {
			spikeStart = t
		}
		if t := fromNS(s.Book.End); t.After(end) {
			end = t
		}
		rep.Totals.Arrived += sr.Totals.Arrived
		rep.Totals.ArrivalRate += sr.Totals.ArrivalRate
		rep.MissedStarts += sr.MissedStarts
		rep.MaxStartLagMS = max(rep.MaxStartLagMS, sr.MaxStartLagMS)
		g := &rep.Generator
		g.Bound = g.Bound || sr.Generator.Bound
		g.ScheduledRate += sr.Generator.ScheduledRate
		g.AchievedRate += sr.Generator.AchievedRate
		g.MaxOwnLagMS = max(g.MaxOwnLagMS, sr.Generator.MaxOwnLagMS)
		g.MissedOwnLag += sr.Generator.MissedOwnLag
		g.MissedBacklog += sr.Generator.MissedBacklog
		for _, a := range sr.Answers {
			answers[answerKey{op(a.Op), a.Status, a.Code}] += a.Count
		}
		for _, n := range sr.Nodes {
			if nodes[n.Target] == nil {
				nodes[n.Target] = &NodeStats{Target: n.Target}
				nodeOrder = append(nodeOrder, n.Target)
			}
			nodes[n.Target].Requests += n.Requests
			nodes[n.Target].Refused += n.Refused
		}
		for k, v := range sr.Totals.Queue {
			if rep.Totals.Queue == nil {
				rep.Totals.Queue = map[string]int64{}
			}
			rep.Totals.Queue[k] += v
		}
		for k, v := range sr.Totals.Payments {
			if rep.Totals.Payments == nil {
				rep.Totals.Payments = map[string]int64{}
			}
			rep.Totals.Payments[k] += v
		}
		for name, enc := range s.Histograms {
			h, err := hdrhistogram.Decode(enc)
			if err != nil {
				return nil, fmt.Errorf("merge: shard %s: histogram %s: %w", s.Shard, name, err)
			}
			if hists[name] == nil {
				hists[name] = h
			} else {
				hists[name].Merge(h)
			}
		}
		mergeSeries(rep, sr.Series)
		if sr.SellOutMS != nil {
			at := fromNS(s.SpikeUnix).Add(time.Duration(*sr.SellOutMS * float64(time.Millisecond)))
			if rep.SellOutMS == nil || msOf(at.Sub(spikeStart)) < *rep.SellOutMS {
				v := msOf(max(at.Sub(spikeStart), 0))
				rep.SellOutMS = &v
			}
		}
	}
	for k, n := range answers {
		rep.Answers = append(rep.Answers, Answer{Op: string(k.op), Status: k.status, Code: k.code, Count: n})
		if !k.op.regular() {
			rep.Totals.Requests += n
		}
	}
	sortAnswers(rep.Answers)
	countClaims(&rep.Totals, rep.Answers)
	for _, t := range nodeOrder {
		rep.Nodes = append(rep.Nodes, *nodes[t])
	}
	rep.DurationMS = msOf(end.Sub(spikeStart))
	if rep.DurationMS > 0 {
		rep.RequestsPerSecond = float64(rep.Totals.Requests) / (rep.DurationMS / 1000)
	}
	for name, h := range hists {
		if name == "regular" {
			continue
		}
		if o, ok := strings.CutPrefix(name, "server/"); ok {
			if o == string(opClaim) {
				l := summarize(h)
				rep.ServerLatency = &l
			}
			continue
		}
		ol := OpLatency{Op: name, Latency: summarize(h)}
		if sh := hists["server/"+name]; sh != nil {
			l := summarize(sh)
			ol.Server = &l
		}
		rep.Ops = append(rep.Ops, ol)
		if name == string(opClaim) {
			rep.Latency = ol.Latency
		}
	}
	sort.Slice(rep.Ops, func(i, j int) bool { return rep.Ops[i].Op < rep.Ops[j].Op })
	return rep, nil
}

// mergeSeries adds a shard's series into rep's, step by step.
func mergeSeries(rep *Report, series []Step) {
	for i, st := range series {
		for len(rep.Series) <= i {
			rep.Series = append(rep.Series, Step{T: float64(len(rep.Series)) * rep.StepS, Answers: map[string]int64{}})
		}
		m := &rep.Series[i]
		m.Arrivals += st.Arrivals
		m.Requests += st.Requests
		for k, v := range st.Answers {
			m.Answers[k] += v
		}
		m.P50, m.P99, m.Max = max(m.P50, st.P50), max(m.P99, st.P99), max(m.Max, st.Max)
		if st.Regular != nil && m.Regular == nil {
			g := *st.Regular
			m.Regular = &g
		}
	}
}
