package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
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

// loadConfig is the configuration of one `dibs load`: what its flags and
// DIBS_<FLAG> variables say, in the units a person types (a 0 of
// --max-retries means no retries, not a default).
type loadConfig struct {
	Targets       []string
	Sticky        bool
	DropID        string
	Users         int
	Seconds       float64
	Profile       string
	Rate          float64
	Ramp, Decay   time.Duration
	RetryFraction float64
	IdemKeys      bool
	MaxRetries    int
	RegularRate   float64
	MaxInFlight   int
	MaxConns      int
	Timeout       time.Duration
	Settle        time.Duration
	PGSim         string
	Seed          int64
	ReportPath    string
	HTMLPath      string
	Create        createConfig
	Verbose       bool
	Shard         loadgen.Shard // --shard I/N; the zero value: the whole run
	Role          string        // "" (the spike) or "regular"
	StartAt       time.Time     // --start-at

	PassportSecret string // DIBS_PASSPORT_SECRET
	AdminToken     string // DIBS_ADMIN_TOKEN
}

// createConfig is the drop `dibs load --create-stock` creates first.
type createConfig struct {
	Stock        int64
	Kind         string
	PerUserLimit int
	QueueRate    int
	HoldTTL      time.Duration
	Price        int64
}

// defaultLoadConfig is a spike of 10,000 users over two seconds.
func defaultLoadConfig() loadConfig {
	return loadConfig{
		Users:         10_000,
		Seconds:       2,
		Profile:       string(loadgen.Spike),
		RetryFraction: loadgen.DefaultRetryFraction,
		MaxRetries:    loadgen.DefaultMaxRetries,
		MaxInFlight:   loadgen.DefaultMaxInFlight,
		Timeout:       loadgen.DefaultRequestTimeout,
		Settle:        loadgen.DefaultSettleWait,
		Create:        createConfig{Kind: string(dibs.KindCoupon), PerUserLimit: 1},
	}
}

func (c *loadConfig) flags(fs *flag.FlagSet) {
	fs.Func("target", "base `URL` of the dibs server, or of several nodes separated by commas (required)", func(v string) error {
		c.Targets = nil
		if strings.TrimSpace(v) != "" {
			c.Targets = splitTargets(v)
		}
		return nil
	})
	fs.BoolVar(&c.Sticky, "sticky", c.Sticky, "with several targets: send all of a user's requests to one node, as a load balancer with affinity does (default: each request to the next node)")
	fs.StringVar(&c.DropID, "drop", c.DropID, "`ID` of the drop to claim (required)")
	fs.IntVar(&c.Users, "users", c.Users, "users that arrive, one passport each")
	fs.Float64Var(&c.Seconds, "seconds", c.Seconds, "span of the arrivals in seconds (constant profile: users/seconds per second unless --rate)")
	fs.StringVar(&c.Profile, "profile", c.Profile, "arrival profile: spike or constant")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "constant profile: arrivals per second (wins over --seconds)")
	fs.DurationVar(&c.Ramp, "ramp", c.Ramp, "spike: time from zero to the peak rate (default a tenth of the span)")
	fs.DurationVar(&c.Decay, "decay", c.Decay, "spike: time from the peak back to zero (default a quarter of the span)")
	fs.Float64Var(&c.RetryFraction, "retry-fraction", c.RetryFraction, "fraction of users who claim a second time")
	fs.BoolVar(&c.IdemKeys, "idempotency-keys", c.IdemKeys, "send an Idempotency-Key with claims; second claims reuse it")
	fs.IntVar(&c.MaxRetries, "max-retries", c.MaxRetries, "retries of a request answered 429 or 503 (0: none)")
	fs.Float64Var(&c.RegularRate, "regular-rate", c.RegularRate, "regular traffic alongside the spike, requests per second (0: none)")
	fs.IntVar(&c.MaxInFlight, "max-inflight", c.MaxInFlight, "bound on the spike's requests in flight; arrivals beyond it are missed starts")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "bound on the connections to the targets (0: 1,024), shared among them")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "bound on one request")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "when claims got no definite answer: how long the audit waits for the server's reconciler to make the stock add up (0: not at all)")
	fs.StringVar(&c.PGSim, "pgsim", c.PGSim, "purchase drops: base `URL` of the payment gateway simulator the server charges (dibs pgsim); the audit compares its ledger with the paid claims")
	fs.Int64Var(&c.Seed, "seed", c.Seed, "seed of user ids and random choices (0: a new one, printed)")
	fs.StringVar(&c.ReportPath, "report", c.ReportPath, "write the report as JSON to `FILE`")
	fs.StringVar(&c.HTMLPath, "html", c.HTMLPath, "write the report as a self-contained HTML page to `FILE`")
	fs.Int64Var(&c.Create.Stock, "create-stock", c.Create.Stock, "create the drop first, with this stock")
	fs.StringVar(&c.Create.Kind, "kind", c.Create.Kind, "with --create-stock: coupon or purchase")
	fs.IntVar(&c.Create.PerUserLimit, "per-user-limit", c.Create.PerUserLimit, "with --create-stock: claims one user may hold")
	fs.IntVar(&c.Create.QueueRate, "queue-rate", c.Create.QueueRate, "with --create-stock: admit users through a waiting room at this many per second")
	fs.DurationVar(&c.Create.HoldTTL, "hold-ttl", c.Create.HoldTTL, "with --create-stock, purchase drops: how long a hold waits for payment")
	fs.Int64Var(&c.Create.Price, "price", c.Create.Price, "with --create-stock, purchase drops: the price charged per claim, in the currency's minor unit")
	fs.BoolVar(&c.Verbose, "verbose", c.Verbose, "log debug details")
	fs.Func("shard", "run the `I/N`-th slice of the users (user i is shard i mod N's), same seed and schedule on every shard; --report then writes the shard's result for dibs load merge, and the audit waits for the merge", func(v string) error {
		var sh loadgen.Shard
		if _, err := fmt.Sscanf(v, "%d/%d", &sh.Index, &sh.Count); err != nil || fmt.Sprintf("%d/%d", sh.Index, sh.Count) != v {
			return errors.New("want I/N, e.g. 0/3")
		}
		c.Shard = sh
		return nil
	})
	fs.StringVar(&c.Role, "role", c.Role, "regular: send only the regular traffic (--regular-rate) until standard input closes, and write its result to --report; dibs load starts such a process of its own for --regular-rate")
	fs.Func("start-at", "start the run (time 0) at this `RFC3339` instant, e.g. the same one on every shard", func(v string) error {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return err
		}
		c.StartAt = t
		return nil
	})
}

