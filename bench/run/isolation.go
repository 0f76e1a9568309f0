package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// spikeLua is claimsLua paced: each connection waits args[2] milliseconds
// before each request, so 64 connections send about 64000/args[2] claims a
// second while the server keeps up.
const spikeLua = `
local tokens = {}
local i = 0
local pause = 0
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens+1] = line end
  i = math.random(#tokens)
  pause = tonumber(args[2]) or 0
end
function delay()
  return pause
end
function request()
  i = i % #tokens + 1
  return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. tokens[i]}, nil)
end
`

// isolationResult is one round of one variant: regular traffic alone, then
// during a spike.
type isolationResult struct {
	variant     string
	base, spike latencies
	spikeRPS    float64
	spikeOut    string  // wrk's status line, for the record
	gcs         float64 // garbage collections during the round
}

// isolation measures the regular service's latency without and with a
// claim spike on the same node: drop reads at regularRate,
// open-model, timed from their intended send time; the spike is wrk with
// a new user per claim on a drop of 1,111, paced to spikeRate.
func isolation(cfg config, regularRate, spikeRate float64, variants []variant) ([]isolationResult, error) {
	if err := mintTokens(cfg, "fresh.txt", "fresh-", cfg.tokens); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cfg.dir, "spike.lua"), []byte(spikeLua), 0o644); err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512}}
	pause := 0.0
	if spikeRate > 0 {
		pause = 1000 * float64(cfg.conns) / spikeRate
	}
	var out []isolationResult
	for round := range cfg.rounds {
		for _, v := range variants {
			r, err := isolationRound(cfg, client, v, regularRate, pause)
			if err != nil {
				return nil, err
			}
			log.Printf("   round %d %-22s regular p99 %.2f ms alone, %.2f ms during a spike of %.0f claims/s (%.2f×); p99.9 %.2f / %.2f ms; errors %d / %d; %.0f GCs",
				round+1, v.name, r.base.p99, r.spike.p99, r.spikeRPS, r.spike.p99/r.base.p99, r.base.p999, r.spike.p999, r.base.errors, r.spike.errors, r.gcs)
			out = append(out, r)
		}
	}
	return out, nil
}

// variant is a dibs node configuration compared in one run.
type variant struct {
	name string
	args []string
	// apart: the claims go to one node and the regular reads to another on
	// the same core, both on the run's Redis and a PostgreSQL record, as
	// when a load balancer sends an event's claims to a pool of their own.
	apart bool
}

func isolationRound(cfg config, client *http.Client, v variant, regularRate, pause float64) (isolationResult, error) {
	const drop = `{"id":"d","title":"Pepero Day","kind":"coupon","stock":1111}`
	var peer []string
	start := dibsNode(drop, nil, v.args...)
	if v.apart {
		redis, err := benchRedis()
		if err != nil {
			return isolationResult{}, err
		}
		start = dibsOnPostgres(drop, &peer, append([]string{"--redis", redis, "--redis-prefix", freshPrefix()}, v.args...)...)
	}
	{
		ctx, cancel := context.WithCancel(context.Background())
		addr, err := freeAddr()
		if err != nil {
			cancel()
			return isolationResult{}, err
		}
		stop, err := start(ctx, cfg, addr)
		if err != nil {
			cancel()
			return isolationResult{}, err
		}
		readAddr := addr
		if v.apart {
			var stopReads func()
			readAddr, stopReads, err = readNode(ctx, cfg, peer)
			if err != nil {
				stop()
				cancel()
				return isolationResult{}, err
			}
			stopClaims := stop
			stop = func() { stopReads(); stopClaims() }
		}
		url := "http://" + readAddr + "/v1/drops/d"
		regularTraffic(ctx, client, url, regularRate, time.Second) // warm up connections
		r := isolationResult{variant: v.name}
		r.base = regularTraffic(ctx, client, url, regularRate, cfg.duration)

		wrk := pinned(1, "wrk", "-t1", fmt.Sprintf("-c%d", cfg.conns), "-d"+(cfg.duration+time.Second).String(),
			"-s", filepath.Join(cfg.dir, "spike.lua"), "http://"+addr+"/v1/drops/d/claims", "--",
			filepath.Join(cfg.dir, "fresh.txt"), strconv.FormatFloat(pause, 'f', 3, 64))
		var wrkOut strings.Builder
		wrk.Stdout, wrk.Stderr = &wrkOut, &wrkOut
		if err := wrk.Start(); err != nil {
			stop()
			cancel()
			return isolationResult{}, err
		}
		time.Sleep(500 * time.Millisecond) // let the spike reach its rate
		r.spike = regularTraffic(ctx, client, url, regularRate, cfg.duration)
		wrk.Wait()
		if m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindStringSubmatch(wrkOut.String()); m != nil {
			r.spikeRPS, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := regexp.MustCompile(`Non-2xx or 3xx responses: \d+`).FindString(wrkOut.String()); m != "" {
			r.spikeOut = m
		}
		r.gcs, _ = scrape("http://"+addr, "go_gc_duration_seconds_count")
		stop()
		cancel()
		return r, nil
	}
}

// readNode starts a second dibs node with args (the first one's record and
// gate) on a free address.
func readNode(ctx context.Context, cfg config, args []string) (string, func(), error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	stop, err := startServer(ctx, cfg, addr, dibsBin(cfg), serveArgs(args...)...)
	return addr, stop, err
}

// isolationName names the regular-traffic scenario for -only.
const isolationName = "regular traffic during a spike"

// isolationBudget: the regular service's p99 during a spike at most this
// many times its p99 without one.
const isolationBudget = 1.5

// renderIsolation is the section of docs/benchmarks.md for the isolation
// rounds: each round's p99 during the spike over its p99 alone, and their
// median against the budget.
func renderIsolation(cfg config, rs []isolationResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured with `make bench` (`go run ./bench/run`): %d rounds, each a fresh node (defaults, SQLite record) read at %.0f drop reads/s, open-model and timed from each read's intended send time, for %s alone and then for %s while wrk (%d connections, a new user per claim, on the other core) claims a drop of 1,111 as fast as it goes. The ratio is the median of the rounds' ratios.\n\n",
		len(rs), cfg.regularRate, cfg.duration, cfg.duration, cfg.conns)
	b.WriteString("| round | p99 alone | p99 during the spike | ratio | p99.9 alone / during | errors alone / during | spike |\n|---|---|---|---|---|---|---|\n")
	ratios := make([]float64, len(rs))
	for i, r := range rs {
		ratios[i] = r.spike.p99 / r.base.p99
		fmt.Fprintf(&b, "| %d | %.2f ms | %.2f ms | %.2f× | %.2f / %.2f ms | %d / %d | %.0f claims/s |\n",
			i+1, r.base.p99, r.spike.p99, ratios[i], r.base.p999, r.spike.p999, r.base.errors, r.spike.errors, r.spikeRPS)
	}
	m := median(ratios)
	verdict := "met"
	if m > isolationBudget {
		verdict = "**missed**"
	}
	fmt.Fprintf(&b, "\n**Regular traffic p99 during a spike ÷ without one: %.2f×** (budget ≤ %.1f×, %s).\n", m, isolationBudget, verdict)
	return b.String()
}
