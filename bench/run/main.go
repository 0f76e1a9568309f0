// Command run measures dibs against reference servers and writes the
// results into docs/benchmarks.md.
//
// Each scenario pairs a reference with dibs, runs them alternately (A B A B
// …) with the same client (wrk, same connections, same script) and reports
// the median requests/s of each and their ratio. Servers are pinned to one
// core and the client to the other when taskset is available, so the
// figures are ratios measured in one run on the same machine.
//
//	go run ./bench/run [-rounds 3] [-duration 5s] [-only "sold-out"] [-write docs/benchmarks.md]
//
// -only "isolation variants" compares node settings for the regular
// traffic's latency during a spike instead, and writes nothing.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dibs-io/dibs/passport"
)

const (
	secret = "bench-passport-secret-0123456789abcdef"
	admin  = "bench-admin-token-0123456789"
)

type config struct {
	rounds   int
	duration time.Duration
	conns    int
	only     string
	write    string
	tokens   int
	dir      string // scratch: binaries, token files, data

	regularRate, spikeRate float64
}

func main() {
	cfg := config{}
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds per scenario, each measuring reference and dibs back to back")
	flag.DurationVar(&cfg.duration, "duration", 4*time.Second, "length of one measurement")
	flag.IntVar(&cfg.conns, "conns", 64, "client connections")
	flag.StringVar(&cfg.only, "only", "", "run only the scenarios whose name contains this")
	flag.StringVar(&cfg.write, "write", "docs/benchmarks.md", "file whose generated sections are rewritten, each only if all its scenarios ran (empty: print only)")
	flag.IntVar(&cfg.tokens, "tokens", 600_000, "distinct passports minted for scenarios that need a new user per request")
	flag.Float64Var(&cfg.regularRate, "regular-rate", 500, "isolation: regular drop reads per second")
	flag.Float64Var(&cfg.spikeRate, "spike-rate", 0, "isolation: claims per second of the spike (0: as fast as the client goes)")
	flag.Parse()
	log.SetFlags(0)
	if err := pinSelf(); err != nil {
		log.Fatal("bench: ", err)
	}
	if err := run(cfg); err != nil {
		log.Fatal("bench: ", err)
	}
}

