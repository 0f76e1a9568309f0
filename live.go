package dibs

import (
	"context"
	"time"
)

// The live snapshot is what an operator's console shows of a running sale,
// once a second: every drop's numbers as the cluster sees them, the
// post-processing backlog, the switches, and every node's health. Rates are
// per second over the last second (counter deltas); latencies are over the
// last ten seconds.

// LiveService serves the newest cluster-wide snapshot.
type LiveService interface {
	// Snapshot returns the newest snapshot. Safe for concurrent use.
	Snapshot(ctx context.Context) (LiveSnapshot, error)
	// Changed returns a channel closed when a newer snapshot than the one
	// Snapshot returns now is ready. Take it before reading the snapshot,
	// so that none is missed.
	Changed() <-chan struct{}
}

// LiveSnapshot is the state of the whole cluster at At.
type LiveSnapshot struct {
	At    time.Time  `json:"at"`
	Drops []LiveDrop `json:"drops"`
	Post  LivePost   `json:"post"`
	// Switches are the operator's switches by name ("claims", "queue_joins",
	// "payments", "webhooks"), each "on" or "off".
	Switches map[string]string `json:"switches"`
	Nodes    []LiveNode        `json:"nodes"`
}

// LiveDrop is one drop's numbers. Stock to Expired come from the record and
// the gate, ClaimsPerSec is the sum over the nodes. LatencyMS is the claim
// latency of the cluster over the last ten seconds, every drop's claims
// together: nodes measure claim latency by outcome, not by drop.
type LiveDrop struct {
	ID           string         `json:"id"`
	Title        string         `json:"title"`
	Kind         Kind           `json:"kind"`
	State        State          `json:"state"`
	Stock        int64          `json:"stock"`
	Remaining    int64          `json:"remaining"`
	Held         int64          `json:"held"`
	Confirmed    int64          `json:"confirmed"`
	Paid         int64          `json:"paid"`
	Released     int64          `json:"released"`
	Expired      int64          `json:"expired"`
	ClaimsPerSec LiveClaimRates `json:"claims_per_sec"`
	LatencyMS    LiveLatency    `json:"latency_ms"`
	// SoldOutAt is when remaining was first seen at 0; nil before.
	SoldOutAt *time.Time `json:"sold_out_at"`
	// Queue is nil for drops without a waiting room.
	Queue *LiveQueue `json:"queue"`
}

// LiveClaimRates are claim answers per second by outcome. Shed counts the
// claims refused because the node could not record them in time
// (EOVERLOADED, EUNAVAILABLE); Closed, Paused and Admission the refusals
// of a closed or paused drop and of a missing or bad admission.
type LiveClaimRates struct {
	Won       float64 `json:"won"`
	Existing  float64 `json:"existing"`
	SoldOut   float64 `json:"sold_out"`
	Limit     float64 `json:"limit"`
	NotOpen   float64 `json:"not_open"`
	Shed      float64 `json:"shed"`
	Error     float64 `json:"error"`
	Closed    float64 `json:"closed"`
	Paused    float64 `json:"paused"`
	Admission float64 `json:"admission"`
}

// LiveLatency are percentiles of a latency, in milliseconds.
type LiveLatency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// LiveQueue is a queued drop's waiting room.
type LiveQueue struct {
	Joined         uint64  `json:"joined"`
	Waiting        uint64  `json:"waiting"`
	AdmittedPerSec float64 `json:"admitted_per_sec"`
	Rate           int     `json:"rate"`      // admissions per second the room aims at
	RateMode       string  `json:"rate_mode"` // "fixed" or "auto"
	RateMin        int     `json:"rate_min"`
	RateMax        int     `json:"rate_max"`
	// ETALastS is how many seconds the last person in line still waits at
	// the pace of the last second (the room's rate while nobody is admitted).
	ETALastS float64 `json:"eta_last_s"`
	SoldOut  bool    `json:"sold_out"`
}

// LivePost is the post-processing of the whole cluster.
type LivePost struct {
	// Backlog counts the jobs not done yet (waiting, scheduled, retrying,
	// running) by job kind.
	Backlog        map[string]int64 `json:"backlog"`
	FailedWebhooks int64            `json:"failed_webhooks"`
	// Breaker is the payment gateway's circuit breaker: "closed",
	// "half-open" or "open"; the worst of the nodes'.
	Breaker       string  `json:"breaker"`
	ChargesPerSec float64 `json:"charges_per_sec"`
	GatewayP99MS  float64 `json:"gateway_p99_ms"`
}

// LiveNode is one node's health. A node that has not reported for three
// seconds is Stale; after a minute it leaves the list.
type LiveNode struct {
	ID            string    `json:"id"`
	Version       string    `json:"version"`
	Stale         bool      `json:"stale"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// Inflight are the requests in flight by route class; Shed the
	// requests per second refused at once because their class was full.
	Inflight      map[string]int64   `json:"inflight"`
	Shed          map[string]float64 `json:"shed"`
	RecorderBatch float64            `json:"recorder_batch"` // mean claims per group commit, last 10 s
	CommitP99MS   float64            `json:"commit_p99_ms"`
	Goroutines    int64              `json:"goroutines"`
	HeapBytes     uint64             `json:"heap_bytes"`
	GCPauseP99MS  float64            `json:"gc_pause_p99_ms"`
}
