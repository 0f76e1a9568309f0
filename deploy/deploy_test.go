// Package deploy_test checks the deployment files against the code they
// deploy: the settings they pass are flags `dibs serve` has, the probes
// and ports are the ones it serves, and the static binary the Dockerfile
// builds runs in an empty root.
package deploy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
	buildDir  string
)

// dibsBinary builds cmd/dibs as the Dockerfile does: static, no cgo.
func dibsBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "dibs-deploy-test")
		if buildErr != nil {
			return
		}
		binary = filepath.Join(buildDir, "dibs")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binary, "./cmd/dibs")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err, out}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return "build dibs: " + e.err.Error() + "\n" + string(e.out) }

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// settings returns every DIBS_* name `dibs serve` reads: its flags' names
// from its own -h, and the secrets it reads from the environment only,
// from cmd/dibs's source.
func settings(t *testing.T) map[string]bool {
	t.Helper()
	cmd := exec.Command(dibsBinary(t), "serve", "-h")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run() // -h exits 2
	names := map[string]bool{}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, m := range flagLine.FindAllStringSubmatch(out.String(), -1) {
		names["DIBS_"+strings.ToUpper(strings.ReplaceAll(m[1], "-", "_"))] = true
	}
	if !names["DIBS_ADDR"] || !names["DIBS_REDIS"] || len(names) < 20 {
		t.Fatalf("read %d flags from dibs serve -h: %s", len(names), out.String())
	}
	sources, _ := filepath.Glob("../cmd/dibs/*.go")
	getenv := regexp.MustCompile(`os\.Getenv\("(DIBS_[A-Z_]+)"\)`)
	secrets := 0
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range getenv.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
			secrets++
		}
	}
	for _, s := range []string{"DIBS_PASSPORT_SECRET", "DIBS_ADMIN_TOKEN", "DIBS_WEBHOOK_SECRET"} {
		if !names[s] {
			t.Fatalf("cmd/dibs does not read %s from the environment", s)
		}
	}
	return names
}

var dibsName = regexp.MustCompile(`\bDIBS_[A-Z0-9_]+\b`)

// Every DIBS_* name in the deployment files is a setting dibs reads: a
// misspelt one would be ignored without a word.
func TestSettingsExist(t *testing.T) {
	known := settings(t)
	files := []string{"Dockerfile", "compose.yaml"}
	k8s, _ := filepath.Glob("k8s/*.yaml")
	files = append(files, k8s...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range dibsName.FindAllString(string(b), -1) {
			if !known[name] {
				t.Errorf("%s: %s is not a setting of dibs serve", f, name)
			}
		}
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	stages := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(text, -1)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a run stage", len(stages))
	}
	final := stages[len(stages)-1][1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("the run stage is %s, want distroless static or scratch (no shell)", final)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/dibs", "ENTRYPOINT"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	if regexp.MustCompile(`(?m)^HEALTHCHECK`).MatchString(text) {
		t.Error("Dockerfile has a HEALTHCHECK; the orchestrator probes /healthz and /readyz")
	}
	user := regexp.MustCompile(`(?m)^USER (\S+)`).FindAllStringSubmatch(text, -1)
	if len(user) == 0 || strings.HasPrefix(user[len(user)-1][1], "0") || strings.HasPrefix(user[len(user)-1][1], "root") {
		t.Errorf("USER %v, want a non-root user", user)
	}
}

