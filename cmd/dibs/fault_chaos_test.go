package main_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/postgres/pgtest"
)

// chaosIn and chaosOut are one claim request and its answer in the
// history TestFaultChaos checks.
type chaosIn struct{ Drop, User string }

type chaosOut struct {
	Kind    string // "won" (201), "existing" (200), "sold_out" (410), "unknown" (no answer, 503, 429)
	ClaimID string
	Slot    int64
}

// chaosHold is a user's claim in the model; an empty ClaimID is a claim
// that may exist, taken by a request whose answer is unknown.
type chaosHold struct {
	ClaimID string
	Slot    int64
}

type chaosState struct {
	left  int64
	holds map[string]chaosHold
}

func (s chaosState) with(user string, h *chaosHold, delta int64) chaosState {
	n := chaosState{left: s.left + delta, holds: maps.Clone(s.holds)}
	if n.holds == nil {
		n.holds = map[string]chaosHold{}
	}
	if h == nil {
		delete(n.holds, user)
	} else {
		n.holds[user] = *h
	}
	return n
}

func (s chaosState) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "left=%d", s.left)
	for _, u := range slices.Sorted(maps.Keys(s.holds)) {
		fmt.Fprintf(&b, " %s=%d/%s", u, s.holds[u].Slot, s.holds[u].ClaimID)
	}
	return b.String()
}

// slotFree reports whether no known claim of another user has slot.
func (s chaosState) slotFree(user string, slot int64) bool {
	for u, h := range s.holds {
		if u != user && h.ClaimID != "" && h.Slot == slot {
			return false
		}
	}
	return true
}

// chaosModel is the claim model with unknown outcomes: a
// request with no definite answer may or may not have taken a slot; a
// slot so taken whose claim was never recorded goes back after the
// reconcile grace, so it may be given to someone else later, and its user
// may win afresh.
func chaosModel(stock int64) porcupine.Model {
	m := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byDrop := map[string][]porcupine.Operation{}
			for _, op := range history {
				d := op.Input.(chaosIn).Drop
				byDrop[d] = append(byDrop[d], op)
			}
			var out [][]porcupine.Operation
			for _, d := range slices.Sorted(maps.Keys(byDrop)) {
				out = append(out, byDrop[d])
			}
			return out
		},
		Init: func() []any { return []any{chaosState{left: stock}} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(chaosState), input.(chaosIn), output.(chaosOut)
			h, has := s.holds[in.User]
			known := has && h.ClaimID != ""
			switch out.Kind {
			case "unknown":
				next := []any{s}
				if !has && s.left > 0 {
					next = append(next, s.with(in.User, &chaosHold{}, -1))
				}
				return next
			case "won":
				if known || out.Slot < 1 || out.Slot > stock || !s.slotFree(in.User, out.Slot) {
					return nil
				}
				won := &chaosHold{ClaimID: out.ClaimID, Slot: out.Slot}
				if has { // the unknown request's slot, or a new one after it went back
					return []any{s.with(in.User, won, 0)}
				}
				if s.left > 0 {
					return []any{s.with(in.User, won, -1)}
				}
				// Sold out only by slots of unknown requests: one went back.
				var next []any
				for u, o := range s.holds {
					if o.ClaimID == "" {
						next = append(next, s.with(u, nil, +1).with(in.User, won, -1))
					}
				}
				return next
			case "existing":
				switch {
				case known && h.ClaimID == out.ClaimID && h.Slot == out.Slot:
					return []any{s}
				case has && !known && s.slotFree(in.User, out.Slot):
					return []any{s.with(in.User, &chaosHold{ClaimID: out.ClaimID, Slot: out.Slot}, 0)}
				}
				return nil
			case "sold_out":
				if !known && s.left == 0 {
					return []any{s}
				}
				return nil
			}
			return nil
		},
		Equal: func(a, b any) bool { return a.(chaosState).String() == b.(chaosState).String() },
		DescribeOperation: func(input, output any) string {
			in, out := input.(chaosIn), output.(chaosOut)
			return fmt.Sprintf("claim(%s) → %s %d %s", in.User, out.Kind, out.Slot, out.ClaimID)
		},
		DescribeState: func(state any) string { return state.(chaosState).String() },
	}
	return m.ToModel()
}