// Validate reports the first thing wrong with c that the generator's own
// Validate would not name in the command's terms (the rest it checks).
func (c *loadConfig) Validate() error {
	if len(c.Targets) == 0 || c.DropID == "" {
		return errors.New("--target and --drop are required")
	}
	if c.Role != "" && c.Role != "regular" {
		return errors.New("--role must be regular, or unset")
	}
	if c.Role == "regular" && (c.ReportPath == "" || c.RegularRate <= 0) {
		return errors.New("--role regular needs --report and --regular-rate")
	}
	if c.Shard.Count > 0 && c.ReportPath == "" {
		return errors.New("--shard needs --report: the file dibs load merge reads")
	}
	if c.Shard.Count > 0 && c.Seed == 0 {
		return errors.New("--shard needs --seed, the same on every shard")
	}
	return nil
}

// loadgen returns the generator's configuration; the generator reads a zero
// as "the default", where the flags' 0 of --max-retries and --settle means
// "none", which the generator spells as a negative value.
func (c *loadConfig) loadgen(progress io.Writer, logger *slog.Logger) loadgen.Config {
	return loadgen.Config{
		Targets:         c.Targets,
		Sticky:          c.Sticky,
		DropID:          c.DropID,
		Users:           c.Users,
		Profile:         loadgen.Profile{Shape: loadgen.Shape(c.Profile), Duration: time.Duration(c.Seconds * float64(time.Second)), Rate: c.Rate, Ramp: c.Ramp, Decay: c.Decay},
		RetryFraction:   c.RetryFraction,
		IdempotencyKeys: c.IdemKeys,
		MaxRetries:      zeroMeansNone(c.MaxRetries),
		PassportSecret:  []byte(c.PassportSecret),
		AdminToken:      c.AdminToken,
		Regular:         loadgen.RegularConfig{Rate: c.RegularRate},
		MaxInFlight:     c.MaxInFlight,
		MaxConns:        c.MaxConns,
		RequestTimeout:  c.Timeout,
		SettleWait:      zeroMeansNone(c.Settle),
		PGSim:           c.PGSim,
		Seed:            c.Seed,
		Shard:           c.Shard,
		StartAt:         c.StartAt,
		Progress:        progress,
		Logger:          logger,
	}
}

