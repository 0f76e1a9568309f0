package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// generatorName is the section that measures `dibs load` against wrk.
const generatorName = "generator vs wrk"

// generatorResult is a round of each client against the same kind of
// server, started fresh for each.
type generatorResult struct {
	wrk, load []float64 // claims/s
	missed    []int64   // dibs load's missed starts
	ratios    []float64
}

// generator measures how many claims/s `dibs load` gets out of a sold-out
// dibs node, against what wrk gets out of the same node, the server alone
// on one core and the client alone on the other, rounds interleaved (who
// goes first taking turns). Every request carries a passport never seen
// before, for both clients: dibs load's users are distinct, and wrk
// cycles through cfg.tokens fresh ones.
func generator(cfg config) (generatorResult, error) {
	var r generatorResult
	node := withTokens("fresh.txt", "fresh-", -1, dibsNode(`{"id":"d","title":"sold out","kind":"coupon","stock":1}`, sellOut))
	wrkSide := func() (float64, int64, error) {
		rps, _, err := once(cfg, target{name: "wrk", start: node, tokens: "fresh.txt", path: "/v1/drops/d/claims"})
		return rps, 0, err
	}
	loadSide := func() (float64, int64, error) { return loadOnce(cfg, node) }
	for round := range cfg.rounds {
		sides := []struct {
			name string
			run  func() (float64, int64, error)
		}{{"wrk", wrkSide}, {"dibs load", loadSide}}
		if round%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		var w, l float64
		for _, s := range sides {
			rps, missed, err := s.run()
			if err != nil {
				return r, fmt.Errorf("%s round %d: %w", s.name, round+1, err)
			}
			log.Printf("   round %d %-10s %8.0f claims/s", round+1, s.name, rps)
			if s.name == "wrk" {
				w = rps
			} else {
				l = rps
				r.missed = append(r.missed, missed)
			}
		}
		r.wrk, r.load = append(r.wrk, w), append(r.load, l)
		r.ratios = append(r.ratios, l/w)
	}
	return r, nil
}

// loadOnce starts a fresh node and runs `dibs load` pinned to the client's
// core: a constant profile far beyond what one core serves, so the run
// measures the most the pair can do, each user claiming once. It returns
// the claims answered per second and the missed starts.
func loadOnce(cfg config, start func(ctx context.Context, cfg config, addr string) (func(), error)) (float64, int64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := freeAddr()
	if err != nil {
		return 0, 0, err
	}
	stop, err := start(ctx, cfg, addr)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	report := filepath.Join(cfg.dir, "load-report.json")
	users := int(cfg.duration.Seconds() * 40_000) // about the run's length at what one core serves
	cmd := pinned(1, dibsBin(cfg), "load", "--target", "http://"+addr, "--drop", "d",
		"--profile", "constant", "--rate", "150000", "--users", strconv.Itoa(users),
		"--retry-fraction", "0", "--max-retries", "0", "--max-conns", strconv.Itoa(cfg.conns),
		"--settle", "0", "--seed", "1", "--report", report)
	cmd.Env = append(os.Environ(), "CI=true", "DIBS_PASSPORT_SECRET="+secret, "DIBS_ADMIN_TOKEN="+admin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("dibs load: %v\n%s", err, out)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		return 0, 0, err
	}
	var rep struct {
		RequestsPerSecond float64 `json:"requests_per_second"`
		MissedStarts      int64   `json:"missed_starts"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, 0, err
	}
	return rep.RequestsPerSecond, rep.MissedStarts, nil
}

func renderGenerator(cfg config, r generatorResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured with `go run ./bench/run -only %q`: %d rounds, each round one run of wrk (%s, %d connections, one thread) and one of `dibs load` (`--profile constant --rate 150000`, %d connections, each user claiming once), who goes first taking turns; each against a fresh `dibs serve` whose drop is sold out, pinned alone to one core (`GOMAXPROCS=1`), the client alone on the other. Every request carries a passport the server has not seen before, for both clients. dibs load's figure is its report's `requests_per_second` (answered claims from the first intended arrival to the last answer); its passports are signed before the clock starts. The ratio is the median of the rounds' ratios.\n\n",
		generatorName, cfg.rounds, cfg.duration, cfg.conns, cfg.conns)
	b.WriteString("| wrk (claims/s) | dibs load (claims/s) | dibs load ÷ wrk | budget | dibs load's missed starts |\n|---|---|---|---|---|\n")
	verdict := "met"
	if median(r.ratios) < 0.9 {
		verdict = "**missed**"
	}
	missed := make([]float64, len(r.missed))
	for i, m := range r.missed {
		missed[i] = float64(m)
	}
	fmt.Fprintf(&b, "| %s | %s | **%.2f×** (rounds: %s) | ≥ 0.9× (%s) | %s |\n\n", runs(r.wrk), runs(r.load), median(r.ratios), ratios(r.ratios), verdict, runs(missed))
	b.WriteString("dibs load's schedule asks for far more than one core serves, so it misses starts by design here: the figure is the most the pair (one server core, one generator core) does.\n")
	return b.String()
}

func ratios(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(s, ", ")
}