func run(cfg config) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is needed (Debian: apt-get install wrk)")
	}
	dir, err := os.MkdirTemp("", "dibs-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.dir = dir
	log.Printf("building into %s", dir)
	for _, b := range []struct{ name, pkg string }{{"dibs", "./cmd/dibs"}, {"ceiling", "./bench/ceiling"}, {"naivepg", "./bench/naivepg"}, {"redisref", "./bench/redisref"}} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), b.pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "claims.lua"), []byte(claimsLua), 0o644); err != nil {
		return err
	}

	defer runCleanups()
	if cfg.only == "isolation variants" {
		_, err := isolation(cfg, cfg.regularRate, cfg.spikeRate, []variant{
			{"defaults", nil, false},
			{"GOGC 2000", []string{"--gc-percent", "2000"}, false},
			{"no claim-worker bound", []string{"--claim-workers", "-1"}, false},
			{"claims on a node apart", nil, true},
		})
		return err
	}
	if cfg.only == "" || strings.Contains(generatorName, cfg.only) {
		log.Printf("== %s", generatorName)
		r, err := generator(cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", generatorName, err)
		}
		table := renderGenerator(cfg, r)
		fmt.Print(table)
		if cfg.write != "" {
			if err := rewriteSection(cfg.write, "generator", table); err != nil {
				return err
			}
		}
	}
	if cfg.only == "" || strings.Contains(isolationName, cfg.only) {
		log.Printf("== %s", isolationName)
		rs, err := isolation(cfg, cfg.regularRate, cfg.spikeRate, []variant{{"defaults", nil, false}})
		if err != nil {
			return fmt.Errorf("%s: %w", isolationName, err)
		}
		table := renderIsolation(cfg, rs)
		fmt.Print(table)
		if cfg.write != "" {
			if err := rewriteSection(cfg.write, "isolation", table); err != nil {
				return err
			}
		}
	}
	var results []result
	for _, sc := range scenarios {
		if cfg.only != "" && !strings.Contains(sc.name, cfg.only) {
			continue
		}
		log.Printf("== %s", sc.name)
		r, err := measure(cfg, sc)
		if err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		results = append(results, r)
		log.Printf("   %s %.0f req/s, %s %.0f req/s: %.2f× (median of the rounds' ratios)", sc.ref.name, r.ref, sc.dibs.name, r.dibs, r.ratio)
	}
	// Each section of docs/benchmarks.md is rewritten from its own
	// scenarios, and only when all of them ran.
	var sections []string
	total := map[string]int{}
	for _, sc := range scenarios {
		if total[sc.sectionName()]++; total[sc.sectionName()] == 1 {
			sections = append(sections, sc.sectionName())
		}
	}
	for _, name := range sections {
		var rs []result
		for _, r := range results {
			if r.sc.sectionName() == name {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		table := render(cfg, name, rs)
		fmt.Print(table)
		if cfg.write != "" && len(rs) == total[name] {
			if err := rewriteSection(cfg.write, name, table); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanups run when the whole run ends (servers shared by scenarios).
var cleanups []func()

func runCleanups() {
	for _, f := range slices.Backward(cleanups) {
		f()
	}
}

// target is one side of a scenario: how to start it and what to send.
type target struct {
	name   string
	start  func(ctx context.Context, cfg config, addr string) (stop func(), err error)
	tokens string // token file for the wrk script, relative to cfg.dir
	path   string
	// metric, if set, is a sample of the target's /metrics (name and
	// labels, e.g. `dibs_gate_redis_calls_total{op="reserve"}`) read before
	// and after each measurement; the result reports how much it grew.
	metric string
}

type scenario struct {
	name      string
	what      string // the sentence under the table
	ref, dibs target
	want      float64 // the budget: dibs/ref at least this
	section   string  // of docs/benchmarks.md; "" is "core"
}

func (sc scenario) sectionName() string {
	if sc.section == "" {
		return "core"
	}
	return sc.section
}

type result struct {
	sc         scenario
	ref, dibs  float64 // median requests/s
	ratio      float64 // median of the rounds' dibs ÷ reference
	refRuns    []float64
	dibsRuns   []float64
	dibsMetric []float64 // growth of sc.dibs.metric during each dibs run
}

func measure(cfg config, sc scenario) (result, error) {
	r := result{sc: sc}
	for round := range cfg.rounds {
		// Each round measures both back to back, who goes first taking
		// turns: a burst of other work on the machine weighs on one round's
		// pair, and the median of the rounds' ratios sets it aside.
		order := []*target{&sc.ref, &sc.dibs}
		if round%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, side := range order {
			rps, grew, err := once(cfg, *side)
			if err != nil {
				return r, fmt.Errorf("%s round %d: %w", side.name, round+1, err)
			}
			if side == &sc.ref {
				r.refRuns = append(r.refRuns, rps)
			} else {
				r.dibsRuns = append(r.dibsRuns, rps)
				if side.metric != "" {
					r.dibsMetric = append(r.dibsMetric, grew)
					log.Printf("   %s grew by %.0f", side.metric, grew)
				}
			}
			log.Printf("   round %d %-28s %8.0f req/s", round+1, side.name, rps)
		}
	}
	r.ref, r.dibs = median(r.refRuns), median(r.dibsRuns)
	ratios := make([]float64, len(r.refRuns))
	for i := range ratios {
		ratios[i] = r.dibsRuns[i] / r.refRuns[i]
	}
	r.ratio = median(ratios)
	return r, nil
}

// once starts a fresh server, runs wrk against it, and stops the server.
// It returns the requests/s and how much t.metric grew meanwhile.
func once(cfg config, t target) (rps, grew float64, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := freeAddr()
	if err != nil {
		return 0, 0, err
	}
	stop, err := t.start(ctx, cfg, addr)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	var before float64
	if t.metric != "" {
		if before, err = scrape("http://"+addr, t.metric); err != nil {
			return 0, 0, err
		}
		defer func() {
			if after, serr := scrape("http://"+addr, t.metric); serr == nil {
				grew = after - before
			} else if err == nil {
				err = serr
			}
		}()
	}
	rps, err = wrk(cfg, t, addr)
	return rps, 0, err
}

// wrk runs the client against t on addr and returns its requests/s.
func wrk(cfg config, t target, addr string) (float64, error) {
	args := []string{"-t1", fmt.Sprintf("-c%d", cfg.conns), "-d" + cfg.duration.String(), "-s", filepath.Join(cfg.dir, "claims.lua"),
		"http://" + addr + t.path, "--", filepath.Join(cfg.dir, t.tokens)}
	out, err := pinned(1, "wrk", args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk said:\n%s", out)
	}
	if bytes.Contains(out, []byte("Socket errors")) {
		log.Printf("   wrk: %s", bytes.TrimSpace(regexp.MustCompile(`Socket errors.*`).Find(out)))
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// scrape reads one sample of a server's /metrics: the line that starts
// with sample.
func scrape(url, sample string) (float64, error) {
	res, err := http.Get(url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s/metrics has no %s", url, sample)
}

// pinSelf runs this program again on CPU 1 (the client's core) when
// taskset exists, and at a real-time priority when chrt exists, so its
// regular-traffic client neither takes the server's core nor waits behind
// wrk for a time slice: the latencies it reports are the server's, not its
// own queueing. The servers and wrk it starts run at normal priority
// (pinned). It returns only in that copy, or where taskset is missing.
func pinSelf() error {
	if os.Getenv("DIBS_BENCH_PINNED") != "" {
		return nil
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{self}, os.Args[1:]...)
	if _, err := exec.LookPath("chrt"); err == nil {
		args = append([]string{"chrt", "--fifo", "10"}, args...)
	}
	cmd := pinned(1, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "DIBS_BENCH_PINNED=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		return err
	}
	os.Exit(0)
	return nil
}

// pinned runs name on the given CPU when taskset exists, at the normal
// (time-sharing) priority whatever this program's own.
func pinned(cpu int, name string, args ...string) *exec.Cmd {
	if _, err := exec.LookPath("chrt"); err == nil && os.Getenv("DIBS_BENCH_PINNED") != "" {
		args = append([]string{"--other", "0", name}, args...)
		name = "chrt"
	}
	if _, err := exec.LookPath("taskset"); err == nil {
		return exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), name}, args...)...)
	}
	return exec.Command(name, args...)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startProcess runs a server pinned to CPU 0 with one P and waits until it
// answers on addr.
func startProcess(ctx context.Context, addr string, env []string, name string, args ...string) (func(), error) {
	cmd := pinned(0, name, args...)
	cmd.Env = append(append(os.Environ(), "GOMAXPROCS=1"), env...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s did not listen on %s:\n%s", name, addr, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mintTokens writes n passports for users prefix0..prefix(n-1), one a line,
// unless the file exists.
func mintTokens(cfg config, file, prefix string, n int) error {
	path := filepath.Join(cfg.dir, file)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	now := time.Now()
	for i := range n {
		tok, err := passport.Issue([]byte(secret), prefix+strconv.Itoa(i), now, 3*time.Hour)
		if err != nil {
			return err
		}
		w.WriteString(tok)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// dibsNode starts `dibs serve` on a fresh data directory with one drop,
// prepared by prepare (e.g. sold out).
func dibsNode(dropJSON string, prepare func(url string) error, extra ...string) func(ctx context.Context, cfg config, addr string) (func(), error) {
	return func(ctx context.Context, cfg config, addr string) (func(), error) {
		return server(dropJSON, prepare, dibsBin(cfg), serveArgs(extra...)...)(ctx, cfg, addr)
	}
}

// dibsBin is the dibs binary built for the run; serveArgs its arguments
// for a node, before --addr and --data.
func dibsBin(cfg config) string { return filepath.Join(cfg.dir, "dibs") }

func serveArgs(extra ...string) []string {
	return append([]string{"serve", "--log-level", "warn"}, extra...)
}

// server starts bin with args plus --addr and a fresh --data directory,
// creates one drop through the admin API and prepares it.
func server(dropJSON string, prepare func(url string) error, bin string, args ...string) func(ctx context.Context, cfg config, addr string) (func(), error) {
	return func(ctx context.Context, cfg config, addr string) (func(), error) {
		stop, err := startServer(ctx, cfg, addr, bin, args...)
		if err != nil {
			return nil, err
		}
		url := "http://" + addr
		if err := post(url+"/v1/admin/drops", admin, dropJSON, http.StatusCreated); err != nil {
			stop()
			return nil, err
		}
		if prepare != nil {
			if err := prepare(url); err != nil {
				stop()
				return nil, err
			}
		}
		return stop, nil
	}
}

// startServer starts bin with args plus --addr and a fresh --data
// directory, which its stop removes.
func startServer(ctx context.Context, cfg config, addr, bin string, args ...string) (func(), error) {
	data, err := os.MkdirTemp(cfg.dir, "data-")
	if err != nil {
		return nil, err
	}
	args = append(slices.Clone(args), "--addr", addr, "--data", data)
	stop, err := startProcess(ctx, addr, []string{"DIBS_PASSPORT_SECRET=" + secret, "DIBS_ADMIN_TOKEN=" + admin}, bin, args...)
	if err != nil {
		os.RemoveAll(data)
		return nil, err
	}
	return func() { stop(); os.RemoveAll(data) }, nil
}

func ceiling(ctx context.Context, cfg config, addr string) (func(), error) {
	return startProcess(ctx, addr, nil, filepath.Join(cfg.dir, "ceiling"), "--addr", addr)
}

// naivePG starts the naive PostgreSQL design with stock units, on the
// database of TEST_DATABASE_URL (default: the local test database).
func naivePG(stock int64) func(ctx context.Context, cfg config, addr string) (func(), error) {
	return func(ctx context.Context, cfg config, addr string) (func(), error) {
		url := databaseURL()
		return startProcess(ctx, addr, []string{"DIBS_PASSPORT_SECRET=" + secret}, filepath.Join(cfg.dir, "naivepg"),
			"--addr", addr, "--postgres", url, "--schema", "bench_naive", "--stock", strconv.FormatInt(stock, 10))
	}
}

func post(url, bearer, body string, want int) error {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != want {
		b, _ := io.ReadAll(res.Body)
		return fmt.Errorf("POST %s: %d %s", url, res.StatusCode, b)
	}
	return nil
}

// claimsLua cycles through the passports in the file given after "--",
// one per request, each connection from its own place in the list.
const claimsLua = `
local tokens = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens+1] = line end
  i = math.random(#tokens)
end
function request()
  i = i % #tokens + 1
  return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. tokens[i]}, nil)
end
`

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func render(cfg config, section string, rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured with `make bench` (`go run ./bench/run`): %d rounds of %s each, each round measuring reference and dibs back to back (who goes first taking turns), wrk with %d connections on one core, the server alone on the other (`GOMAXPROCS=1`)%s. The ratio is the median of the rounds' ratios.\n\n",
		cfg.rounds, cfg.duration, cfg.conns, sectionSetup[section])
	b.WriteString("| scenario | reference | dibs ÷ reference | budget | runs (reference / dibs, req/s) |\n|---|---|---|---|---|\n")
	for _, r := range rs {
		verdict := "met"
		if r.ratio < r.sc.want {
			verdict = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | **%.2f×** | ≥ %.1f× (%s) | %s / %s |\n", r.sc.name, r.sc.ref.name, r.ratio, r.sc.want, verdict, runs(r.refRuns), runs(r.dibsRuns))
	}
	b.WriteString("\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- **%s**: %s", r.sc.name, r.sc.what)
		if len(r.dibsMetric) > 0 {
			fmt.Fprintf(&b, " `%s` grew by %s during the dibs runs.", r.sc.dibs.metric, runs(r.dibsMetric))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// sectionSetup completes the setup sentence of a section.
var sectionSetup = map[string]string{}

func runs(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, ", ")
}

// rewriteSection replaces the text between <!-- bench:NAME --> and
// <!-- /bench:NAME --> in path, appending the section if it is missing.
func rewriteSection(path, name, body string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := "<!-- bench:"+name+" -->", "<!-- /bench:"+name+" -->"
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	block := begin + "\n" + body + end
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	} else {
		s = s[:i] + block + s[j+len(end):]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
