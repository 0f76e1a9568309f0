package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// RegularProcess sends a run's regular traffic from a process of its own
// (dibs load --role regular), so that its latency measures the node and
// not the spike's generator, whose scheduler it would otherwise share.
// Run calls Start at time 0 of the run (before the regular traffic's lead)
// and Stop once the last user finished and the tail has passed.
type RegularProcess interface {
	Start(start time.Time) error
	Stop() (*RegularResult, error)
}

// regularVersion is the format of a RegularResult.
const regularVersion = 1

// RegularResult is what a regular-traffic process measured: its latency
// histograms (HdrHistogram's encoded form), over the run and step by step
// of the run's series, each from the intended send time.
type RegularResult struct {
	Version      int           `json:"version"`
	StartUnix    int64         `json:"start_unix_ns"`
	StepNS       int64         `json:"step_ns"`
	MissedStarts int64         `json:"missed_starts"`
	Latency      []byte        `json:"latency"`
	Steps        []regularStep `json:"steps"`
}

type regularStep struct {
	Index    int    `json:"i"`
	Requests int64  `json:"requests"`
	Errors   int64  `json:"errors"`
	Latency  []byte `json:"latency"`
}

// RunRegular sends only cfg's regular traffic (Regular.Rate reads of the
// drop a second; claim reads need the spike's wins, which this process
// does not hear of) from cfg.StartAt, or now, until ctx ends, and returns
// what it measured. Its series steps are those of Run with the same
// config, so that Run can fold it into its report.
func RunRegular(ctx context.Context, cfg Config) (*RegularResult, error) {
	if cfg.Regular.Rate <= 0 {
		return nil, errors.New("regular rate must be positive")
	}
	cfg.Regular.ClaimReadFraction = 0
	cfg.AdminToken = "-" // not read: no audit here
	if len(cfg.PassportSecret) == 0 {
		cfg.PassportSecret = []byte("-") // not used: drop reads carry none
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	lean := cfg.Client == nil
	r := &runner{cfg: cfg.withDefaults()}
	r.log = r.cfg.Logger
	// The last requests finish after the stop; the connections close when
	// they have.
	reqCtx, closeConns := context.WithCancel(context.WithoutCancel(ctx))
	defer closeConns()
	for _, u := range r.cfg.targets() {
		t := &target{url: strings.TrimRight(u, "/")}
		if lean {
			t.wire, _ = newWireClient(reqCtx, t.url, r.cfg.Regular.MaxInFlight)
		}
		r.targets = append(r.targets, t)
	}
	r.drop.ID = r.cfg.DropID
	r.book = newBook(0)
	r.spike = &dispatcher{name: "spike", slots: newLimiter(1), slack: r.cfg.StartSlack, log: r.log, now: r.cfg.Now}
	r.regular = &dispatcher{name: "regular", slots: newLimiter(r.cfg.Regular.MaxInFlight), slack: r.cfg.StartSlack, log: r.log, now: r.cfg.Now}
	r.start = r.cfg.Now()
	if !r.cfg.StartAt.IsZero() {
		r.start = r.cfg.StartAt
	}
	r.rec = newRecorder(r.start, r.cfg.SeriesStep)
	if r.sleepUntil(ctx, r.start) {
		r.runRegular(reqCtx, ctx)
	}
	res := &RegularResult{Version: regularVersion, StartUnix: r.start.UnixNano(), StepNS: int64(r.cfg.SeriesStep),
		MissedStarts: r.regular.missed.Load()}
	rec := r.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	res.Latency = encodeHistogram(rec.regular)
	for i, s := range rec.steps {
		if s != nil && s.regularRequests > 0 {
			res.Steps = append(res.Steps, regularStep{Index: i, Requests: s.regularRequests, Errors: s.regularErrors, Latency: encodeHistogram(s.regular)})
		}
	}
	return res, nil
}

// foldRegular adds what a regular-traffic process measured into the
// recorder, step by step, as if this process had sent it.
func (rec *recorder) foldRegular(res *RegularResult) error {
	if res.Version != regularVersion {
		return fmt.Errorf("regular traffic result: format version %d, want %d", res.Version, regularVersion)
	}
	if time.Duration(res.StepNS) != rec.step || res.StartUnix != rec.start.UnixNano() {
		return errors.New("regular traffic result: another series (start or step) than the run's")
	}
	all, err := hdrhistogram.Decode(res.Latency)
	if err != nil {
		return fmt.Errorf("regular traffic result: %w", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.regular.Merge(all)
	for _, st := range res.Steps {
		h, err := hdrhistogram.Decode(st.Latency)
		if err != nil {
			return fmt.Errorf("regular traffic result: step %d: %w", st.Index, err)
		}
		s := rec.at(rec.start.Add(time.Duration(st.Index) * rec.step))
		s.regular.Merge(h)
		s.regularRequests += st.Requests
		s.regularErrors += st.Errors
	}
	return nil
}
