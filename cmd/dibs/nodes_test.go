package main_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/postgres/pgtest"
)

// cluster is the configuration three nodes share: one Redis prefix, one
// PostgreSQL schema, both of this test alone.
func cluster(t *testing.T) []string {
	t.Helper()
	redisURL, pgURL := testenv.RedisURL(t), pgtest.SchemaURL(t)
	prefix := "dibs-test:" + strings.ToLower(rand.Text()[:10]) + ":"
	t.Cleanup(func() { deleteRedisKeys(t, redisURL, prefix) })
	return []string{
		"--redis", redisURL, "--redis-prefix", prefix, "--postgres", pgURL,
		"--postgres-record-conns", "2", "--postgres-background-conns", "1", "--postgres-read-conns", "2",
		"--reconcile-interval", "1s", "--reconcile-grace", "3s",
	}
}

func deleteRedisKeys(t *testing.T, redisURL, prefix string) {
	opt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		return
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			return
		}
		if len(e.Elements) > 0 {
			c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build())
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
	}
}

// within polls cond until it holds, fails t after a generous deadline, and
// returns how long it took.
func within(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s: not after %s", what, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestThreeNodes runs three `dibs serve` processes over one Redis gate and
// one PostgreSQL record. A drop created on one node is served by all; a
// pause on one holds on all. A spike goes round-robin over the nodes and
// one node is killed (-9) in the middle of it: every acknowledged winner is
// in the record, never more than N, exactly N once the spike is over. With
// every node killed and one restarted, the winners export is unchanged.
func TestThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of three nodes")
	}
	t.Parallel()
	const stock, users = 500, 4000
	args := cluster(t)
	var nodes []*node
	for range 3 {
		nodes = append(nodes, startNode(t, t.TempDir(), args...))
	}
	createDrop(t, nodes[0].url, fmt.Sprintf(`{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":%d}`, stock))
	for i, n := range nodes {
		took := within(t, "the drop on every node", func() bool {
			res, err := http.Get(n.url + "/v1/drops/pepero")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		})
		t.Logf("node %d serves the new drop after %s", i, took.Round(time.Millisecond))
	}

	tokens := make([]string, users+stock+1)
	for i := range tokens {
		tok, err := passport.Issue([]byte(e2eSecret), fmt.Sprintf("u%d", i), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ctx := context.Background()

	// A pause on one node holds on every node; a resume likewise.
	if res := admin(t, "POST", nodes[1].url+"/v1/admin/drops/pepero/pause"); res.StatusCode != http.StatusOK {
		t.Fatalf("pause: %s", res.Status)
	}
	for i, n := range nodes {
		took := within(t, "the pause on every node", func() bool {
			a, err := claimAt(ctx, client, n.url, "pepero", tokens[len(tokens)-1])
			var v struct{ State string }
			if res, err := http.Get(n.url + "/v1/drops/pepero"); err == nil {
				json.NewDecoder(res.Body).Decode(&v)
				res.Body.Close()
			}
			return err == nil && a.Code == "paused" && v.State == "paused"
		})
		t.Logf("node %d answers paused after %s", i, took.Round(time.Millisecond))
	}
	if res := admin(t, "POST", nodes[2].url+"/v1/admin/drops/pepero/resume"); res.StatusCode != http.StatusOK {
		t.Fatalf("resume: %s", res.Status)
	}
	for _, n := range nodes {
		within(t, "the resume on every node", func() bool {
			var v struct{ State string }
			res, err := http.Get(n.url + "/v1/drops/pepero")
			if err != nil {
				return false
			}
			json.NewDecoder(res.Body).Decode(&v)
			res.Body.Close()
			return v.State == "open"
		})
	}

	// The spike: each user claims until they have an answer, going
	// round-robin over the nodes and on to the next one when a node does
	// not answer. Node 2 dies once a third of the stock is won.
	var (
		mu        sync.Mutex
		acked     = map[string]winner{} // claim id → what the client was told
		wins      atomic.Int64
		next, rr  atomic.Int64
		dead      atomic.Bool
		killed    = make(chan struct{})
		failed    atomic.Value
		afterKill atomic.Int64
	)
	claim := func(i int) {
		for try := 0; try < 200; try++ {
			n := nodes[rr.Add(1)%3]
			if n == nodes[2] && dead.Load() {
				continue
			}
			a, err := claimAt(ctx, client, n.url, "pepero", tokens[i])
			if err != nil {
				time.Sleep(5 * time.Millisecond) // the node is down; this answer is unknown
				continue
			}
			switch a.status {
			case http.StatusCreated, http.StatusOK:
				mu.Lock()
				w := winner{a.ClaimID, a.UserID, a.Slot}
				if prev, seen := acked[a.ClaimID]; seen && prev != w {
					failed.Store(fmt.Errorf("claim %s acknowledged as %+v and as %+v", a.ClaimID, prev, w))
				}
				acked[a.ClaimID] = w
				mu.Unlock()
				if wins.Add(1) == stock/3 {
					close(killed)
				}
				if dead.Load() {
					afterKill.Add(1)
				}
				return
			case http.StatusGone:
				return
			case http.StatusServiceUnavailable:
				time.Sleep(20 * time.Millisecond)
			default:
				failed.Store(fmt.Errorf("claim answered %d %s", a.status, a.Code))
				return
			}
		}
		failed.Store(fmt.Errorf("user u%d got no answer", i))
	}
	var wg sync.WaitGroup
	for range 48 {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= users; i = int(next.Add(1)) {
				claim(i)
			}
		})
	}
	<-killed
	nodes[2].kill()
	dead.Store(true)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}

	got := exportWinners(t, nodes[0].url, "pepero")
	if len(got) > stock {
		t.Fatalf("the record holds %d winners, stock %d", len(got), stock)
	}
	for id, a := range acked {
		if got[id] != a {
			t.Fatalf("acknowledged claim %+v is %+v in the record", a, got[id])
		}
	}
	// Holds the dead node took and never recorded go back after the grace
	// period; more users then take them, until exactly N have won.
	late := users
	within(t, "exactly the stock won", func() bool {
		if len(exportWinners(t, nodes[1].url, "pepero")) == stock {
			return true
		}
		if late < len(tokens)-1 {
			late++
			claim(late)
		}
		return false
	})
	final := exportWinners(t, nodes[0].url, "pepero")
	seenUser, seenSlot := map[string]bool{}, map[int64]bool{}
	for _, w := range final {
		if seenUser[w.UserID] || seenSlot[w.Slot] || w.Slot < 1 || w.Slot > stock {
			t.Fatalf("winner %+v repeats a user or slot, or is outside 1..%d", w, stock)
		}
		seenUser[w.UserID], seenSlot[w.Slot] = true, true
	}
	t.Logf("%d claims acknowledged, %d of them after node 2 died; %d late users to reach %d winners",
		len(acked), afterKill.Load(), late-users, len(final))

	// Every node dies; one comes back and tells the same story.
	for _, n := range nodes {
		n.kill()
	}
	again := startNode(t, t.TempDir(), args...)
	after := exportWinners(t, again.url, "pepero")
	if len(after) != len(final) {
		t.Fatalf("export after restart holds %d winners, before %d", len(after), len(final))
	}
	for id, w := range final {
		if after[id] != w {
			t.Fatalf("winner %+v is %+v after the restart", w, after[id])
		}
	}
}
