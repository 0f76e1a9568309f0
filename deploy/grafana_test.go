package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-io/dibs/client"
	"github.com/dibs-io/dibs/internal/testenv"
)

const (
	nodeSecret = "deploy-test-secret-0123456789abcdef"
	nodeAdmin  = "deploy-test-admin-token"
)

// startNode runs the built dibs serve on a free port and a temporary data
// directory, with the extra flags, and returns its base URL. The node stops
// with the test.
func startNode(t *testing.T, extra ...string) string {
	t.Helper()
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--log-format", "json"}, extra...)
	cmd := exec.Command(dibsBinary(t), args...)
	cmd.Env = append(os.Environ(), "DIBS_PASSPORT_SECRET="+nodeSecret, "DIBS_ADMIN_TOKEN="+nodeAdmin)
	base, _, _ := serveNode(t, cmd)
	return base
}

// serveNode starts cmd, a dibs serve logging JSON on its standard error,
// and waits (two minutes at most: a node opens its record and rebuilds its
// gate first, on a machine that may be busy) until it logs that it
// listens. It returns the node's base URL, its log up to then, and stop,
// which sends SIGTERM once and returns how the process ended; the test's
// cleanup calls it too.
func serveNode(t *testing.T, cmd *exec.Cmd) (base string, log *bytes.Buffer, stop func() error) {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // never block the node on its log
			}
		}
		close(lines)
		done <- cmd.Wait()
	}()
	stop = sync.OnceValue(func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		return <-done
	})
	t.Cleanup(func() { stop() })
	log = new(bytes.Buffer)
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("dibs exited before listening:\n%s", log.String())
			}
			log.WriteString(line + "\n")
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				return "http://" + rec.Addr, log, stop
			}
		case <-timeout:
			t.Fatalf("dibs did not listen:\n%s", log.String())
		}
	}
}

// startPgsim runs the built dibs pgsim on a free port and returns its base
// URL. It stops with the test.
func startPgsim(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(dibsBinary(t), "pgsim", "--addr", "127.0.0.1:0", "--seed", "1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "pgsim listening on "); ok {
				addr <- u
			}
		}
	}()
	select {
	case u := <-addr:
		return u
	case <-time.After(time.Minute):
		t.Fatal("dibs pgsim did not listen")
		return ""
	}
}

// exposition is a scraped /metrics: each family's type, and each sample
// name that has at least one series.
type exposition struct {
	text    []byte
	types   map[string]string // family → counter, gauge, histogram, summary, untyped
	samples map[string]bool
}

func scrape(t *testing.T, base string) exposition {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	e := exposition{text: text, types: map[string]string{}, samples: map[string]bool{}}
	for line := range strings.Lines(string(text)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[0] == "#" && f[1] == "TYPE":
			e.types[f[2]] = f[3]
		case len(f) >= 2 && f[0] != "#":
			e.samples[metricName.FindString(f[0])] = true
		}
	}
	return e
}

// family returns the family a sample name belongs to: a histogram's or a
// summary's _bucket, _sum and _count series are named after it.
func (e exposition) family(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if t := e.types[base]; ok && (t == "histogram" || t == "summary") {
			return base
		}
	}
	return name
}

// missing says what is wrong with a metric name a query uses, or "".
func (e exposition) missing(name string) string {
	fam := e.family(name)
	switch {
	case e.types[fam] == "":
		return "the node does not export it"
	case e.types[fam] == "histogram" && fam == name:
		return "a histogram: query its _bucket, _sum or _count"
	case !e.samples[name]:
		return "exported without a series: the test makes none"
	}
	return ""
}

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)

// promqlWords are the identifiers of PromQL that are not metric names:
// aggregations, keywords, modifiers. Functions are recognised by the
// parenthesis that follows them.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "start": true, "end": true,
}

