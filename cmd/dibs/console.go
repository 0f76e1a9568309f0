package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/live"
	"github.com/dibs-io/dibs/pace"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/switches"
)

// The operator's side of a node: the kill switches, the operators' log,
// the live snapshot the console shows and the auto pace of waiting rooms.

// PaceConfig is what an auto-paced waiting room judges downstream health
// by.
type PaceConfig struct {
	// Latency is the payment gateway's p99 above which an auto pace slows.
	Latency time.Duration
	// Backlog is the number of a drop's charges waiting to be sent above
	// which an auto pace slows.
	Backlog int64
}

func defaultPaceConfig() PaceConfig {
	return PaceConfig{Latency: time.Second, Backlog: 500}
}

func (c *PaceConfig) flags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Latency, "pace-latency", c.Latency, "payment gateway p99 above which an auto-paced waiting room admits slower")
	fs.Int64Var(&c.Backlog, "pace-backlog", c.Backlog, "charges of a drop waiting to be sent above which an auto-paced waiting room admits slower")
}

// Validate reports the first thing wrong with c.
func (c *PaceConfig) Validate() error {
	switch {
	case c.Latency <= 0:
		return errors.New("--pace-latency must be positive")
	case c.Backlog < 1:
		return errors.New("--pace-backlog must be at least 1")
	}
	return nil
}

// nodeID names this node in the live snapshot: its host name and a random
// suffix, so that two processes on one host are told apart.
func nodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [3]byte
	rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// openSwitches returns the kill switches over the record; with Redis,
// other nodes hear of a flip through a notification at once.
func openSwitches(store record, client redis.Client, prefix string, reg prometheus.Registerer, log *slog.Logger) (*switches.Service, dibs.ActionLog, error) {
	actions := dibs.NewActionLog(store)
	opts := switches.Options{Logger: log}
	if client != nil {
		opts.Notifier = redis.NewNotifier(client, prefix, log)
	}
	s := switches.New(store, actions, opts)
	if err := s.Register(reg); err != nil {
		return nil, nil, err
	}
	return s, actions, nil
}

// openLive returns the live snapshot of the deployment: this node's
// report, shared with the others through Redis (or kept in memory on a
// single node), and the drops' numbers.
func (m *Main) openLive(reg prometheus.Gatherer, jobs dibs.JobService) (*live.Service, error) {
	var bus live.Bus = live.NewMemoryBus()
	if m.gate.client != nil {
		b, err := redis.NewLiveBus(m.gate.client, redis.LiveBusOptions{Prefix: m.cfg.Redis.Prefix})
		if err != nil {
			return nil, err
		}
		bus = b
	}
	cfg := live.Config{
		Node: nodeID(), Version: versionString(), Gatherer: reg, Bus: bus,
		Drops: m.engine, Queue: m.room, Jobs: jobs, WebhookKinds: post.WebhookKinds,
		Switches: func() map[string]string {
			sw := m.switches.Switches()
			out := make(map[string]string, len(dibs.AllSwitches))
			for _, s := range dibs.AllSwitches {
				out[string(s)] = "off"
				if sw.On(s) {
					out[string(s)] = "on"
				}
			}
			return out
		},
		Logger: m.log,
	}
	if g := m.gauge; g != nil {
		cfg.Breaker = func() string { return string(g.Breaker()) }
	}
	return live.New(cfg)
}

// paceHealth is what an auto pace reads of downstream: the drop's charges
// waiting to be sent (from the job queue) and the payment gateway's p99
// and breaker (from this node's payment client).
type paceHealth struct {
	cfg   PaceConfig
	jobs  func() dibs.JobService // nil result: post-processing not started yet
	gauge *payment.Gauge         // nil: no gateway on this node
}

// pendingCharge are the states of a charge that has not reached the
// gateway yet, or is on its way.
var pendingCharge = map[string]bool{"available": true, "pending": true, "scheduled": true, "retryable": true, "running": true}

// Health implements pace.HealthSource.
func (h paceHealth) Health(ctx context.Context, d *dibs.Drop) (pace.Health, error) {
	var out pace.Health
	if d.Kind != dibs.KindPurchase {
		return out, nil // nothing downstream waits on a coupon
	}
	if jobs := h.jobs(); jobs != nil {
		counts, err := jobs.JobCounts(ctx, d.ID)
		if err != nil {
			return out, fmt.Errorf("count charges: %w", err)
		}
		for _, c := range counts {
			if c.Kind == post.KindChargePayment && pendingCharge[c.State] {
				out.ChargeBacklog += c.Count
			}
		}
		out.BacklogTarget = h.cfg.Backlog
	}
	if h.gauge != nil {
		out.LatencyTarget = h.cfg.Latency
		if p99, n := h.gauge.P99(); n > 0 {
			out.GatewayP99 = p99
		}
		out.BreakerOpen = h.gauge.Breaker() != payment.BreakerClosed
	}
	return out, nil
}

// engineRates records paced rates through the engine, once it exists.
type engineRates struct{ m *Main }

func (r engineRates) SetPacedRate(ctx context.Context, id string, rate int) error {
	return r.m.engine.SetPacedRate(ctx, id, rate)
}
