package loadgen_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

// setupNodes is setup with a fake deployment of n nodes, every one of them
// a target.
func setupNodes(t *testing.T, n int, stock int64) (*loadgentest.Server, loadgen.Config) {
	t.Helper()
	srv, cfg := setup(t, loadgentest.Options{}, "coupon", stock, 0)
	cfg.Target = ""
	cfg.Targets = []string{srv.URL}
	for range n - 1 {
		cfg.Targets = append(cfg.Targets, srv.AddNode(t).URL)
	}
	cfg.Users = 600
	cfg.Profile = loadgen.Profile{Shape: loadgen.Spike, Duration: 300 * time.Millisecond}
	cfg.RetryFraction = 0.5
	return srv, cfg
}

// claimsByUser lists the nodes each user's claims went to, in order, by the
// user's index.
func claimsByUser(t *testing.T, srv *loadgentest.Server, cfg loadgen.Config) map[int][]int {
	t.Helper()
	prefix := fmt.Sprintf("load-%d-", cfg.Seed) // the default UserPrefix
	out := map[int][]int{}
	for _, r := range srv.Requests() {
		if r.Method != "POST" || !strings.HasSuffix(r.Path, "/claims") {
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(r.User, prefix))
		if err != nil {
			t.Fatalf("claim by %q, not one of the run's users", r.User)
		}
		out[i] = append(out[i], r.Node)
	}
	return out
}

// adminNodes counts the admin requests each node took.
func adminNodes(srv *loadgentest.Server) map[int]int {
	out := map[int]int{}
	for _, r := range srv.Requests() {
		if strings.HasPrefix(r.Path, "/v1/admin/") {
			out[r.Node]++
		}
	}
	return out
}

// With several targets, user i starts on node i mod n and each of its
// requests goes to the next node, as behind a round-robin load balancer
// without affinity: a second claim always reaches another node than the
// first. The audit reads from the first node only.
func TestRunSpreadsUsersOverTargets(t *testing.T) {
	t.Parallel()
	srv, cfg := setupNodes(t, 3, 100)
	rep := MustRun(t, cfg)
	if !rep.Audit.OK {
		t.Fatalf("audit failed:\n%s", summary(rep))
	}
	byUser := claimsByUser(t, srv, cfg)
	if len(byUser) != cfg.Users {
		t.Fatalf("%d users claimed, want %d", len(byUser), cfg.Users)
	}
	perNode, twice := [3]int{}, 0
	for i, nodes := range byUser {
		if nodes[0] != i%3 {
			t.Fatalf("user %d's first claim went to node %d, want %d", i, nodes[0], i%3)
		}
		if len(nodes) == 2 {
			twice++
			if nodes[1] != (i+1)%3 {
				t.Fatalf("user %d's second claim went to node %d, want the next node, %d", i, nodes[1], (i+1)%3)
			}
		}
		for _, n := range nodes {
			perNode[n]++
		}
	}
	if want := cfg.Users / 2; twice != want || rep.Totals.Claims != int64(cfg.Users+want) {
		t.Errorf("%d users claimed twice, %d claims; want exactly %d and %d", twice, rep.Totals.Claims, want, cfg.Users+want)
	}
	for n, c := range perNode {
		if c < 250 || c > 350 {
			t.Errorf("node %d took %d of the 900 claims, want about a third: %v", n, c, perNode)
		}
	}
	if got := adminNodes(srv); got[1]+got[2] != 0 || got[0] == 0 {
		t.Errorf("admin requests by node = %v, want all on node 0", got)
	}
	if len(rep.Nodes) != 3 || rep.Nodes[1].Requests == 0 || len(rep.Config.Targets) != 3 || rep.Config.Target != cfg.Targets[0] {
		t.Errorf("report nodes %+v, config targets %v / %s; want the three targets, the first as target", rep.Nodes, rep.Config.Targets, rep.Config.Target)
	}
	if s := summary(rep); !strings.Contains(s, "nodes:") {
		t.Errorf("summary lacks the nodes:\n%s", s)
	}
}

// Sticky keeps each user on one node, as a load balancer with affinity does.
func TestRunStickyTargets(t *testing.T) {
	t.Parallel()
	srv, cfg := setupNodes(t, 3, 100)
	cfg.Sticky = true
	rep := MustRun(t, cfg)
	if !rep.Audit.OK {
		t.Fatalf("audit failed:\n%s", summary(rep))
	}
	for i, nodes := range claimsByUser(t, srv, cfg) {
		for _, n := range nodes {
			if n != i%3 {
				t.Fatalf("user %d claimed on nodes %v, want all on %d", i, nodes, i%3)
			}
		}
	}
}

// A node that is down before the run, the first included, refuses its
// connections: its users' requests go to the next node, the audit reads
// from the next node, and the run passes.
func TestRunTargetDown(t *testing.T) {
	t.Parallel()
	_, cfg := setupNodes(t, 3, 100)
	cfg.Targets = append([]string{"http://" + deadAddr(t)}, cfg.Targets[1:]...)
	rep := MustRun(t, cfg)
	if !rep.Audit.OK {
		t.Fatalf("audit failed with the first node down:\n%s", summary(rep))
	}
	if n := rep.Nodes[0]; n.Requests != 0 || n.Refused == 0 {
		t.Errorf("the node that is down: %+v, want every request refused and sent on", n)
	}
	if rep.Totals.NoAnswer != 0 || rep.Totals.Wins != 100 {
		t.Errorf("no answer %d, wins %d: want every claim answered by another node, 100 wins", rep.Totals.NoAnswer, rep.Totals.Wins)
	}
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A node that goes down in the middle of the run: a request on one of its
// connections at that moment goes unanswered (it may have been taken), the
// ones after it go to the next node, and the audit still passes (the fake
// loses nothing).
func TestRunTargetDiesMidRun(t *testing.T) {
	t.Parallel()
	srv, cfg := setupNodes(t, 3, 200)
	cfg.Users = 1000
	cfg.Profile = loadgen.Profile{Shape: loadgen.Constant, Rate: 1000}
	// Four connections a node: each of the dying node's can fail a request,
	// as can one it accepted as it died, and no more; the requests after
	// must find it refusing and move on.
	cfg.MaxConns = 16
	victim := srv.AddNode(t) // a fourth node, the one to die
	cfg.Targets = append(cfg.Targets, victim.URL)
	go func() {
		for len(srv.ClaimTimes()) < 200 {
			time.Sleep(5 * time.Millisecond)
		}
		victim.CloseClientConnections()
		victim.Close()
	}()
	rep := MustRun(t, cfg)
	if !rep.Audit.OK {
		t.Fatalf("audit failed:\n%s", summary(rep))
	}
	if n := rep.Nodes[3]; n.Requests == 0 || n.Refused == 0 {
		t.Errorf("the node that died: %+v, want requests before and refusals after", n)
	}
	if rep.Totals.NoAnswer > 8 {
		t.Errorf("%d claims unanswered, want at most a few, one per connection the dying node had (4 open, 4 opening)", rep.Totals.NoAnswer)
	}
	t.Logf("no answer: %d; node that died: %+v", rep.Totals.NoAnswer, rep.Nodes[3])
}
