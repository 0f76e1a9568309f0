// Package switches keeps the kill switches of a deployment: a
// dibs.SwitchService that holds the state in memory for the request path,
// writes every flip to the record (a dibs.AdminStore) before it takes
// effect, and learns other nodes' flips within a second, from a
// notification when the deployment has one (Redis pub/sub) and from a
// periodic re-read of the record in any case.
package switches

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/startstop"
)

var (
	_ dibs.SwitchService   = (*Service)(nil)
	_ dibs.Background      = (*Service)(nil)
	_ prometheus.Collector = (*Service)(nil)
)

// DefaultReread is how often a Service reads the record again, the
// backstop for a lost notification: well inside the second in which every
// node must learn of a flip.
const DefaultReread = 500 * time.Millisecond

// MaxSaveAttempts bounds how often SetSwitches reloads and saves again
// when other nodes' saves keep coming first.
const MaxSaveAttempts = 10

// Notifier tells the other nodes of a deployment that the switches
// changed. redis.Notifier implements it.
type Notifier interface {
	// Publish tells every subscriber that the record changed.
	Publish(ctx context.Context) error
	// Subscribe returns a channel that receives a value after another
	// node's Publish, and also whenever a notification may have been
	// lost (a subscription dropped and made again). Values may merge: one
	// receive can stand for several publishes. The channel is closed once
	// ctx ends.
	Subscribe(ctx context.Context) <-chan struct{}
}

// Options tune a Service. The zero value is valid for a single node.
type Options struct {
	// Notifier tells other nodes of this node's flips and this node of
	// theirs. Nil on a single node.
	Notifier Notifier
	// Reread is how often the record is read again. Default DefaultReread.
	Reread time.Duration
	// Ticker returns the channel of the re-read and a function that
	// stops it. Default time.NewTicker; tests pass their own.
	Ticker func(d time.Duration) (<-chan time.Time, func())
	// Now stamps the actions. Default time.Now.
	Now func() time.Time
	// Logger hears of failed re-reads, notifications and actions.
	// Discarded if nil.
	Logger *slog.Logger
}

// state is the switches as of a version of the record.
type state struct {
	sw      dibs.Switches
	version int64
}

// Service is the dibs.SwitchService of a node. Safe for concurrent use.
type Service struct {
	store  dibs.AdminStore
	log    dibs.ActionLog
	opts   Options
	logger *slog.Logger

	cur atomic.Pointer[state]
	bg  startstop.Service

	desc *prometheus.Desc
}

// New returns a Service that keeps the switches in store and records
// flips in log. Until Start it reports every switch on.
func New(store dibs.AdminStore, log dibs.ActionLog, opts Options) *Service {
	if opts.Reread <= 0 {
		opts.Reread = DefaultReread
	}
	if opts.Ticker == nil {
		opts.Ticker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store: store, log: log, opts: opts, logger: logger,
		desc: prometheus.NewDesc("dibs_switch_on", "Whether a kill switch is on (1, normal) or off (0) on this node.", []string{"switch"}, nil),
	}
	s.cur.Store(&state{})
	return s
}

// Start loads the switches from the record, then follows the record in
// the background until ctx ends or Stop is called. An error loading the
// record fails Start.
func (s *Service) Start(ctx context.Context) error {
	if err := s.reread(ctx); err != nil {
		return fmt.Errorf("switches: %w", err)
	}
	return s.bg.Start(ctx, s.follow)
}

// Stop ends the background work and waits for it. Safe to call twice.
func (s *Service) Stop() error { return s.bg.Stop() }

// Switches implements dibs.SwitchService: an atomic load, no I/O.
func (s *Service) Switches() dibs.Switches { return s.cur.Load().sw }

// Version returns the version of the record this node's view comes from.
func (s *Service) Version() int64 { return s.cur.Load().version }