// TestFaultChaos: two dibs serve nodes share a Redis gate
// and a PostgreSQL record, each through links of its own that the nemesis
// plays with during a spike over 20 drops of 5: latency of 100 ms ± 50
// ms, a 10 KB/s bandwidth limit, timeouts (every byte held for a second,
// connections open) and resets (every connection closed). Every claim
// request is logged with its answer; a request with no definite answer
// (no response, 503, 429) is an unknown outcome. Porcupine finds the
// history linearizable; once the faults stop and the reconcile grace has
// passed, every drop conserves its stock (winners + remaining = 5) and
// holds every acknowledged winner.
//
// The links are this package's TCP proxies (internal/redisserver), not
// Toxiproxy: the version pinned for it is not in the module mirror here.
func TestFaultChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end fault test")
	}
	t.Parallel()
	testenv.RedisURL(t)
	const drops, stock, perDrop = 20, 5, 20
	// The model has teeth: two winners of a drop of one, or a loser told
	// "sold out" while a slot is free, are illegal.
	won := func(user, id string, slot int64, at int64) porcupine.Operation {
		return porcupine.Operation{Input: chaosIn{"x", user}, Call: at, Output: chaosOut{"won", id, slot}, Return: at + 1}
	}
	if porcupine.CheckOperations(chaosModel(1), []porcupine.Operation{won("a", "c1", 1, 0), won("b", "c2", 1, 2)}) {
		t.Fatal("the model accepts two winners of one slot")
	}
	if porcupine.CheckOperations(chaosModel(1), []porcupine.Operation{{Input: chaosIn{"x", "a"}, Output: chaosOut{Kind: "sold_out"}, Return: 1}}) {
		t.Fatal("the model accepts sold out with the stock untouched")
	}
	srv := redisserver.Start(t)
	pg, err := url.Parse(pgtest.SchemaURL(t))
	if err != nil {
		t.Fatal(err)
	}
	var links []*redisserver.Lag
	var nodes []*node
	for range 2 {
		rl := redisserver.StartLag(t, srv.Addr(), 0)
		pl := redisserver.StartLag(t, pg.Host, 0)
		links = append(links, rl, pl)
		p := *pg
		p.Host = "127.0.0.1:" + strconv.Itoa(pl.Port())
		nodes = append(nodes, startNode(t, t.TempDir(), "--redis", "redis://127.0.0.1:"+strconv.Itoa(rl.Port())+"/0",
			"--postgres", p.String(), "--postgres-record-conns", "2", "--postgres-background-conns", "1", "--postgres-read-conns", "2",
			"--reconcile-interval", "1s", "--reconcile-grace", "3s"))
	}
	for d := range drops {
		createDrop(t, nodes[0].url, fmt.Sprintf(`{"id":"d%d","title":"chaos","kind":"coupon","stock":%d}`, d, stock))
	}
	for d := range drops {
		everyNode(t, "the drops open", nodes, time.Now(), func(url string) bool { return dropState(url, fmt.Sprintf("d%d", d)) == "open" })
	}

	var (
		mu      sync.Mutex
		history []porcupine.Operation
		acked   = map[string]winner{}
		other   atomic.Value
		start   = time.Now()
		next    atomic.Int64
	)
	// A client gives up after a second, as a phone does: a request held by
	// a timeout fault has an unknown outcome.
	client := &http.Client{Timeout: time.Second}
	claim := func(worker int, drop, user string) chaosOut {
		tok, err := passport.Issue([]byte(e2eSecret), user, time.Now(), time.Hour)
		if err != nil {
			other.Store(err)
			return chaosOut{}
		}
		call := time.Since(start).Nanoseconds()
		a, err := claimAt(context.Background(), client, nodes[rand.IntN(len(nodes))].url, drop, tok)
		ret := time.Since(start).Nanoseconds()
		out := chaosOut{Kind: "unknown"}
		switch {
		case err != nil, a.status == http.StatusServiceUnavailable, a.status == http.StatusTooManyRequests:
			ret = math.MaxInt64 // unknown: concurrent with everything after it
		case a.status == http.StatusCreated || a.status == http.StatusOK:
			out = chaosOut{Kind: map[int]string{201: "won", 200: "existing"}[a.status], ClaimID: a.ClaimID, Slot: a.Slot}
		case a.status == http.StatusGone && a.Code == "sold_out":
			out = chaosOut{Kind: "sold_out"}
		default:
			other.Store(fmt.Errorf("claim of %s at %s answered %d %s", user, drop, a.status, a.Code))
		}
		mu.Lock()
		defer mu.Unlock()
		history = append(history, porcupine.Operation{ClientId: worker, Input: chaosIn{drop, user}, Call: call, Output: out, Return: ret})
		if out.Kind == "won" || out.Kind == "existing" {
			acked[drop+"/"+out.ClaimID] = winner{out.ClaimID, user, out.Slot}
		}
		return out
	}

	stop := make(chan struct{})
	nemesisDone := make(chan struct{})
	actions := map[string]int{}
	go func() {
		defer close(nemesisDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			l := links[rand.IntN(len(links))]
			switch a := rand.IntN(5); a {
			case 0:
				l.SetDelay(100 * time.Millisecond)
				l.SetJitter(50 * time.Millisecond)
				actions["latency"]++
			case 1:
				l.SetRate(10 << 10)
				actions["bandwidth"]++
			case 2:
				l.Stall()
				time.AfterFunc(time.Second, l.Heal)
				actions["timeout"]++
			case 3:
				l.Reset()
				actions["reset"]++
			case 4: // this link heals
				l.SetDelay(0)
				l.SetJitter(0)
				l.SetRate(0)
				l.Heal()
			}
		}
	}()
	// Users come a few at a time, each claiming up to three times while
	// its answer is unknown, so that the spike lasts as long as the faults.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= drops*perDrop; i = int(next.Add(1)) {
				drop, user := fmt.Sprintf("d%d", i%drops), fmt.Sprintf("u%d", i)
				for range 3 {
					if claim(w, drop, user).Kind != "unknown" {
						break
					}
				}
				time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond) // spread the spike over the faults
			}
		})
	}
	wg.Wait()
	close(stop)
	<-nemesisDone
	for _, l := range links {
		l.SetDelay(0)
		l.SetJitter(0)
		l.SetRate(0)
		l.Heal()
	}
	if err, _ := other.Load().(error); err != nil {
		t.Fatal(err)
	}

	res, info := porcupine.CheckOperationsVerbose(chaosModel(stock), history, time.Minute)
	switch res {
	case porcupine.Illegal:
		t.Errorf("the claim history of %d requests is not linearizable", len(history))
		t.Log(info)
	case porcupine.Unknown:
		t.Errorf("the linearizability check of %d requests timed out", len(history))
	}

	// Once the faults stop, the holds of claims never recorded go back
	// (reconcile grace 3 s, every 1 s): each drop's winners and remaining
	// slots add up to its stock; 60 s leaves a starved machine room.
	deadline := time.Now().Add(60 * time.Second)
	for d := range drops {
		drop := fmt.Sprintf("d%d", d)
		for {
			got := exportWinners(t, nodes[1].url, drop)
			if left := remaining(t, nodes[1].url, drop); int64(len(got))+left == stock {
				for key, a := range acked {
					if strings.HasPrefix(key, drop+"/") && got[a.ClaimID] != a {
						t.Fatalf("%s: acknowledged claim %+v is %+v in the record", drop, a, got[a.ClaimID])
					}
				}
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("%s: %d winners + %d remaining != stock %d after the faults stopped", drop, len(got), left, stock)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	unknown := 0
	for _, op := range history {
		if op.Output.(chaosOut).Kind == "unknown" {
			unknown++
		}
	}
	t.Logf("%d claim requests (%d unknown outcomes), %d acknowledged winners; faults %v; linearizable, stock conserved",
		len(history), unknown, len(acked), actions)
}
