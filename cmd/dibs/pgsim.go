package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment/pgsim"
)

// runPgsim is `dibs pgsim`: it serves the payment-gateway simulator until
// ctx is cancelled, then releases the requests it is holding and shuts down.
// Every flag may also be set as DIBS_<FLAG> (upper case, dashes as
// underscores); a flag on the command line wins.
func runPgsim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dibs pgsim", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dibs pgsim [flags]\n\n"+
			"Serves a payment-gateway simulator speaking the dibs payment protocol\n"+
			"(docs/payments.md). GET /ledger lists every charge, GET /stats the counters.\n\n")
		fs.PrintDefaults()
	}

	d := pgsim.DefaultKnobs()
	var (
		cfg      pgsim.Config
		outages  pgsimOutages
		addr     = fs.String("addr", "127.0.0.1:8090", "listen `address`")
		logLevel = fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	)
	fs.DurationVar(&cfg.Latency.Base, "latency", d.Latency.Base, "fixed part of every answer's latency")
	fs.DurationVar(&cfg.Latency.Median, "latency-median", d.Latency.Median, "median of the log-normal part of the latency (0: none)")
	fs.Float64Var(&cfg.Latency.Sigma, "latency-sigma", d.Latency.Sigma, "shape of the log-normal part (0: constant; 0.5: p99 = 3.2×median)")
	fs.Float64Var(&cfg.DeclineRate, "decline-rate", d.DeclineRate, "fraction of new charges declined")
	fs.Float64Var(&cfg.TimeoutRate, "timeout-rate", d.TimeoutRate, "fraction of charges and refunds that hang for --hang")
	fs.Float64Var(&cfg.ResetRate, "reset-rate", d.ResetRate, "fraction of charges and refunds whose connection is reset")
	fs.Float64Var(&cfg.ErrorRate, "error-rate", d.ErrorRate, "fraction of charges and refunds answered 500")
	fs.Float64Var(&cfg.FaultApplied, "fault-applied", d.FaultApplied, "probability that a timed-out, reset or 500 request was applied anyway")
	fs.DurationVar(&cfg.Hang, "hang", d.Hang, "how long a timeout fault hangs before answering 504")
	fs.IntVar(&cfg.MaxConcurrency, "max-concurrency", d.MaxConcurrency, "requests in progress past which the simulator answers 503 overloaded (0: no cap)")
	fs.Var(&outages, "outage", "scheduled outage `START+DURATION` after start, e.g. 30s+10s; repeatable, or comma-separated")
	fs.StringVar(&cfg.OutageMode, "outage-mode", d.OutageMode, "outage behaviour: unavailable (503), timeout (hang) or reset")
	fs.StringVar(&cfg.APIKey, "api-key", "", "require \"Authorization: Bearer `KEY`\" on /v1 requests")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for the simulator's randomness (0: from the clock; the seed is logged)")

	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	cfg.Outages = outages

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("pgsim: --log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	sim, err := pgsim.New(cfg, logger)
	if err != nil {
		return fmt.Errorf("pgsim: %w", err)
	}
	defer sim.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("pgsim: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	logger.Info("pgsim started", "addr", ln.Addr().String(), "seed", sim.Stats().Seed, "knobs", sim.Knobs(), "outages", outages.String())
	fmt.Fprintf(stdout, "pgsim listening on http://%s\n", ln.Addr())

	select {
	case err := <-serveErr:
		return fmt.Errorf("pgsim: serve: %w", err)
	case <-ctx.Done():
	}

	// Release hanging requests first, or Shutdown would wait for them.
	sim.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("pgsim: shutdown: %w", err)
	}
	st := sim.Stats()
	logger.Info("pgsim stopped", "requests", st.Requests, "charges", st.Charges, "paid", st.Paid,
		"declined", st.Declined, "replays", st.Replays, "timeouts", st.Timeouts, "resets", st.Resets,
		"errors", st.Errors, "overloaded", st.Overloaded, "max_in_flight", st.MaxInFlight)
	return nil
}

// pgsimOutages is the repeatable --outage flag.
type pgsimOutages []pgsim.Window

func (o *pgsimOutages) String() string {
	if o == nil {
		return ""
	}
	s := make([]string, len(*o))
	for i, w := range *o {
		s[i] = w.String()
	}
	return strings.Join(s, ",")
}

// Set adds one window, or several separated by commas (as DIBS_OUTAGE
// carries them).
func (o *pgsimOutages) Set(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		w, err := pgsim.ParseWindow(part)
		if err != nil {
			return errors.New(dibs.ErrorMessage(err))
		}
		*o = append(*o, w)
	}
	return nil
}