// zeroMeansNone turns a flag's 0 ("none") into the generator's -1 ("none").
func zeroMeansNone[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// dropSpec is the drop --create-stock creates.
func (c *loadConfig) dropSpec() loadgen.DropSpec {
	return loadgen.DropSpec{ID: c.DropID, Kind: dibs.Kind(c.Create.Kind), Stock: c.Create.Stock,
		PerUserLimit: c.Create.PerUserLimit, QueueRate: c.Create.QueueRate, HoldTTL: c.Create.HoldTTL, Price: c.Create.Price}
}

const loadUsage = `Usage: dibs load --target URL[,URL...] --drop ID [flags]

Fires an open-model spike of users at a drop, then audits its winners over
the admin API. Several targets are nodes of one deployment: the users'
requests are spread over them, the audit reads from the first. Needs
DIBS_PASSPORT_SECRET (to sign passports) and
DIBS_ADMIN_TOKEN (to read the winners). Every flag may also be set as
DIBS_<FLAG>, e.g. DIBS_USERS=200000. Exits non-zero if an invariant broke.

Flags:
`

// parseLoadConfig reads args and the environment into a loadConfig.
func parseLoadConfig(args []string, env func(string) (string, bool), stderr io.Writer) (loadConfig, error) {
	cfg := defaultLoadConfig()
	fs := flag.NewFlagSet("dibs load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), loadUsage)
		fs.PrintDefaults()
	}
	cfg.flags(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if err := flagsFromEnv(fs, env); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg.PassportSecret, _ = env("DIBS_PASSPORT_SECRET")
	cfg.AdminToken, _ = env("DIBS_ADMIN_TOKEN")
	if err := cfg.Validate(); err != nil {
		if len(cfg.Targets) == 0 || cfg.DropID == "" {
			fs.Usage()
		}
		return cfg, err
	}
	return cfg, nil
}

// loadMain is runLoad with the environment injected, for tests.
func loadMain(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "merge" {
		return mergeMain(ctx, args[1:], env, stdout, stderr)
	}
	c, err := parseLoadConfig(args, env, stderr)
	if err != nil {
		return err
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	var progress io.Writer
	if ci, _ := env("CI"); ci == "" {
		progress = loadgen.TerminalWriter(stderr)
	}
	if c.Role == "regular" {
		return regularMain(ctx, c, loadLogger(stderr, false, c.Verbose))
	}
	logger := loadLogger(stderr, progress != nil, c.Verbose)
	cfg := c.loadgen(progress, logger)
	if err := cfg.Validate(); err != nil {
		return err
	}
	if c.RegularRate > 0 {
		if self, err := loadSelf(); err == nil {
			cfg.RegularProcess = &regularChild{bin: self, args: c.regularArgs(), stderr: stderr}
		}
	}

	if c.Create.Stock > 0 {
		if err := loadgen.CreateDrop(ctx, &http.Client{Timeout: c.Timeout}, c.Targets[0], c.AdminToken, c.dropSpec()); err != nil {
			return err
		}
		logger.Info("drop created", "drop", c.DropID, "kind", c.Create.Kind, "stock", c.Create.Stock)
	}

	logger.Info("seed", "seed", c.Seed)
	rep, runErr := loadgen.Run(ctx, cfg)
	if rep == nil {
		return runErr
	}
	if c.Shard.Count > 0 {
		if err := writeFile(c.ReportPath, rep.WriteShard); err != nil {
			return err
		}
		if err := writeLoadReports(rep, "", c.HTMLPath); err != nil {
			return err
		}
	} else if err := writeLoadReports(rep, c.ReportPath, c.HTMLPath); err != nil {
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

// loadLogger logs to stderr; beside a progress line it erases that line
// before each log line.
func loadLogger(stderr io.Writer, progress, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	out := stderr
	if progress {
		out = clearLineWriter{stderr}
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
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
		if err := writeFile(out.path, out.write); err != nil {
			return err
		}
	}
	return nil
}

// writeFile creates path and writes it with write.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	return nil
}

const mergeUsage = `Usage: dibs load merge SHARD.json... [--report FILE] [--html FILE]

Merges the results of every shard of one run (dibs load --shard I/N
--report SHARD.json), audits the drop once over all their users, prints
the summary and writes the reports. Fails, naming it, when a shard is
missing, did not finish, or its file is cut short. Needs
DIBS_PASSPORT_SECRET and DIBS_ADMIN_TOKEN, as dibs load does.

Flags:
`

// mergeMain runs `dibs load merge`.
func mergeMain(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dibs load merge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), mergeUsage)
		fs.PrintDefaults()
	}
	reportPath := fs.String("report", "", "write the merged report as JSON to `FILE`")
	htmlPath := fs.String("html", "", "write the merged report as a self-contained HTML page to `FILE`")
	settle := fs.Duration("settle", loadgen.DefaultSettleWait, "as dibs load's --settle")
	// Flags may come before or after the files.
	var files []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) == 0 {
		fs.Usage()
		return errors.New("merge: name the shards' result files")
	}
	var shards []loadgen.NamedShard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		shards = append(shards, loadgen.NamedShard{Name: f, Data: b})
	}
	secret, _ := env("DIBS_PASSPORT_SECRET")
	token, _ := env("DIBS_ADMIN_TOKEN")
	rep, err := loadgen.Merge(ctx, loadgen.MergeConfig{
		PassportSecret: []byte(secret), AdminToken: token, SettleWait: zeroMeansNone(*settle),
		Logger: loadLogger(stderr, false, false),
	}, shards)
	if rep == nil {
		return err
	}
	if werr := writeLoadReports(rep, *reportPath, *htmlPath); werr != nil {
		return werr
	}
	if serr := rep.Summary(stdout); serr != nil {
		return serr
	}
	if err != nil {
		return err
	}
	return rep.Err()
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

