package main_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs/passport"
)

// TestFaultKillLoop kills the node in a loop on the embedded default
// (memory gate, SQLite record in WAL mode with synchronous=FULL): claims run without
// pause while the node is killed with SIGKILL every two seconds and
// restarted over the same record, 10 times here and 300 under make soak
// (DIBS_SOAK_KILLS). Every claim acknowledged with 201 or 200 survives
// with its user and slot (0 lost); no user holds two claims and no slot is
// given twice (0 duplicated); the stock is conserved (winners + remaining
// = stock) on the node that restarts after the last kill; a winner's retry
// gets the same claim back.
func TestFaultKillLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	t.Parallel()
	kills := 10
	if v := os.Getenv("DIBS_SOAK_KILLS"); v != "" {
		var err error
		if kills, err = strconv.Atoi(v); err != nil || kills < 1 {
			t.Fatalf("DIBS_SOAK_KILLS=%q: want a number of kills", v)
		}
	}
	// A stock the claims never exhaust: every kill lands among claims
	// that win and write to the record.
	const stock, every = 1_000_000, 2 * time.Second
	data := t.TempDir()
	n := startNode(t, data)
	createDrop(t, n.url, fmt.Sprintf(`{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":%d}`, stock))

	var (
		mu     sync.Mutex
		url    = n.url
		acked  = map[string]winner{} // claim id → what the client was told
		byUser = map[string]string{} // user → the claim id they were told
		wins   atomic.Int64
		next   atomic.Int64
		failed atomic.Value
	)
	getURL := func() string { mu.Lock(); defer mu.Unlock(); return url }
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1)
				user := fmt.Sprintf("u%d", i)
				tok, err := passport.Issue([]byte(e2eSecret), user, time.Now(), time.Hour)
				if err != nil {
					failed.Store(err)
					return
				}
				for try := 0; try < 1+int(i%5/4); try++ { // a fifth of the users press twice
					a, err := claimAt(ctx, client, getURL(), "pepero", tok)
					if err != nil {
						time.Sleep(5 * time.Millisecond) // the node is down; this answer is unknown
						continue
					}
					switch a.status {
					case http.StatusCreated, http.StatusOK:
						w := winner{a.ClaimID, a.UserID, a.Slot}
						mu.Lock()
						if prev, seen := acked[a.ClaimID]; seen && prev != w {
							failed.Store(fmt.Errorf("claim %s acknowledged as %+v and as %+v", a.ClaimID, prev, w))
						}
						if id, seen := byUser[a.UserID]; seen && id != a.ClaimID {
							failed.Store(fmt.Errorf("user %s told it won %s and %s", a.UserID, id, a.ClaimID))
						}
						acked[a.ClaimID], byUser[a.UserID] = w, a.ClaimID
						mu.Unlock()
						wins.Add(1)
					case http.StatusServiceUnavailable, http.StatusTooManyRequests:
					default:
						failed.Store(fmt.Errorf("claim answered %d %s", a.status, a.Code))
					}
				}
			}
		})
	}

	for k := range kills {
		// A node that restarted wins claims again before it dies again
		// (explicit: a starved machine may take long to restart it).
		restarted, before := time.Now(), wins.Load()
		for wins.Load() == before {
			if time.Since(restarted) > time.Minute {
				t.Fatalf("kill %d: no claim won in a minute on the restarted node", k+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Until(restarted.Add(every))) // the pace of the kills, not synchronisation
		n.kill()
		n = startNode(t, data)
		mu.Lock()
		url = n.url
		if testing.Verbose() {
			t.Logf("kill %d: restarted with %d claims acknowledged so far", k+1, len(acked))
		}
		mu.Unlock()
	}
	cancel()
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}

	// One more kill after the claims: the record alone tells the story.
	n.kill()
	n = startNode(t, data)
	got := exportWinners(t, n.url, "pepero")
	users, slots := map[string]bool{}, map[int64]bool{}
	for _, w := range got {
		if users[w.UserID] || slots[w.Slot] || w.Slot < 1 || w.Slot > stock {
			t.Fatalf("winner %+v repeats a user or slot, or is outside 1..%d", w, stock)
		}
		users[w.UserID], slots[w.Slot] = true, true
	}
	for id, a := range acked {
		if got[id] != a {
			t.Fatalf("acknowledged claim %+v is %+v in the record", a, got[id])
		}
	}
	if left := remaining(t, n.url, "pepero"); int64(len(got))+left != stock {
		t.Fatalf("%d winners + %d remaining after the restart, want the stock of %d", len(got), left, stock)
	}
	for _, a := range acked {
		tok, _ := passport.Issue([]byte(e2eSecret), a.UserID, time.Now(), time.Hour)
		again, err := claimAt(context.Background(), client, n.url, "pepero", tok)
		if err != nil || again.status != http.StatusOK || again.ClaimID != a.ClaimID || again.Slot != a.Slot {
			t.Fatalf("winner %s retry after the restart = %+v %v, want 200 %s", a.UserID, again, err, a.ClaimID)
		}
		break
	}
	t.Logf("%d kills every %v; %d claims acknowledged, all in the record of %d winners, none twice", kills+1, every, len(acked), len(got))
}
