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

// replicaCanary is the gate of the 2016 incident, kept only to prove the
// test below can fail: it increments the winner counter on the primary but
// reads it from a replica, which lags.
type replicaCanary struct {
	primary, replica rueidis.Client
	key              string
	stock            int64
}

func (c *replicaCanary) reserve(ctx context.Context) (slot int64, won bool, err error) {
	n, err := c.replica.Do(ctx, c.replica.B().Get().Key(c.key).Build()).AsInt64()
	if err != nil && !rueidis.IsRedisNil(err) {
		return 0, false, err
	}
	if n >= c.stock {
		return 0, false, nil
	}
	slot, err = c.primary.Do(ctx, c.primary.B().Incr().Key(c.key).Build()).AsInt64()
	return slot, err == nil, err
}

// lagged starts a primary and a replica that runs lag behind it, and
// returns clients of both.
func lagged(t *testing.T, lag time.Duration) (primary, replica rueidis.Client) {
	p := redisserver.Start(t, "--repl-diskless-sync-delay", "0")
	link := redisserver.StartLag(t, p.Addr(), lag)
	r := redisserver.Start(t, "--replicaof", "127.0.0.1", fmt.Sprint(link.Port()), "--repl-diskless-load", "disabled")
	primary, replica = MustClient(t, p.URL()), MustClient(t, r.URL())
	waitFor(t, "replication link up", func() bool {
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

// TestReplicaReadOversells is the 2016 incident as a regression test
// (TESTPLAN A6): under the same spike, with a replica 200 ms behind, the
// canary that reads the winner count from the replica lets in more than N
// winners; dibs's gate, which only ever talks to the primary, lets in N.
func TestReplicaReadOversells(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	const stock, users = 100, 3000
	primary, replica := lagged(t, 200*time.Millisecond)
	ctx := context.Background()

	canary := &replicaCanary{primary: primary, replica: replica, key: "canary:{2016}:winners", stock: stock}
	canaryWins, err := spike(users, func(string) (bool, error) {
		_, won, err := canary.reserve(ctx)
		return won, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if canaryWins <= stock {
		t.Fatalf("the replica-reading canary let in %d winners of %d: the test cannot tell a broken gate", canaryWins, stock)
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
	t.Logf("stock %d, %d users, replica 200 ms behind: canary %d winners, dibs %d", stock, users, canaryWins, gateWins)
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

// TestPorcupineFlagsReplicaReads records histories of the canary and of
// dibs's gate on small drops (5 slots, 20 users, 16 clients) and checks
// them with the claim model: the canary's is reported illegal, the gate's
// linearizable.
func TestPorcupineFlagsReplicaReads(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	const drops, stock, users = 20, 5, 20
	primary, replica := lagged(t, 200*time.Millisecond)
	ctx := context.Background()

	history := func(reserve func(drop int, user, claimID string) (gatetest.Result, error)) []porcupine.Operation {
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
					out, err := reserve(drop, user, in.ClaimID)
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

	canaries := make([]*replicaCanary, drops)
	for i := range canaries {
		canaries[i] = &replicaCanary{primary: primary, replica: replica, key: fmt.Sprintf("canary:{d%d}:winners", i), stock: stock}
	}
	bad := history(func(drop int, user, claimID string) (gatetest.Result, error) {
		slot, won, err := canaries[drop].reserve(ctx)
		if !won {
			return gatetest.Result{Kind: "sold_out"}, err
		}
		return gatetest.Result{Kind: "won", ClaimID: claimID, Slot: slot}, nil
	})
	rec := &fatalRecorder{TB: t}
	gatetest.CheckLinearizable(rec, stock, bad)
	if !strings.Contains(rec.msg, string(porcupine.Illegal)) {
		t.Fatalf("porcupine on the canary's history: %q, want it reported illegal", rec.msg)
	}
	t.Logf("canary: %s", rec.msg)
	if _, path, ok := strings.Cut(rec.msg, "; see "); ok {
		os.Remove(path)
	}

	g := MustGate(t, primary, redis.GateOptions{Prefix: "dibs:"})
	ds := make([]*dibs.Drop, drops)
	for i := range ds {
		ds[i] = gatetest.NewDrop(stock, 1)
		ds[i].ID = fmt.Sprintf("d%d", i)
		gatetest.MustPrepare(t, g, ds[i])
	}
	good := history(func(drop int, user, claimID string) (gatetest.Result, error) {
		h, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: ds[drop], UserID: user, ClaimID: claimID, Now: open.Add(time.Minute)})
		switch {
		case dibs.ErrorCode(err) == dibs.ESOLDOUT:
			return gatetest.Result{Kind: "sold_out"}, nil
		case err != nil:
			return gatetest.Result{}, err
		}
		return gatetest.Result{Kind: "won", ClaimID: h.ClaimID, Slot: h.Slot}, nil
	})
	gatetest.CheckLinearizable(t, stock, good)
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