// compose is the part of compose.yaml the test reads.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Environment map[string]string `yaml:"environment"`
		Command     []string          `yaml:"command"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		StopGrace   string            `yaml:"stop_grace_period"`
		Healthcheck map[string]any    `yaml:"healthcheck"`
	} `yaml:"services"`
}

func readCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// The compose file runs three nodes on Redis and PostgreSQL, HAProxy
// routes claims to a pool apart, Prometheus scrapes every node.
func TestCompose(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	var nodes []string
	for name, s := range c.Services {
		if strings.HasPrefix(name, "dibs-") {
			nodes = append(nodes, name)
			env := s.Environment
			if !strings.HasSuffix(env["DIBS_ADDR"], ":8080") || env["DIBS_REDIS"] == "" || env["DIBS_POSTGRES"] == "" {
				t.Errorf("%s: addr %q, redis %q, postgres %q", name, env["DIBS_ADDR"], env["DIBS_REDIS"], env["DIBS_POSTGRES"])
			}
			if !strings.Contains(env["DIBS_REDIS"], "redis:") || !strings.Contains(env["DIBS_POSTGRES"], "@postgres:") {
				t.Errorf("%s does not use the compose Redis and PostgreSQL", name)
			}
			if grace, err := time.ParseDuration(s.StopGrace); err != nil || grace <= mustDuration(t, env["DIBS_SHUTDOWN_TIMEOUT"]) {
				t.Errorf("%s: stop_grace_period %q must exceed DIBS_SHUTDOWN_TIMEOUT %q", name, s.StopGrace, env["DIBS_SHUTDOWN_TIMEOUT"])
			}
		}
	}
	slices.Sort(nodes)
	if len(nodes) != 3 {
		t.Fatalf("dibs nodes %v, want 3", nodes)
	}
	for _, svc := range []string{"redis", "postgres", "lb", "prometheus"} {
		if _, ok := c.Services[svc]; !ok {
			t.Errorf("no %s service", svc)
		}
	}
	if !slices.Contains(c.Services["redis"].Command, "noeviction") {
		t.Error("Redis must not evict (docs/operations.md)")
	}

	// HAProxy: every node is a server; claims have a backend of their own.
	cfg, err := os.ReadFile("haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	backends := map[string][]string{} // backend → its servers, backups apart
	var current string
	for line := range strings.Lines(string(cfg)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && (f[0] == "backend" || f[0] == "frontend"):
			current = f[0] + " " + f[1]
		case len(f) >= 3 && f[0] == "server" && !slices.Contains(f, "backup"):
			backends[current] = append(backends[current], strings.TrimSuffix(f[2], ":8080"))
		}
	}
	claims, main := backends["backend claims"], backends["backend main"]
	if len(claims) == 0 || len(main) == 0 {
		t.Fatalf("haproxy backends %v, want claims and main", backends)
	}
	for _, s := range append(slices.Clone(claims), main...) {
		if !slices.Contains(nodes, s) {
			t.Errorf("haproxy server %s is not a compose node", s)
		}
		if slices.Contains(claims, s) && slices.Contains(main, s) {
			t.Errorf("%s serves both pools", s)
		}
	}
	reg := regexp.MustCompile(`path_reg (\S+)`).FindStringSubmatch(string(cfg))
	if reg == nil {
		t.Fatal("haproxy.cfg has no claim path")
	}
	claimPath := regexp.MustCompile(reg[1])
	for path, want := range map[string]bool{
		"/v1/drops/pepero-day/claims": true, "/v1/drops/a/claims": true,
		"/v1/drops/pepero-day": false, "/v1/drops/x/claims/1": false, "/v1/claims/abc/pay": false, "/v1/drops/x/queue": false,
	} {
		if claimPath.MatchString(path) != want {
			t.Errorf("claim route matches %s: %v, want %v", path, !want, want)
		}
	}
	if !strings.Contains(string(cfg), "/readyz") {
		t.Error("haproxy does not check /readyz")
	}

	// Prometheus scrapes every node.
	var prom struct {
		ScrapeConfigs []struct {
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("metrics_path %q", sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	for _, n := range nodes {
		if !slices.Contains(targets, n+":8080") {
			t.Errorf("prometheus does not scrape %s", n)
		}
	}
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

// manifests reads every document of deploy/k8s by kind.
func manifests(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, _ := filepath.Glob("k8s/*.yaml")
	out := map[string]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kind, _ := doc["kind"].(string)
			if doc["apiVersion"] == nil || kind == "" {
				t.Fatalf("%s: a document without apiVersion and kind", f)
			}
			out[kind] = doc
		}
	}
	return out
}

// get walks m by keys (strings for maps, ints for lists).
func get(m any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			mm, _ := m.(map[string]any)
			m = mm[k]
		case int:
			l, _ := m.([]any)
			if k >= len(l) {
				return nil
			}
			m = l[k]
		}
	}
	return m
}

func TestKubernetes(t *testing.T) {
	t.Parallel()
	k := manifests(t)
	for _, kind := range []string{"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"} {
		if k[kind] == nil {
			t.Fatalf("no %s in deploy/k8s", kind)
		}
	}
	dep, cm, sec := k["Deployment"], k["ConfigMap"], k["Secret"]
	pod := get(dep, "spec", "template", "spec")
	ctr := get(pod, "containers", 0)

	// The container port is the one DIBS_ADDR listens on; probes use it.
	addr, _ := get(cm, "data", "DIBS_ADDR").(string)
	port := get(ctr, "ports", 0, "containerPort")
	if !strings.HasSuffix(addr, ":8080") || port != 8080 || get(ctr, "ports", 0, "name") != "http" {
		t.Errorf("DIBS_ADDR %q, containerPort %v", addr, port)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := get(ctr, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %v, want %s", probe, got, path)
		}
		if got := get(ctr, probe, "httpGet", "port"); got != "http" && got != 8080 {
			t.Errorf("%s port %v", probe, got)
		}
	}

	// Stopping: the preStop pause and the node's shutdown fit in the grace period.
	pause, _ := get(ctr, "lifecycle", "preStop", "sleep", "seconds").(int)
	grace, _ := get(pod, "terminationGracePeriodSeconds").(int)
	shutdown := mustDuration(t, get(cm, "data", "DIBS_SHUTDOWN_TIMEOUT").(string))
	if pause < 1 || time.Duration(grace)*time.Second <= time.Duration(pause)*time.Second+shutdown {
		t.Errorf("preStop %ds + shutdown %v must fit in terminationGracePeriodSeconds %d", pause, shutdown, grace)
	}

	// Secrets in the Secret, nothing secret in the ConfigMap, both loaded.
	for _, s := range []string{"DIBS_PASSPORT_SECRET", "DIBS_ADMIN_TOKEN", "DIBS_WEBHOOK_SECRET"} {
		if get(sec, "stringData", s) == nil && get(sec, "data", s) == nil {
			t.Errorf("the Secret has no %s", s)
		}
		if get(cm, "data", s) != nil {
			t.Errorf("%s is in the ConfigMap", s)
		}
	}
	refs := map[any]bool{}
	for _, ref := range get(ctr, "envFrom").([]any) {
		refs[get(ref, "configMapRef", "name")] = true
		refs[get(ref, "secretRef", "name")] = true
	}
	if !refs[get(cm, "metadata", "name")] || !refs[get(sec, "metadata", "name")] {
		t.Errorf("envFrom %v does not load the ConfigMap and the Secret", get(ctr, "envFrom"))
	}

	// The Service and the budget select the Deployment's pods.
	labels, _ := get(dep, "spec", "template", "metadata", "labels").(map[string]any)
	for _, sel := range []any{get(k["Service"], "spec", "selector"), get(k["PodDisruptionBudget"], "spec", "selector", "matchLabels")} {
		m, _ := sel.(map[string]any)
		if len(m) == 0 {
			t.Errorf("empty selector")
		}
		for key, v := range m {
			if labels[key] != v {
				t.Errorf("selector %v does not select the pods %v", m, labels)
			}
		}
	}
	if get(k["Service"], "spec", "ports", 0, "targetPort") != "http" {
		t.Error("the Service does not target the http port")
	}
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("pods may run as root")
	}
}

// The static binary starts and serves in a root holding nothing but itself:
// no shell, no libc, no CA or zone files, as in the distroless image.
func TestStaticBinaryInEmptyRoot(t *testing.T) {
	bin := dibsBinary(t)
	root := t.TempDir()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dibs"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	var chroot []string
	switch {
	case os.Geteuid() == 0:
		chroot = []string{"chroot", root}
	case exec.Command("unshare", "-r", "true").Run() == nil:
		chroot = []string{"unshare", "-r", "chroot", root}
	default:
		t.Skip("chroot needs root or user namespaces")
	}
	if _, err := exec.LookPath(chroot[0]); err != nil {
		t.Skipf("no %s here", chroot[0])
	}
	args := append(chroot, "/dibs", "serve", "--addr", "127.0.0.1:0", "--data", "/data", "--log-format", "json")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{
		"DIBS_PASSPORT_SECRET=deploy-test-secret-0123456789abcdef",
		"DIBS_ADMIN_TOKEN=deploy-test-admin-token",
	}
	base, log, stop := serveNode(t, cmd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "data", "dibs.db")); err != nil {
		t.Errorf("the record is not in the data directory: %v", err)
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != "dibs" && e.Name() != "data" {
			t.Errorf("dibs wrote %s outside its data directory", e.Name())
		}
	}
	if err := stop(); err != nil {
		t.Errorf("dibs after SIGTERM: %v\n%s", err, log.String())
	}
}
