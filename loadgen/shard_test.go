package loadgen_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

// runShards runs every shard of cfg at once, starting together, and returns
// their results.
func runShards(t *testing.T, cfg loadgen.Config, n int) ([]loadgen.NamedShard, []*loadgen.Report) {
	t.Helper()
	// The shards start together a moment from now: long enough for each to
	// sign its passports and read the drop on a starved machine.
	cfg.StartAt = time.Now().Add(3 * time.Second)
	files := make([]loadgen.NamedShard, n)
	reps := make([]*loadgen.Report, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := cfg
			c.Shard = loadgen.Shard{Index: i, Count: n}
			rep, err := loadgen.Run(context.Background(), c)
			if err != nil {
				t.Errorf("shard %d: %v", i, err)
				return
			}
			var b bytes.Buffer
			if err := rep.WriteShard(&b); err != nil {
				t.Errorf("shard %d: %v", i, err)
			}
			files[i], reps[i] = loadgen.NamedShard{Name: c.Shard.String(), Data: b.Bytes()}, rep
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return files, reps
}

func mergeConfig() loadgen.MergeConfig {
	return loadgen.MergeConfig{PassportSecret: []byte(loadgentest.PassportSecret), AdminToken: loadgentest.AdminToken}
}

// Two shards of one run share its users out and merge into one report whose
// audit passes: exactly the stock won, every claim counted once.
func TestShardsMerge(t *testing.T) {
	t.Parallel()
	_, cfg := setup(t, loadgentest.Options{}, "coupon", 100, 0)
	cfg.Users = 400
	cfg.RetryFraction = 0.2
	cfg.Profile = loadgen.Profile{Shape: loadgen.Constant, Rate: 400}
	files, reps := runShards(t, cfg, 2)

	var claims, arrived int64
	for i, rep := range reps {
		if rep.Totals.Arrived != 200 {
			t.Errorf("shard %d: %d arrivals, want its 200 users", i, rep.Totals.Arrived)
		}
		claims += rep.Latency.Count
		arrived += rep.Totals.Arrived
	}
	rep, err := loadgen.Merge(context.Background(), mergeConfig(), files)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audit.OK {
		t.Fatalf("merged audit failed:\n%s", summary(rep))
	}
	if rep.Totals.Wins != 100 || rep.Totals.Arrived != arrived {
		t.Errorf("merged: %d wins, %d arrivals; want 100 and %d", rep.Totals.Wins, rep.Totals.Arrived, arrived)
	}
	if rep.Latency.Count != claims || rep.Totals.Claims != claims {
		t.Errorf("merged histogram counts %d claims (totals %d), want the shards' %d", rep.Latency.Count, rep.Totals.Claims, claims)
	}
}

// A merge with a shard missing, twice, unfinished or cut short fails and
// names what is wrong.
func TestMergeRefusesPartialRuns(t *testing.T) {
	t.Parallel()
	_, cfg := setup(t, loadgentest.Options{}, "coupon", 10, 0)
	cfg.Users = 60
	cfg.Profile = loadgen.Profile{Shape: loadgen.Constant, Rate: 200}
	files, _ := runShards(t, cfg, 3)
	cut := files[2]
	cut.Data = cut.Data[:len(cut.Data)/2]
	for name, tt := range map[string]struct {
		files []loadgen.NamedShard
		want  string
	}{
		"missing":   {files[:2], "missing shard 2/3"},
		"twice":     {[]loadgen.NamedShard{files[0], files[1], files[1]}, "both shard 1/3"},
		"truncated": {[]loadgen.NamedShard{files[0], files[1], cut}, "2/3 is not a whole shard result"},
	} {
		_, err := loadgen.Merge(context.Background(), mergeConfig(), tt.files)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one saying %q", name, err, tt.want)
		}
	}
}
