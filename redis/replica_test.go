package redis_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/gatetest"
	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
)

// replicaReads makes dibs's own gate the gate of the 2016 incident, only
// to prove the tests below can fail: the gate's reserve decides whether a
// slot is free from a replica, which lags (HGET left there), and the
// primary takes the slot without deciding again (the reserve script with
// its sold-out check cut out). Every other call, and all of the gate's Go
// code, are the real ones.
type replicaReads struct {
	redis.Client // the primary
	replica      redis.Client
	sha, taking  string
}

func newReplicaReads(t *testing.T, primary, replica redis.Client) *replicaReads {
	src, sha := redis.ReserveScript()
	const check = "if tonumber(st[2]) <= 0 then"
	if strings.Count(src, check) != 1 {
		t.Fatalf("the reserve script has no single %q to cut out", check)
	}
	return &replicaReads{Client: primary, replica: replica, sha: sha, taking: strings.Replace(src, check, "if false then", 1)}
}

func (c *replicaReads) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	args := cmd.Commands() // EVALSHA sha numkeys keys... args...
	if len(args) < 3 || args[0] != "EVALSHA" || args[1] != c.sha {
		return c.Client.Do(ctx, cmd)
	}
	n, _ := strconv.Atoi(args[2])
	keys, argv := args[3:3+n], args[3+n:]
	left, err := c.replica.Do(ctx, c.replica.B().Hget().Key(keys[0]).Field("left").Build()).AsInt64()
	if err == nil && left <= 0 {
		return c.replica.Do(ctx, c.replica.B().Eval().Script("#!lua flags=no-writes\nreturn {'sold_out'}").Numkeys(0).Build())
	}
	return c.Client.Do(ctx, c.Client.B().Eval().Script(c.taking).Numkeys(int64(n)).Key(keys...).Arg(argv...).Build())
}

// canaryGate is a started gate that reads from the replica as
// replicaReads does, under its own prefix.
func canaryGate(t *testing.T, primary, replica redis.Client) *redis.Gate {
	g := redis.NewGate(newReplicaReads(t, primary, replica), redis.GateOptions{Prefix: "canary:", Timeout: 10 * time.Second})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	return g
}

// prepareSeen prepares ds on g and waits until the replica holds their
// state, so that what the canary reads there is late, not missing.
func prepareSeen(t *testing.T, g *redis.Gate, replica redis.Client, ds ...*dibs.Drop) {
	for _, d := range ds {
		gatetest.MustPrepare(t, g, d)
	}
	for _, d := range ds {
		testenv.WaitFor(t, "drop state on the replica", func() bool {
			n, err := replica.Do(context.Background(), replica.B().Hget().Key(g.Key(d.ID, "state")).Field("left").Build()).AsInt64()
			return err == nil && n == d.Stock
		})
	}
}

// lagged starts a primary and a replica that runs lag behind it, and
// returns clients of both.
func lagged(t *testing.T, lag time.Duration) (primary, replica redis.Client) {
	p := redisserver.Start(t, "--repl-diskless-sync-delay", "0")
	link := redisserver.StartLag(t, p.Addr(), lag)
	r := redisserver.Start(t, "--replicaof", "127.0.0.1", fmt.Sprint(link.Port()), "--repl-diskless-load", "disabled")
	primary, replica = MustClient(t, p.URL()), MustClient(t, r.URL())
	testenv.WaitFor(t, "replication link up", func() bool {
		info, _ := replica.Do(context.Background(), replica.B().Info().Section("replication").Build()).ToString()
		return strings.Contains(info, "master_link_status:up")
	})
	return primary, replica
}

// spike runs users claims of reserve from 64 goroutines, each user once,
// and returns how many won.
func spike(users int, reserve func(user string) (bool, error)) (int, error) {
	var wins, next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(users); i = next.Add(1) {
				won, err := reserve(fmt.Sprintf("u%d", i))
				if err != nil {
					failed.Store(err)
					return
				}
				if won {
					wins.Add(1)
				}
			}
		})
	}
	wg.Wait()
	err, _ := failed.Load().(error)
	return int(wins.Load()), err
}

