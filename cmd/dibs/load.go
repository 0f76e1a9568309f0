package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/loadgen"
)

// runLoad runs `dibs load`: it fires a spike of users at a drop on any dibs
// server, audits the winners afterwards, prints a summary and writes the
// reports. It returns an error when the run fails or the audit finds a
// broken invariant.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return loadMain(ctx, args, os.LookupEnv, stdout, stderr)
}

// loadMain is runLoad with the environment injected, for tests.
func loadMain(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dibs load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: dibs load --target URL[,URL...] --drop ID [flags]

Fires an open-model spike of users at a drop, then audits its winners over
the admin API. Several targets are nodes of one deployment: the users'
requests are spread over them, the audit reads from the first. Needs
DIBS_PASSPORT_SECRET (to sign passports) and
DIBS_ADMIN_TOKEN (to read the winners). Every flag may also be set as
DIBS_<FLAG>, e.g. DIBS_USERS=200000. Exits non-zero if an invariant broke.

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		target      = fs.String("target", "", "base `URL` of the dibs server, or of several nodes separated by commas (required)")
		sticky      = fs.Bool("sticky", false, "with several targets: send all of a user's requests to one node, as a load balancer with affinity does (default: each request to the next node)")
		dropID      = fs.String("drop", "", "`ID` of the drop to claim (required)")
		users       = fs.Int("users", 10_000, "users that arrive, one passport each")
		seconds     = fs.Float64("seconds", 2, "span of the arrivals in seconds (constant profile: users/seconds per second unless --rate)")
		profile     = fs.String("profile", string(loadgen.Spike), "arrival profile: spike or constant")
		rate        = fs.Float64("rate", 0, "constant profile: arrivals per second (wins over --seconds)")
		ramp        = fs.Duration("ramp", 0, "spike: time from zero to the peak rate (default a tenth of the span)")
		decay       = fs.Duration("decay", 0, "spike: time from the peak back to zero (default a quarter of the span)")
		retryFrac   = fs.Float64("retry-fraction", loadgen.DefaultRetryFraction, "fraction of users who claim a second time")
		idemKeys    = fs.Bool("idempotency-keys", false, "send an Idempotency-Key with claims; second claims reuse it")
		maxRetries  = fs.Int("max-retries", loadgen.DefaultMaxRetries, "retries of a request answered 429 or 503 (0: none)")
		regularRate = fs.Float64("regular-rate", 0, "regular traffic alongside the spike, requests per second (0: none)")
		maxInFlight = fs.Int("max-inflight", loadgen.DefaultMaxInFlight, "bound on the spike's requests in flight; arrivals beyond it are missed starts")
		timeout     = fs.Duration("timeout", loadgen.DefaultRequestTimeout, "bound on one request")
		settle      = fs.Duration("settle", loadgen.DefaultSettleWait, "when claims got no definite answer: how long the audit waits for the server's reconciler to make the stock add up (0: not at all)")
		pgsimURL    = fs.String("pgsim", "", "purchase drops: base `URL` of the payment gateway simulator the server charges (dibs pgsim); the audit compares its ledger with the paid claims")
		seed        = fs.Int64("seed", 0, "seed of user ids and random choices (0: a new one, printed)")
		reportPath  = fs.String("report", "", "write the report as JSON to `FILE`")
		htmlPath    = fs.String("html", "", "write the report as a self-contained HTML page to `FILE`")
		createStock = fs.Int64("create-stock", 0, "create the drop first, with this stock")
		kind        = fs.String("kind", string(dibs.KindCoupon), "with --create-stock: coupon or purchase")
		perUser     = fs.Int("per-user-limit", 1, "with --create-stock: claims one user may hold")
		queueRate   = fs.Int("queue-rate", 0, "with --create-stock: admit users through a waiting room at this many per second")
		holdTTL     = fs.Duration("hold-ttl", 0, "with --create-stock, purchase drops: how long a hold waits for payment")
		price       = fs.Int64("price", 0, "with --create-stock, purchase drops: the price charged per claim, in the currency's minor unit")
		verbose     = fs.Bool("verbose", false, "log debug details")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := flagsFromEnv(fs, env); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *target == "" || *dropID == "" {
		fs.Usage()
		return errors.New("--target and --drop are required")
	}
	secret, _ := env("DIBS_PASSPORT_SECRET")
	token, _ := env("DIBS_ADMIN_TOKEN")
	if *seed == 0 {
		*seed = time.Now().UnixNano()
	}

	var progress io.Writer
	if ci, _ := env("CI"); ci == "" {
		progress = loadgen.TerminalWriter(stderr)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logOut := stderr
	if progress != nil {
		logOut = clearLineWriter{stderr}
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	targets := splitTargets(*target)
	cfg := loadgen.Config{
		Targets:         targets,
		Sticky:          *sticky,
		DropID:          *dropID,
		Users:           *users,
		Profile:         loadgen.Profile{Shape: loadgen.Shape(*profile), Duration: time.Duration(*seconds * float64(time.Second)), Rate: *rate, Ramp: *ramp, Decay: *decay},
		RetryFraction:   *retryFrac,
		IdempotencyKeys: *idemKeys,
		MaxRetries:      *maxRetries,
		PassportSecret:  []byte(secret),
		AdminToken:      token,
		Regular:         loadgen.RegularConfig{Rate: *regularRate},
		MaxInFlight:     *maxInFlight,
		RequestTimeout:  *timeout,
		SettleWait:      *settle,
		PGSim:           *pgsimURL,
		Seed:            *seed,
		Progress:        progress,
		Logger:          logger,
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = -1 // the flag's 0 means none; the config's 0 means the default
	}
	if cfg.SettleWait == 0 {
		cfg.SettleWait = -1
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	if *createStock > 0 {
		spec := loadgen.DropSpec{ID: *dropID, Kind: dibs.Kind(*kind), Stock: *createStock,
			PerUserLimit: *perUser, QueueRate: *queueRate, HoldTTL: *holdTTL, Price: *price}
		if err := loadgen.CreateDrop(ctx, &http.Client{Timeout: *timeout}, targets[0], token, spec); err != nil {
			return err
		}
		logger.Info("drop created", "drop", *dropID, "kind", *kind, "stock", *createStock)
	}

	logger.Info("seed", "seed", *seed)
	rep, runErr := loadgen.Run(ctx, cfg)
	if rep == nil {
		return runErr
	}
	if err := writeLoadReports(rep, *reportPath, *htmlPath); err != nil {
		return err
	}
	if err := rep.Summary(stdout); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	return rep.Err()
}

// splitTargets reads --target: one URL, or several separated by commas
// (spaces around them ignored, empty ones skipped).
func splitTargets(v string) []string {
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return []string{v} // Validate names what is wrong with it
	}
	return out
}

// writeLoadReports writes the JSON and HTML reports where asked.
func writeLoadReports(rep *loadgen.Report, jsonPath, htmlPath string) error {
	for _, out := range []struct {
		path  string
		write func(io.Writer) error
	}{{jsonPath, rep.WriteJSON}, {htmlPath, rep.WriteHTML}} {
		if out.path == "" {
			continue
		}
		f, err := os.Create(out.path)
		if err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if err := out.write(f); err != nil {
			f.Close()
			return fmt.Errorf("write report %s: %w", out.path, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("write report %s: %w", out.path, err)
		}
	}
	return nil
}

// clearLineWriter erases the progress line before each log line, so the
// two do not run into each other on a terminal.
type clearLineWriter struct{ w io.Writer }

func (c clearLineWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(c.w, "\r\x1b[K"); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