// SetSwitches implements dibs.SwitchService. It applies change to the
// record's newest state and saves it conditionally on that version, so
// that flips from several nodes at once all apply, one after the other,
// in the record's order. Once the record holds the flip, this node uses
// it, the action log gets a "switch.flipped" action with what changed,
// and the other nodes are notified. A change that changes nothing is not
// saved and not logged. A failed action or notification is logged, not
// returned: the flip took effect, and the other nodes read the record
// again within DefaultReread in any case.
func (s *Service) SetSwitches(ctx context.Context, change map[dibs.Switch]bool, by string) (dibs.Switches, error) {
	if err := dibs.CheckSwitchChange(change); err != nil {
		return s.Switches(), err
	}
	if by == "" {
		return s.Switches(), dibs.Errorf(dibs.EINVALID, "A flip needs the operator's label.")
	}
	for range MaxSaveAttempts {
		prev, version, err := s.store.LoadSwitches(ctx)
		if err != nil {
			return s.Switches(), fmt.Errorf("set switches: %w", err)
		}
		next := prev.Apply(change)
		if next == prev {
			s.advance(state{prev, version})
			return prev, nil
		}
		saved, err := s.store.SaveSwitches(ctx, next, version)
		if dibs.ErrorCode(err) == dibs.ECONFLICT {
			continue // another node saved first: apply the change to its state
		} else if err != nil {
			return s.Switches(), fmt.Errorf("set switches: %w", err)
		}
		s.advance(state{next, saved})
		s.record(ctx, next.Diff(prev), next, saved, by)
		return next, nil
	}
	return s.Switches(), dibs.Errorf(dibs.ECONFLICT, "The switches kept changing under this flip (%d attempts); try again.", MaxSaveAttempts)
}

// RecordTimeout bounds the logging and the notification of a flip.
const RecordTimeout = 5 * time.Second

// record logs the flip and tells the other nodes, on a context that the
// caller's end does not cut short: the flip took effect.
func (s *Service) record(ctx context.Context, changed map[dibs.Switch]bool, now dibs.Switches, version int64, by string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RecordTimeout)
	defer cancel()
	detail, _ := json.Marshal(flipDetail{Changed: changes(changed), Switches: now, Version: version})
	a := dibs.Action{At: s.opts.Now().UTC(), Actor: by, Kind: dibs.ActionSwitchFlipped, Detail: detail}
	if err := s.log.Append(ctx, a); err != nil {
		s.logger.Error("switches: the flip took effect but could not be logged", "by", by, "switches", now.String(), "err", err)
	}
	if s.opts.Notifier != nil {
		if err := s.opts.Notifier.Publish(ctx); err != nil {
			s.logger.Warn("switches: could not notify other nodes; they read the record again shortly", "err", err)
		}
	}
}

// flipDetail is the Detail of a "switch.flipped" action.
type flipDetail struct {
	Changed  changes       `json:"changed"`  // the switches this flip changed, to their new state
	Switches dibs.Switches `json:"switches"` // every switch after the flip
	Version  int64         `json:"version"`  // of the record after the flip
}

// changes is a set of switches and their state, as "on" or "off".
type changes map[dibs.Switch]bool

func (c changes) MarshalJSON() ([]byte, error) {
	m := make(map[dibs.Switch]string, len(c))
	for sw, on := range c {
		m[sw] = "off"
		if on {
			m[sw] = "on"
		}
	}
	return json.Marshal(m)
}

// advance makes st this node's view if it is of a newer version: reads
// and saves may finish out of order, and an older version must never
// replace a newer one. The view before the first read is version 0, all
// on, which is what the record holds before its first save.
func (s *Service) advance(st state) {
	for {
		cur := s.cur.Load()
		if cur.version >= st.version {
			return
		}
		if s.cur.CompareAndSwap(cur, &st) {
			return
		}
	}
}

// reread loads the record into this node's view.
func (s *Service) reread(ctx context.Context) error {
	sw, version, err := s.store.LoadSwitches(ctx)
	if err != nil {
		return fmt.Errorf("load switches: %w", err)
	}
	s.advance(state{sw, version})
	return nil
}

// follow reads the record again on every tick and every notification
// until ctx ends. Failures are logged once for each outage.
func (s *Service) follow(ctx context.Context) error {
	var poked <-chan struct{}
	if s.opts.Notifier != nil {
		poked = s.opts.Notifier.Subscribe(ctx)
	}
	tick, stop := s.opts.Ticker(s.opts.Reread)
	defer stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
		case _, ok := <-poked:
			if !ok {
				poked = nil // ctx ended; the next select sees it
				continue
			}
		}
		err := s.reread(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !failing:
			s.logger.Warn("switches: cannot read the record; keeping the switches as they were", "err", err)
		case err == nil && failing:
			s.logger.Info("switches: reading the record again", "switches", s.Switches().String())
		}
		failing = err != nil
	}
}

// Register registers the gauge dibs_switch_on{switch} (1 on, 0 off) of
// this node's view with reg.
func (s *Service) Register(reg prometheus.Registerer) error { return reg.Register(s) }

// Describe implements prometheus.Collector.
func (s *Service) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

// Collect implements prometheus.Collector.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	sw := s.Switches()
	for _, name := range dibs.AllSwitches {
		v := 0.0
		if sw.On(name) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, v, string(name))
	}
}