// TestReplicaReadOversells is the 2016 incident as a regression test:
// under the same spike, with a replica 200 ms behind, dibs's
// gate made to read its free slots from the replica (replicaReads) lets in
// more than N winners; dibs's gate as it is, which only ever talks to the
// primary, lets in N.
func TestReplicaReadOversells(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	const stock, users = 100, 3000
	primary, replica := lagged(t, 200*time.Millisecond)

	canary := canaryGate(t, primary, replica)
	cd := gatetest.NewDrop(stock, 1)
	prepareSeen(t, canary, replica, cd)
	canaryWins, err := spike(users, func(user string) (bool, error) {
		_, err := reserve(canary, cd, user)
		if dibs.ErrorCode(err) == dibs.ESOLDOUT {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if canaryWins <= stock {
		t.Fatalf("the replica-reading gate let in %d winners of %d: the test cannot tell a broken gate", canaryWins, stock)
	}

	g := MustGate(t, primary, redis.GateOptions{Prefix: "dibs:"})
	d := gatetest.NewDrop(stock, 1)
	gatetest.MustPrepare(t, g, d)
	gateWins, err := spike(users, func(user string) (bool, error) {
		_, err := reserve(g, d, user)
		if dibs.ErrorCode(err) == dibs.ESOLDOUT {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stock %d, %d users, replica 200 ms behind: replica-reading gate %d winners, dibs %d", stock, users, canaryWins, gateWins)
	if gateWins != stock {
		t.Fatalf("dibs's gate let in %d winners, want exactly %d", gateWins, stock)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the failure instead
// of ending the test, so a test can check that a checker fails.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper()                           {}
func (r *fatalRecorder) Fatalf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }

// TestPorcupineFlagsReplicaReads records histories of the replica-reading
// variant of dibs's gate and of dibs's gate on small drops (5 slots, 20
// users, 16 clients) and checks them with the claim model: the variant's
// is reported illegal, the gate's linearizable.
func TestPorcupineFlagsReplicaReads(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	const drops, stock, users = 20, 5, 20
	primary, replica := lagged(t, 200*time.Millisecond)
	ctx := context.Background()

	history := func(g *redis.Gate, ds []*dibs.Drop) []porcupine.Operation {
		start := time.Now()
		var mu sync.Mutex
		var ops []porcupine.Operation
		var wg sync.WaitGroup
		for c := range 16 {
			wg.Go(func() {
				for i := c; i < drops*users; i += 16 {
					drop, user := i%drops, fmt.Sprintf("u%d", i/drops)
					in := gatetest.Op{Drop: fmt.Sprintf("d%d", drop), User: user, ClaimID: fmt.Sprintf("c%d", i)}
					call := time.Since(start).Nanoseconds()
					out, err := reserveOp(ctx, g, ds[drop], user, in.ClaimID)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					ops = append(ops, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: time.Since(start).Nanoseconds()})
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return ops
	}

	newDrops := func(g *redis.Gate) []*dibs.Drop {
		ds := make([]*dibs.Drop, drops)
		for i := range ds {
			ds[i] = gatetest.NewDrop(stock, 1)
			ds[i].ID = fmt.Sprintf("d%d", i)
		}
		prepareSeen(t, g, replica, ds...)
		return ds
	}

	canary := canaryGate(t, primary, replica)
	bad := history(canary, newDrops(canary))
	rec := &fatalRecorder{TB: t}
	gatetest.CheckLinearizable(rec, stock, bad)
	if !strings.Contains(rec.msg, string(porcupine.Illegal)) {
		t.Fatalf("porcupine on the replica-reading gate's history: %q, want it reported illegal", rec.msg)
	}
	t.Logf("replica-reading gate: %s", rec.msg)
	if _, path, ok := strings.Cut(rec.msg, "; see "); ok {
		os.Remove(path)
	}

	g := MustGate(t, primary, redis.GateOptions{Prefix: "dibs:"})
	good := history(g, newDrops(g))
	gatetest.CheckLinearizable(t, stock, good)
}

// reserveOp is one reserve as a Porcupine operation's output.
func reserveOp(ctx context.Context, g *redis.Gate, d *dibs.Drop, user, claimID string) (gatetest.Result, error) {
	h, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: user, ClaimID: claimID, Now: open.Add(time.Minute)})
	switch {
	case dibs.ErrorCode(err) == dibs.ESOLDOUT:
		return gatetest.Result{Kind: "sold_out"}, nil
	case err != nil:
		return gatetest.Result{}, err
	}
	return gatetest.Result{Kind: "won", ClaimID: h.ClaimID, Slot: h.Slot}, nil
}

// TestGateReadsNoReplica is a lint: no code of the redis package (tests
// aside) turns on a replica read or a client-side cached read, and the
// client interface the gate calls has no method for either.
func TestGateReadsNoReplica(t *testing.T) {
	t.Parallel()
	banned := map[string]bool{
		"SendToReplicas": true, "ReplicaOnly": true, "ReplicaSelector": true, "ReadNodeSelector": true,
		"DoCache": true, "DoMultiCache": true, "EvalRo": true, "EvalshaRo": true, "NewLuaScriptReadOnly": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		// The only place the names may appear: switching them off.
		off := map[ast.Node]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == 1 && len(as.Rhs) == 1 {
				if id, ok := as.Rhs[0].(*ast.Ident); ok && (id.Name == "nil" || id.Name == "false") {
					off[as.Lhs[0]] = true
				}
			}
			if sel, ok := n.(*ast.SelectorExpr); ok && banned[sel.Sel.Name] && !off[sel] {
				t.Errorf("%s: %s reads from a replica or a client cache", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
	client := reflect.TypeFor[redis.Client]()
	for m := range client.Methods() {
		if banned[m.Name] {
			t.Errorf("redis.Client has %s", m.Name)
		}
	}
}