// loadSelf is the dibs binary, to start the regular traffic's process;
// tests of this package, whose binary is not dibs, send it in-process.
var loadSelf = os.Executable

// regularArgs are the flags of the regular traffic's process: the same
// targets, drop, schedule and seed, so that its series has the same steps.
func (c *loadConfig) regularArgs() []string {
	args := []string{"load", "--role", "regular", "--target", strings.Join(c.Targets, ","), "--drop", c.DropID,
		"--users", strconv.Itoa(c.Users), "--seconds", strconv.FormatFloat(c.Seconds, 'g', -1, 64),
		"--profile", c.Profile, "--rate", strconv.FormatFloat(c.Rate, 'g', -1, 64),
		"--ramp", c.Ramp.String(), "--decay", c.Decay.String(),
		"--regular-rate", strconv.FormatFloat(c.RegularRate, 'g', -1, 64),
		"--timeout", c.Timeout.String(), "--seed", strconv.FormatInt(c.Seed, 10)}
	if c.Verbose {
		args = append(args, "--verbose")
	}
	return args
}

// regularChild is `dibs load --role regular` as a child process: it starts
// at the run's time 0 and stops when its standard input closes.
type regularChild struct {
	bin    string
	args   []string
	stderr io.Writer

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	result string
}

func (p *regularChild) Start(start time.Time) error {
	f, err := os.CreateTemp("", "dibs-load-regular-*.json")
	if err != nil {
		return err
	}
	f.Close()
	p.result = f.Name()
	args := append(slices.Clone(p.args), "--start-at", start.Format(time.RFC3339Nano), "--report", p.result)
	p.cmd = exec.Command(p.bin, args...)
	p.cmd.Env = append(os.Environ(), "CI=true")
	p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		os.Remove(p.result)
		return err
	}
	if err := p.cmd.Start(); err != nil {
		os.Remove(p.result)
		return err
	}
	return nil
}

func (p *regularChild) Stop() (*loadgen.RegularResult, error) {
	defer os.Remove(p.result)
	p.stdin.Close()
	if err := p.cmd.Wait(); err != nil {
		return nil, fmt.Errorf("dibs load --role regular: %w", err)
	}
	b, err := os.ReadFile(p.result)
	if err != nil {
		return nil, err
	}
	var res loadgen.RegularResult
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("dibs load --role regular: %w", err)
	}
	return &res, nil
}

// regularMain runs `dibs load --role regular`: regular traffic from
// --start-at until standard input closes (its parent is done), then its
// result in --report.
func regularMain(ctx context.Context, c loadConfig, logger *slog.Logger) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	res, err := loadgen.RunRegular(ctx, c.loadgen(nil, logger))
	if err != nil {
		return err
	}
	return writeFile(c.ReportPath, func(w io.Writer) error { return json.NewEncoder(w).Encode(res) })
}
