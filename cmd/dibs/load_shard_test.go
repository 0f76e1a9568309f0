package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// shardFile is the part of a shard's result these tests read.
type shardFile struct {
	Report struct {
		Latency struct {
			Count int64 `json:"count"`
		} `json:"latency"`
	} `json:"report"`
}

// mergedReport is the part of a merged report these tests read.
type mergedReport struct {
	Totals struct {
		Wins int64 `json:"wins"`
	} `json:"totals"`
	Latency struct {
		Count int64 `json:"count"`
	} `json:"latency"`
	Audit struct {
		OK bool `json:"ok"`
	} `json:"audit"`
}

// loadCommand is `dibs load args...` with the secrets and without a
// progress line.
func loadCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, append([]string{"load"}, args...)...)
	cmd.Env = append(os.Environ(), "CI=true", "DIBS_PASSPORT_SECRET="+e2eSecret, "DIBS_ADMIN_TOKEN="+e2eAdmin)
	return cmd
}

// runShardProcesses runs n `dibs load --shard i/n` processes against
// targets at once, all starting at the same instant, and returns their
// result files.
func runShardProcesses(t *testing.T, targets []string, drop string, users, n int) []string {
	t.Helper()
	dir := t.TempDir()
	// Far enough ahead for every process to start and sign its passports
	// on a starved machine; a shard that starts late still runs its users.
	start := time.Now().Add(5 * time.Second).UTC().Format(time.RFC3339Nano)
	files := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		files[i] = filepath.Join(dir, fmt.Sprintf("shard-%d.json", i))
		wg.Go(func() {
			out, err := loadCommand("--target", strings.Join(targets, ","), "--drop", drop,
				"--users", fmt.Sprint(users), "--profile", "constant", "--rate", fmt.Sprint(users),
				"--seed", "7", "--shard", fmt.Sprintf("%d/%d", i, n), "--start-at", start,
				"--report", files[i]).CombinedOutput()
			if err != nil {
				t.Errorf("shard %d/%d: %v\n%s", i, n, err, out)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return files
}

// mergeShards runs `dibs load merge` and checks the merged report: audit
// PASS, exactly stock winners, every shard's claims counted once.
func mergeShards(t *testing.T, files []string, stock int64) {
	t.Helper()
	merged := filepath.Join(t.TempDir(), "merged.json")
	out, err := loadCommand(append([]string{"merge", "--report", merged}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("merge: %v\n%s", err, out)
	}
	var sum int64
	for _, f := range files {
		var s shardFile
		readJSON(t, f, &s)
		sum += s.Report.Latency.Count
	}
	var rep mergedReport
	readJSON(t, merged, &rep)
	if !rep.Audit.OK || rep.Totals.Wins != stock {
		t.Errorf("merged: audit ok %t, %d winners; want PASS and exactly %d\n%s", rep.Audit.OK, rep.Totals.Wins, stock, out)
	}
	if rep.Latency.Count != sum || sum == 0 {
		t.Errorf("merged histogram counts %d claims, want the shards' %d", rep.Latency.Count, sum)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Three shard processes against three nodes on Redis and PostgreSQL,
// merged: one audit over every user passes with exactly the stock won. A
// merge missing a shard, or with one cut short, exits non-zero and names it.
func TestLoadShardsOnThreeNodes(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, cluster(t))
	createDrop(t, nodes[0].url, `{"id":"sharded","title":"sharded","kind":"coupon","stock":300}`)
	files := runShardProcesses(t, urls(nodes), "sharded", 1500, 3)
	mergeShards(t, files, 300)

	cut := filepath.Join(t.TempDir(), "cut.json")
	b, err := os.ReadFile(files[2])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cut, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		files []string
		want  string
	}{
		"missing":   {files[:2], "missing shard 2/3"},
		"truncated": {[]string{files[0], files[1], cut}, cut},
	} {
		out, err := loadCommand(append([]string{"merge"}, tt.files...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tt.want) {
			t.Errorf("%s: merge err = %v, output %q; want a failure naming %q", name, err, out, tt.want)
		}
	}
}

// Two shards against one node merge as one run would.
func TestLoadTwoShardsOneNode(t *testing.T) {
	t.Parallel()
	n := startNode(t, t.TempDir())
	createDrop(t, n.url, `{"id":"halves","title":"halves","kind":"coupon","stock":200}`)
	files := runShardProcesses(t, []string{n.url}, "halves", 800, 2)
	mergeShards(t, files, 200)
}

// dibs load sends its regular traffic from a child process of its own
// (dibs load --role regular) and folds what it measured into its report.
func TestLoadRegularTrafficFromItsOwnProcess(t *testing.T) {
	t.Parallel()
	n := startNode(t, t.TempDir())
	createDrop(t, n.url, `{"id":"steady","title":"steady","kind":"coupon","stock":50}`)
	report := filepath.Join(t.TempDir(), "report.json")
	out, err := loadCommand("--target", n.url, "--drop", "steady", "--users", "300", "--seconds", "1",
		"--regular-rate", "50", "--seed", "3", "--report", report).CombinedOutput()
	if err != nil {
		t.Fatalf("dibs load: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "regular traffic process") {
		t.Errorf("the regular traffic's process failed:\n%s", out)
	}
	var rep struct {
		Regular *struct {
			Requests int64 `json:"requests"`
			Baseline struct {
				Count int64 `json:"count"`
			} `json:"baseline"` // from the steps folded in
		} `json:"regular"`
		Audit struct {
			OK bool `json:"ok"`
		} `json:"audit"`
	}
	readJSON(t, report, &rep)
	// 50/s over at least the 1s lead, the 1s spike and the 1s tail.
	if rep.Regular == nil || rep.Regular.Requests < 100 || rep.Regular.Baseline.Count == 0 || !rep.Audit.OK {
		t.Errorf("regular %+v, audit ok %t; want at least 100 regular requests and PASS\n%s", rep.Regular, rep.Audit.OK, out)
	}
}