// labelLists are the words followed by a parenthesised list of label
// names, which are not metric names either.
var labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// metricNames returns the metric names a PromQL expression selects. It
// skips strings, label matchers ({…}), ranges and subqueries ([…]),
// numbers, Grafana variables ($name, ${name}), label lists after by,
// without, on, ignoring and group_*, and every identifier followed by a
// parenthesis (a function call).
func metricNames(expr string) ([]string, error) {
	var names []string
	skipTo := func(i int, closer byte) (int, error) {
		for j := i + 1; j < len(expr); j++ {
			switch expr[j] {
			case '"', '\'', '`':
				end := strings.IndexByte(expr[j+1:], expr[j])
				if end < 0 {
					return 0, fmt.Errorf("unterminated string at %d", j)
				}
				j += end + 1
			case closer:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("no %q after %d", closer, i)
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end := strings.IndexByte(expr[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			i += end + 2
		case c == '{' || c == '[':
			j, err := skipTo(i, map[byte]byte{'{': '}', '[': ']'}[c])
			if err != nil {
				return nil, err
			}
			i = j
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				j, err := skipTo(i, '}')
				if err != nil {
					return nil, err
				}
				i = j
				continue
			}
			i += len(metricName.FindString(expr[i:]))
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isWordByte(expr[i]) || expr[i] == '.') {
				i++ // 0.99, 1e3, 0x1f
			}
		case isWordByte(c):
			word := metricName.FindString(expr[i:])
			i += len(word)
			next := nextNonSpace(i)
			switch {
			case labelLists[word] && next < len(expr) && expr[next] == '(':
				j, err := skipTo(next, ')')
				if err != nil {
					return nil, err
				}
				i = j
			case promqlWords[word]:
			case next < len(expr) && expr[next] == '(':
				// a function call
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	return names, nil
}

func isWordByte(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, class) (rate(a_bucket{job=~"$job",x="y{z}"}[$__rate_interval])))`: {"a_bucket"},
		`sum(rate(a_sum[5m])) / sum(rate(a_count[5m]))`:                                                         {"a_sum", "a_count"},
		`max by (instance) (go_gc_duration_seconds{quantile="1"})`:                                              {"go_gc_duration_seconds"},
		`a and on (drop) b unless ignoring(x) c * on(y) group_left(z) d`:                                        {"a", "b", "c", "d"},
		`label_replace(up, "dst", "$1", "src", "(.*)") offset 5m > bool 0`:                                      {"up"},
		`topk(3, sum without (pod) (x)) or vector(0) > 1e3`:                                                     {"x"},
		`max_over_time(foo:rate5m[1h:${__interval}])`:                                                           {"foo:rate5m"},
	} {
		got, err := metricNames(expr)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %q, %v; want %q", expr, got, err, want)
		}
	}
	for _, bad := range []string{`a{x="y}`, `rate(a[5m)`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("metricNames(%s) took an unterminated expression", bad)
		}
	}
}

// dashboardQuery is a PromQL query of a dashboard, and where it is.
type dashboardQuery struct{ where, expr string }

// labelValues is Grafana's variable query label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_]\w*\)$`)

// dashboardQueries reads every PromQL query of deploy/grafana/*.json:
// panel targets (in rows too) and query variables.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	files, _ := filepath.Glob("grafana/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboard in deploy/grafana")
	}
	var out []dashboardQuery
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			SchemaVersion int `json:"schemaVersion"`
			Inputs        []struct {
				Name, PluginID string
			} `json:"__inputs"`
			Templating struct {
				List []struct {
					Name, Type string
					Query      json.RawMessage
				}
			}
			Panels []dashboardPanel
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.SchemaVersion < 36 {
			t.Errorf("%s: schemaVersion %d, want 36 or later", f, d.SchemaVersion)
		}
		if !slices.ContainsFunc(d.Inputs, func(in struct{ Name, PluginID string }) bool {
			return in.Name == "DS_PROMETHEUS" && in.PluginID == "prometheus"
		}) {
			t.Errorf("%s: no DS_PROMETHEUS input", f)
		}
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
			if v.Type != "query" {
				continue
			}
			var q struct{ Query string }
			if json.Unmarshal(v.Query, &q) != nil {
				json.Unmarshal(v.Query, &q.Query) // an older dashboard's plain string
			}
			m := labelValues.FindStringSubmatch(q.Query)
			if m == nil {
				t.Errorf("%s: variable %s: %q is not label_values(selector, label)", f, v.Name, q.Query)
				continue
			}
			out = append(out, dashboardQuery{f + ": variable " + v.Name, m[1]})
		}
		for _, want := range []string{"job", "instance"} {
			if !vars[want] {
				t.Errorf("%s: no %s variable", f, want)
			}
		}
		var walk func([]dashboardPanel)
		walk = func(panels []dashboardPanel) {
			for _, p := range panels {
				walk(p.Panels)
				if p.Type != "row" && len(p.Targets) == 0 {
					t.Errorf("%s: panel %q has no query", f, p.Title)
				}
				for _, tg := range p.Targets {
					if tg.Datasource.UID != "${DS_PROMETHEUS}" && p.Datasource.UID != "${DS_PROMETHEUS}" {
						t.Errorf("%s: panel %q does not query ${DS_PROMETHEUS}", f, p.Title)
					}
					out = append(out, dashboardQuery{fmt.Sprintf("%s: panel %q %s", f, p.Title, tg.RefID), tg.Expr})
				}
			}
		}
		walk(d.Panels)
	}
	return out
}

