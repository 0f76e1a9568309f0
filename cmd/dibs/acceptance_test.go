package main_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/passport"
)

// TestAcceptanceSpike is the core acceptance check, through the contract
// only: a drop of 1,111; 36,000 claim requests from 30,000 users on 256
// concurrent connections, a fifth of the users claiming twice. Exactly
// 1,111 answers are 201 with unique users and slots in 1..1,111; every
// retry of a winner is 200 with the same claim; everyone else gets 410
// sold_out; nothing else (no 5xx). The winners export equals the
// acknowledged set, and after kill -9 and a restart it is unchanged, a
// winner's retry is 200 with the same claim and a new claim is 410.
func TestAcceptanceSpike(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end acceptance")
	}
	const stock, users, conns = 1111, 30_000, 256
	data := t.TempDir()
	n := startNode(t, data)
	createDrop(t, n.url, fmt.Sprintf(`{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":%d}`, stock))

	type job struct{ user, try int }
	jobs := make(chan job, conns)
	tokens := make([]string, users+1)
	for i := range tokens {
		tok, err := passport.Issue([]byte(e2eSecret), fmt.Sprintf("u%d", i), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok
	}
	go func() {
		for i := range users {
			jobs <- job{i, 1}
		}
		for i := 0; i < users; i += 5 { // 6,000 users press again
			jobs <- job{i, 2}
		}
		close(jobs)
	}()

	var (
		mu      sync.Mutex
		first   = map[int]claimAnswer{} // user → first answer
		won     = map[string]winner{}
		byCode  = map[string]int{}
		failure error
	)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for j := range jobs {
				a, err := claimAt(context.Background(), client, n.url, "pepero", tokens[j.user])
				mu.Lock()
				switch {
				case err != nil:
					failure = fmt.Errorf("user %d: %v", j.user, err)
				case a.status == http.StatusCreated:
					byCode["201"]++
					won[a.ClaimID] = winner{a.ClaimID, a.UserID, a.Slot}
				case a.status == http.StatusOK:
					byCode["200"]++
					if f := first[j.user]; f.status != http.StatusCreated || f.ClaimID != a.ClaimID || f.Slot != a.Slot {
						failure = fmt.Errorf("user %d: 200 with %+v after a first answer %+v", j.user, a, f)
					}
				case a.status == http.StatusGone && a.Code == "sold_out":
					byCode["410 sold_out"]++
				default:
					failure = fmt.Errorf("user %d: unexpected answer %d %s", j.user, a.status, a.Code)
				}
				if j.try == 1 {
					first[j.user] = a
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	t.Logf("answers: %v", byCode)
	if byCode["201"] != stock {
		t.Fatalf("%d answers were 201, want %d", byCode["201"], stock)
	}
	slots, people := map[int64]bool{}, map[string]bool{}
	for _, w := range won {
		if slots[w.Slot] || people[w.UserID] || w.Slot < 1 || w.Slot > stock {
			t.Fatalf("winner %+v repeats a slot or user, or is outside 1..%d", w, stock)
		}
		slots[w.Slot], people[w.UserID] = true, true
	}
	// Retries: every winner among the users who pressed twice got 200.
	retriedWinners := 0
	for i := 0; i < users; i += 5 {
		if first[i].status == http.StatusCreated {
			retriedWinners++
		}
	}
	if byCode["200"] != retriedWinners {
		t.Fatalf("%d answers were 200, want one per retrying winner (%d)", byCode["200"], retriedWinners)
	}

	sameAsAcked := func(url string) {
		t.Helper()
		got := exportWinners(t, url, "pepero")
		if len(got) != len(won) {
			t.Fatalf("export holds %d winners, %d were acknowledged", len(got), len(won))
		}
		for id, w := range won {
			if got[id] != w {
				t.Fatalf("acknowledged %+v is %+v in the export", w, got[id])
			}
		}
	}
	sameAsAcked(n.url)

	n.kill()
	n = startNode(t, data)
	sameAsAcked(n.url)
	for id, w := range won {
		var i int
		fmt.Sscanf(w.UserID, "u%d", &i)
		a, err := claimAt(context.Background(), client, n.url, "pepero", tokens[i])
		if err != nil || a.status != http.StatusOK || a.ClaimID != id {
			t.Fatalf("winner retry after restart = %+v %v, want 200 %s", a, err, id)
		}
		break
	}
	if a, err := claimAt(context.Background(), client, n.url, "pepero", tokens[users]); err != nil || a.status != http.StatusGone || a.Code != "sold_out" {
		t.Fatalf("new claim after restart = %+v %v, want 410 sold_out", a, err)
	}
}
