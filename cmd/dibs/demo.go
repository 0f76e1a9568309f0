package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/loadgen"
)

// demoConfig is what `dibs demo` plays.
type demoConfig struct {
	Users       int
	Seconds     float64
	RegularRate float64
	ReportPath  string // JSON of every scenario
	OutDir      string // HTML reports; a new temporary directory if empty
	Keep        bool   // keep the data directory
	Seed        int64
}

func (c *demoConfig) flags(fs *flag.FlagSet) {
	fs.IntVar(&c.Users, "users", c.Users, "users in the Pepero Day spike")
	fs.Float64Var(&c.Seconds, "seconds", c.Seconds, "span of the spike's arrivals in seconds")
	fs.Float64Var(&c.RegularRate, "regular-rate", c.RegularRate, "regular traffic alongside the spike, requests per second")
	fs.StringVar(&c.ReportPath, "report", c.ReportPath, "write every scenario's report as JSON to `FILE`")
	fs.StringVar(&c.OutDir, "out", c.OutDir, "directory for the HTML reports (default: a new temporary directory)")
	fs.BoolVar(&c.Keep, "keep", c.Keep, "keep the embedded node's data directory")
	fs.Int64Var(&c.Seed, "seed", c.Seed, "seed of the load generator (0: from the clock)")
}

func (c *demoConfig) Validate() error {
	switch {
	case c.Users < 1:
		return errors.New("--users must be at least 1")
	case c.Seconds <= 0:
		return errors.New("--seconds must be positive")
	case c.RegularRate < 0:
		return errors.New("--regular-rate must not be negative")
	}
	return nil
}

// demoResult is the JSON report of a demo.
type demoResult struct {
	OK        bool              `json:"ok"`
	Scenarios []*demoScenario   `json:"scenarios"`
	Checks    []loadgen.Check   `json:"checks"` // demo-level checks beyond each run's audit
	Reports   map[string]string `json:"html_reports"`
}