type dashboardPanel struct {
	Type, Title string
	Datasource  struct{ UID string }
	Targets     []struct {
		RefID      string `json:"refId"`
		Expr       string
		Datasource struct{ UID string }
	}
	Panels []dashboardPanel
}

// Every metric the dashboards query is one a node exports, with series:
// a renamed or misspelt metric would leave a panel empty without a word.
// A node with a payment gateway (the simulator) serves a coupon drop (won,
// existing and sold-out claims), a free purchase drop (a claim paid, so
// that charge and webhook jobs run), a priced purchase drop (a claim paid,
// so that a charge reaches the gateway) and a queued drop (someone
// waiting), then its /metrics is read.
func TestDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	queries := dashboardQueries(t)
	base := startNode(t, "--payment-gateway", startPgsim(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.New(client.Config{BaseURL: base, AdminToken: nodeAdmin, PassportSecret: []byte(nodeSecret)})
	if err != nil {
		t.Fatal(err)
	}
	pass := func(user string) string {
		p, err := c.IssuePassport(user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, d := range []client.NewDrop{
		{ID: "coupons", Title: "coupons", Kind: "coupon", Stock: 2},
		{ID: "free", Title: "free", Kind: "purchase", Stock: 5},
		{ID: "priced", Title: "priced", Kind: "purchase", Stock: 5, Price: 1500, Currency: "EUR"},
		{ID: "queued", Title: "queued", Kind: "coupon", Stock: 5, Admission: &client.Admission{Mode: "queue", Rate: 1}},
	} {
		if _, err := c.CreateDrop(ctx, d); err != nil {
			t.Fatalf("create drop %s: %v", d.ID, err)
		}
	}
	for _, user := range []string{"ann", "bob", "ann", "cat"} {
		_, err := c.Claim(ctx, pass(user), "coupons", client.ClaimOptions{})
		if err != nil && !client.IsSoldOut(err) {
			t.Fatalf("claim for %s: %v", user, err)
		}
	}
	cl, err := c.Claim(ctx, pass("dan"), "free", client.ClaimOptions{})
	if err != nil {
		t.Fatalf("claim the free drop: %v", err)
	}
	if _, err := c.Pay(ctx, pass("dan"), cl.ID); err != nil {
		t.Fatalf("pay the free claim: %v", err)
	}
	cl, err = c.Claim(ctx, pass("dan"), "priced", client.ClaimOptions{})
	if err != nil {
		t.Fatalf("claim the priced drop: %v", err)
	}
	if _, err := c.Pay(ctx, pass("dan"), cl.ID); err != nil {
		t.Fatalf("pay the priced claim: %v", err)
	}
	for _, user := range []string{"eve", "fay"} {
		if _, err := c.JoinQueue(ctx, pass(user), "queued"); err != nil {
			t.Fatalf("join the queue: %v", err)
		}
	}

	// Jobs run and rooms report in the background: read /metrics until
	// every metric has a series, or until testenv.WaitTimeout.
	var e exposition
	var wrong []string
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		e = scrape(t, base)
		wrong = wrong[:0]
		for _, q := range queries {
			names, err := metricNames(q.expr)
			if err != nil {
				t.Fatalf("%s: %s: %v", q.where, q.expr, err)
			}
			if len(names) == 0 {
				t.Fatalf("%s: %s selects no metric", q.where, q.expr)
			}
			for _, n := range names {
				if why := e.missing(n); why != "" {
					wrong = append(wrong, fmt.Sprintf("%s: %s: %s", q.where, n, why))
				}
			}
		}
		if len(wrong) == 0 || time.Since(start) > testenv.WaitTimeout {
			break
		}
	}
	for _, w := range wrong {
		t.Error(w)
	}
	promtoolCheck(t, e.text, queries)
}

// promtoolCheck lints the node's metrics with promtool check metrics, and
// parses every query with promtool check rules. promtool is the
// Prometheus package's: without it the test skips, or fails under CI.
func promtoolCheck(t *testing.T, metrics []byte, queries []dashboardQuery) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if testenv.CI() {
			t.Fatalf("promtool is required under CI (apt-get install -y prometheus): %v", err)
		}
		t.Skip("promtool not installed (apt-get install -y prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(metrics)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// Grafana's variables are not PromQL: give them values of the right kind.
	vars := strings.NewReplacer("$__rate_interval", "1m", "${__rate_interval}", "1m", "$__interval", "1m", "$__range", "1h")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	for i, q := range queries {
		expr := regexp.MustCompile(`\$\{?\w+\}?`).ReplaceAllString(vars.Replace(q.expr), "x")
		b, _ := json.Marshal(expr) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, b)
	}
	file := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules (the dashboards' queries): %v\n%s", err, out)
	}
}
