package main_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs/passport"
)

// The fault suite (go test -run '^TestFault' ./...) holds dibs's promises
// against the faults that break them, with real processes: dibs serve
// nodes, redis-server primaries, replicas, sentinels and Cluster nodes.
// This file has what its tests share: a spike driven by hand, so that the
// moment of a fault and the first win after it are known exactly.

// faultSpike is a claim spike on one drop over some nodes. Each user
// claims until the answer is definite (201 or 200: won; 410: sold out or
// closed); an unanswered request or a 503 or 429 is tried again on the
// next node 20 ms later, as a client honouring Retry-After does.
type faultSpike struct {
	t      *testing.T
	drop   string
	stock  int
	urls   []string
	client *http.Client

	mu     sync.Mutex
	acked  map[string]winner // claim id → what its client was told
	wins   atomic.Int64
	failed atomic.Value

	// faultAt is when the fault struck; resumed is how long after it the
	// first claim sent after it won.
	faultAt atomic.Pointer[time.Time]
	resumed atomic.Int64
}

func newFaultSpike(t *testing.T, drop string, stock int, urls []string) *faultSpike {
	return &faultSpike{
		t: t, drop: drop, stock: stock, urls: urls, acked: map[string]winner{},
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
}

// struck marks the moment of the fault.
func (s *faultSpike) struck() {
	now := time.Now()
	s.faultAt.Store(&now)
}

// claim makes user claim until a definite answer, for at most limit.
func (s *faultSpike) claim(user string, limit time.Duration) {
	tok, err := passport.Issue([]byte(e2eSecret), user, time.Now(), time.Hour)
	if err != nil {
		s.failed.Store(err)
		return
	}
	ctx := context.Background()
	for try, deadline := 0, time.Now().Add(limit); time.Now().Before(deadline); try++ {
		sent := time.Now()
		a, err := claimAt(ctx, s.client, s.urls[(len(user)+try)%len(s.urls)], s.drop, tok)
		if err != nil {
			time.Sleep(20 * time.Millisecond) // a node down: this answer is unknown
			continue
		}
		switch a.status {
		case http.StatusCreated, http.StatusOK:
			w := winner{a.ClaimID, a.UserID, a.Slot}
			s.mu.Lock()
			if prev, seen := s.acked[a.ClaimID]; seen && prev != w {
				s.failed.Store(fmt.Errorf("claim %s acknowledged as %+v and as %+v", a.ClaimID, prev, w))
			}
			s.acked[a.ClaimID] = w
			s.mu.Unlock()
			s.wins.Add(1)
			if at := s.faultAt.Load(); at != nil && sent.After(*at) {
				s.resumed.CompareAndSwap(0, int64(time.Since(*at)))
			}
			return
		case http.StatusGone:
			return
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			time.Sleep(20 * time.Millisecond)
		default:
			s.failed.Store(fmt.Errorf("claim of %s answered %d %s", user, a.status, a.Code))
			return
		}
	}
	s.failed.Store(fmt.Errorf("%s: no definite answer in %v", user, limit))
}

// run makes users u0..u(users-1) claim on workers connections, and calls
// fault once a third of the stock is won (in its own goroutine; fault
// calls struck when the fault strikes). It returns when every user has
// its answer.
func (s *faultSpike) run(workers, users int, fault func()) {
	var next atomic.Int64
	third := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(users); i = next.Add(1) {
				s.claim(fmt.Sprintf("u%d", i), 90*time.Second)
				if s.wins.Load() >= int64(s.stock/3) {
					once.Do(func() { close(third) })
				}
			}
		})
	}
	faulted := make(chan struct{})
	go func() {
		defer close(faulted)
		select {
		case <-third:
			fault()
		case <-waitGroupDone(&wg):
		}
	}()
	wg.Wait()
	<-faulted
	if err, _ := s.failed.Load().(error); err != nil {
		s.t.Fatal(err)
	}
	if s.faultAt.Load() == nil {
		s.t.Fatalf("the spike ended before the fault (%d wins)", s.wins.Load())
	}
}

func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	return ch
}

// pause is how long after the fault the first claim sent after it won; it
// fails t if none did.
func (s *faultSpike) pause() time.Duration {
	d := time.Duration(s.resumed.Load())
	if d == 0 {
		s.t.Fatal("no claim sent after the fault won")
	}
	return d
}

// finish checks the end of the drop on node url: every acknowledged
// winner is in the record as acknowledged; once the holds with no record
// came back (winners + remaining = stock), late users take what is left,
// and the drop ends with exactly its stock of winners, unique users and
// slots in 1..stock.
func (s *faultSpike) finish(url string) map[string]winner {
	t := s.t
	t.Helper()
	check := func(got map[string]winner) {
		t.Helper()
		if len(got) > s.stock {
			t.Fatalf("the record holds %d winners, stock %d", len(got), s.stock)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for id, a := range s.acked {
			if got[id] != a {
				t.Fatalf("acknowledged claim %+v is %+v in the record", a, got[id])
			}
		}
		users, slots := map[string]bool{}, map[int64]bool{}
		for _, w := range got {
			if users[w.UserID] || slots[w.Slot] || w.Slot < 1 || w.Slot > int64(s.stock) {
				t.Fatalf("winner %+v repeats a user or slot, or is outside 1..%d", w, s.stock)
			}
			users[w.UserID], slots[w.Slot] = true, true
		}
	}
	check(exportWinners(t, url, s.drop))
	// The reconcile grace of the nodes is 3 s; 60 s leaves a starved
	// machine room.
	start := time.Now()
	for {
		n, left := len(exportWinners(t, url, s.drop)), remaining(t, url, s.drop)
		if int64(n)+left == int64(s.stock) {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("stock not conserved 60 s after the spike: %d winners + %d remaining != %d", n, left, s.stock)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; remaining(t, url, s.drop) > 0; i++ {
		if i > 2*s.stock {
			t.Fatalf("late users could not take the %d slots left", remaining(t, url, s.drop))
		}
		s.claim(fmt.Sprintf("late%d", i), 30*time.Second)
	}
	if err, _ := s.failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	got := exportWinners(t, url, s.drop)
	check(got)
	if len(got) != s.stock {
		t.Fatalf("%d winners at the end, want %d", len(got), s.stock)
	}
	return got
}