type demoScenario struct {
	Name   string          `json:"name"`
	Story  string          `json:"story"`
	Report *loadgen.Report `json:"report"`
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := demoConfig{Users: 200_000, Seconds: 2, RegularRate: 200}
	fs := flag.NewFlagSet("dibs demo", flag.ContinueOnError)
	cfg.flags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	if cfg.OutDir == "" {
		dir, err := os.MkdirTemp("", "dibs-demo-report-")
		if err != nil {
			return err
		}
		cfg.OutDir = dir
	}
	data, err := os.MkdirTemp("", "dibs-demo-data-")
	if err != nil {
		return err
	}
	if !cfg.Keep {
		defer os.RemoveAll(data)
	}

	d := &demo{cfg: cfg, data: data, stdout: stdout, stderr: stderr,
		secret: rand.Text() + rand.Text(), admin: rand.Text(), hookSecret: rand.Text(),
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	res, err := d.run(ctx)
	if res != nil && cfg.ReportPath != "" {
		if werr := writeJSONFile(cfg.ReportPath, res); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	if !res.OK {
		return errors.New("demo: an invariant broke (see above)")
	}
	fmt.Fprintln(stdout, "\nEvery invariant held.")
	return nil
}

// demo runs scenarios against one embedded node.
type demo struct {
	cfg            demoConfig
	data           string
	secret, admin  string
	hookSecret     string
	node           *Main
	down           *downstream
	log            *slog.Logger
	stdout, stderr io.Writer
}

func (d *demo) start(ctx context.Context) error {
	c := DefaultConfig()
	c.Addr, c.Data, c.PassportSecret, c.AdminToken = "127.0.0.1:0", d.data, d.secret, d.admin
	c.Post.PaymentGateway, c.Post.WebhookURL, c.Post.WebhookSecret = d.down.pgURL, d.down.hooksURL, d.hookSecret
	// Every winner pays within seconds and is told at once: the simulated
	// gateway and the demo's receiver take it.
	c.Post.PaymentRate, c.Post.PaymentConns = 1000, 64
	c.Post.WebhookRate, c.Post.WebhookConns = 2000, 32
	// Every simulated buyer joins the waiting room from this one address.
	c.Room.Joins.Rate = 0
	c.Post.RetryMin, c.Post.RetryMax = 100*time.Millisecond, time.Second
	d.node = NewMain(c, d.log)
	if err := d.node.Run(ctx); err != nil {
		d.node.Close()
		return fmt.Errorf("start the embedded node: %w", err)
	}
	return nil
}

func (d *demo) run(ctx context.Context) (*demoResult, error) {
	down, err := startDownstream([]byte(d.hookSecret), d.cfg.Seed)
	if err != nil {
		return nil, err
	}
	defer down.close()
	d.down = down
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	defer func() { d.node.Close() }()
	fmt.Fprintf(d.stdout, "dibs demo: an embedded node at %s, its record in %s\n", d.node.URL(), d.data)

	res := &demoResult{OK: true, Reports: map[string]string{}}
	sc, err := d.pepero(ctx)
	if err != nil {
		return res, err
	}
	res.Scenarios = append(res.Scenarios, sc)
	checks, err := d.couponChecks(ctx, sc.Report.Drop.ID, int(sc.Report.Drop.Stock))
	if err != nil {
		return res, err
	}
	res.Checks = append(res.Checks, checks...)

	// Restart the node on the same record: every winner must still be there.
	check, err := d.restartKeepsWinners(ctx, sc.Report.Drop.ID)
	if err != nil {
		return res, err
	}
	res.Checks = append(res.Checks, check)

	phone, err := d.phone(ctx)
	if err != nil {
		return res, err
	}
	res.Scenarios = append(res.Scenarios, phone)
	if checks, err = d.paymentChecks(ctx, phone.Report.Drop.ID, phone.Report.Drop.Stock); err != nil {
		return res, err
	}
	res.Checks = append(res.Checks, checks...)

	for _, s := range res.Scenarios {
		path := filepath.Join(d.cfg.OutDir, s.Name+".html")
		if err := writeLoadReports(s.Report, "", path); err != nil {
			return res, err
		}
		res.Reports[s.Name] = path
		res.OK = res.OK && s.Report.Err() == nil
	}
	fmt.Fprintln(d.stdout)
	for _, c := range res.Checks {
		fmt.Fprintf(d.stdout, "%-6s %-28s %s\n", c.Status, c.Name, c.Detail)
		res.OK = res.OK && c.Status != loadgen.CheckFail
	}
	for _, s := range res.Scenarios {
		fmt.Fprintf(d.stdout, "HTML report (%s): %s\n", s.Name, res.Reports[s.Name])
	}
	// What the server did, apart from what the generator could do: on a
	// small machine the generator shares the cores with the node, and its
	// own lag must not read as the server's latency.
	fmt.Fprintln(d.stdout)
	for _, s := range res.Scenarios {
		fmt.Fprintf(d.stdout, "%s: %s\n", s.Name, s.Report.Headline())
	}
	return res, nil
}

// pepero plays Pepero Day: 1,111 coupons at 11:00, a spike of users within
// seconds, a fifth of them pressing twice.
func (d *demo) pepero(ctx context.Context) (*demoScenario, error) {
	const id = "pepero-day"
	client := &http.Client{Timeout: 10 * time.Second}
	spec := loadgen.DropSpec{ID: id, Title: "Pepero Day: the first 1,111 get an 11,000 won coupon", Kind: dibs.KindCoupon, Stock: 1111, PerUserLimit: 1}
	if err := loadgen.CreateDrop(ctx, client, d.node.URL(), d.admin, spec); err != nil {
		return nil, err
	}
	fmt.Fprintf(d.stdout, "\n== Pepero Day: %d coupons, %d users within %gs, %.0f%% press twice ==\n",
		spec.Stock, d.cfg.Users, d.cfg.Seconds, loadgen.DefaultRetryFraction*100)
	// The regular reads come from a process of their own: their latency
	// is the node's, not the spike generator's scheduler's.
	var regular loadgen.RegularProcess
	if self, err := loadSelf(); err == nil && d.cfg.RegularRate > 0 {
		lc := loadConfig{Targets: []string{d.node.URL()}, DropID: id, Users: d.cfg.Users, Seconds: d.cfg.Seconds,
			Profile: string(loadgen.Spike), RegularRate: d.cfg.RegularRate, Timeout: loadgen.DefaultRequestTimeout, Seed: d.cfg.Seed}
		regular = &regularChild{bin: self, args: lc.regularArgs(), stderr: d.stderr}
	}
	rep, err := loadgen.Run(ctx, loadgen.Config{
		RegularProcess: regular,
		Target:         d.node.URL(), DropID: id, Users: d.cfg.Users,
		Profile:        loadgen.Profile{Shape: loadgen.Spike, Duration: time.Duration(d.cfg.Seconds * float64(time.Second))},
		RetryFraction:  loadgen.DefaultRetryFraction,
		PassportSecret: []byte(d.secret), AdminToken: d.admin,
		Regular:  loadgen.RegularConfig{Rate: d.cfg.RegularRate},
		Seed:     d.cfg.Seed,
		Progress: progressWriter(d.stderr),
		Logger:   d.log,
	})
	if err != nil {
		return nil, err
	}
	if err := rep.Summary(d.stdout); err != nil {
		return nil, err
	}
	return &demoScenario{Name: id, Story: spec.Title, Report: rep}, nil
}

// restartKeepsWinners restarts the node on the same record and checks that
// the winners export is the same, claim for claim.
func (d *demo) restartKeepsWinners(ctx context.Context, drop string) (loadgen.Check, error) {
	check := loadgen.Check{Name: "winners_survive_restart"}
	before, err := d.winners(ctx, drop)
	if err != nil {
		return check, err
	}
	if err := d.node.Close(); err != nil {
		return check, err
	}
	if err := d.start(ctx); err != nil {
		return check, err
	}
	after, err := d.winners(ctx, drop)
	if err != nil {
		return check, err
	}
	check.Status, check.Detail = loadgen.CheckPass, fmt.Sprintf("%d winners before and after a restart on the same record", len(before))
	if !slices.Equal(before, after) {
		check.Status, check.Detail = loadgen.CheckFail, fmt.Sprintf("%d winners before a restart, %d after, or different claims", len(before), len(after))
	}
	return check, nil
}

// winners reads a drop's winners export, one line per claim.
func (d *demo) winners(ctx context.Context, drop string) ([]string, error) {
	res, err := d.adminGet(ctx, "/v1/admin/drops/"+drop+"/winners")
	if err != nil {
		return nil, fmt.Errorf("read winners: %w", err)
	}
	defer res.Body.Close()
	var out []string
	dec := json.NewDecoder(res.Body)
	for {
		var line json.RawMessage
		if err := dec.Decode(&line); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("read winners: %w", err)
		}
		out = append(out, string(line))
	}
}

// progressWriter is a live progress line on a terminal, nothing in CI.
func progressWriter(w io.Writer) io.Writer {
	if os.Getenv("CI") != "" {
		return nil
	}
	return loadgen.TerminalWriter(w)
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
