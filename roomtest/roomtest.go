// Package roomtest is the conformance suite every dibs.Room passes: the
// backend's own contract (idempotent joins, the first seed wins, leases,
// opening, batches) and the waiting room's behaviour run over it with a
// manual clock: shuffled and FIFO orders, admission at the configured rate
// within the stock, sold out for everyone the moment no slot can come back,
// released holds re-opening exactly as many admissions, expired turns, and
// the ETA people are shown.
package roomtest

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/room"
)

// Factory returns a new, empty backend isolated from every other test's.
type Factory func(t *testing.T) dibs.Room

// Run runs the conformance suite against backends made by newRoom.
func Run(t *testing.T, newRoom Factory) {
	t.Run("JoinIsIdempotent", func(t *testing.T) { t.Parallel(); testJoinIdempotent(t, newRoom(t)) })
	t.Run("ConcurrentJoins", func(t *testing.T) { t.Parallel(); testConcurrentJoins(t, newRoom(t)) })
	t.Run("FirstSeedWins", func(t *testing.T) { t.Parallel(); testFirstSeedWins(t, newRoom(t)) })
	t.Run("Lease", func(t *testing.T) { t.Parallel(); testLease(t, newRoom(t)) })
	t.Run("AdvanceOpensAndAdmits", func(t *testing.T) { t.Parallel(); testAdvance(t, newRoom(t)) })
	t.Run("DropsAreIsolated", func(t *testing.T) { t.Parallel(); testIsolation(t, newRoom(t)) })
	t.Run("FindAndWon", func(t *testing.T) { t.Parallel(); testFindAndWon(t, newRoom(t)) })

	t.Run("ShuffledPreQueue", func(t *testing.T) { t.Parallel(); testShuffledPreQueue(t, newRoom) })
	t.Run("FIFOPreQueue", func(t *testing.T) { t.Parallel(); testFIFO(t, newRoom(t)) })
	t.Run("ETA", func(t *testing.T) { t.Parallel(); testETA(t, newRoom(t)) })
	t.Run("ReleasedHoldsReopen", func(t *testing.T) { t.Parallel(); testReleased(t, newRoom(t)) })
	t.Run("ExpiredTurnsMoveOn", func(t *testing.T) { t.Parallel(); testExpired(t, newRoom(t)) })
	t.Run("WinnersReadWon", func(t *testing.T) { t.Parallel(); testWinnersReadWon(t, newRoom(t)) })
	t.Run("ETAUnknownPastTheStock", func(t *testing.T) { t.Parallel(); testETAPastStock(t, newRoom(t)) })
	t.Run("ETAUnknownWhileHoldsBlock", func(t *testing.T) { t.Parallel(); testETAHeld(t, newRoom(t)) })
	t.Run("LastCall", func(t *testing.T) { t.Parallel(); testLastCall(t, newRoom(t)) })
	t.Run("AdmissionChecks", func(t *testing.T) { t.Parallel(); testAdmissionChecks(t, newRoom(t)) })
	t.Run("Closed", func(t *testing.T) { t.Parallel(); testClosed(t, newRoom(t)) })
	t.Run("OneLeader", func(t *testing.T) { t.Parallel(); testOneLeader(t, newRoom(t)) })
}

var ctx = context.Background()

func seed(b byte) dibs.RoomSeed {
	s := make([]byte, 32)
	for i := range s {
		s[i] = b
	}
	return dibs.RoomSeed{Epoch: uint64(b)<<8 | 1, Seed: s}
}

func mustJoin(t *testing.T, r dibs.Room, drop string, person uint64) dibs.Place {
	t.Helper()
	p, err := r.Join(ctx, drop, person, seed(1))
	if err != nil {
		t.Fatalf("join %d: %v", person, err)
	}
	return p
}

func mustSync(t *testing.T, r dibs.Room, drop, node string) (dibs.RoomState, bool) {
	t.Helper()
	st, leader, err := r.Sync(ctx, drop, node, 5*time.Second, seed(2))
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return st, leader
}

func testJoinIdempotent(t *testing.T, r dibs.Room) {
	drop := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	a := mustJoin(t, r, drop, 0xaaaa<<48|7)
	b := mustJoin(t, r, drop, 0xbbbb<<48|7) // same low bits, another bucket
	again := mustJoin(t, r, drop, 0xaaaa<<48|7)
	if a.Number != 1 || b.Number != 2 || a.Existing || b.Existing {
		t.Fatalf("first joins: %+v %+v, want numbers 1 and 2, new", a, b)
	}
	if again.Number != 1 || !again.Existing || again.Epoch != a.Epoch {
		t.Fatalf("joining again: %+v, want number 1, existing, epoch %d", again, a.Epoch)
	}
	if st, _ := mustSync(t, r, drop, ""); st.Issued != 2 {
		t.Fatalf("issued = %d, want 2", st.Issued)
	}
}

func testConcurrentJoins(t *testing.T, r dibs.Room) {
	drop := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	const people, tries = 500, 3
	got := make([][]uint64, people)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 16 { // each person joins from several goroutines at once
		wg.Go(func() {
			for i := w; i < people*tries; i += 16 {
				p, err := r.Join(ctx, drop, uint64(i%people)*0x9e3779b97f4a7c15, seed(1))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got[i%people] = append(got[i%people], p.Number)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	seen := make(map[uint64]bool)
	for i, ns := range got {
		if len(ns) != tries || slices.Min(ns) != slices.Max(ns) {
			t.Fatalf("person %d got numbers %v, want one number %d times", i, ns, tries)
		}
		seen[ns[0]] = true
	}
	for n := uint64(1); n <= people; n++ {
		if !seen[n] {
			t.Fatalf("number %d never issued; %d people", n, people)
		}
	}
}

func testFirstSeedWins(t *testing.T, r dibs.Room) {
	drop := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	st, _ := mustSync(t, r, drop, "")
	if st.Epoch != seed(2).Epoch || string(st.Seed) != string(seed(2).Seed) {
		t.Fatalf("new room: epoch %d seed %x, want the fresh ones", st.Epoch, st.Seed)
	}
	p := mustJoin(t, r, drop, 1) // offers seed(1)
	again, _, err := r.Sync(ctx, drop, "", time.Second, seed(3))
	if err != nil {
		t.Fatal(err)
	}
	if p.Epoch != st.Epoch || again.Epoch != st.Epoch || string(again.Seed) != string(st.Seed) {
		t.Fatalf("epochs %d %d, seed %x: the room must keep its first", p.Epoch, again.Epoch, again.Seed)
	}
	// A join can create the room too.
	other := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	if p := mustJoin(t, r, other, 1); p.Epoch != seed(1).Epoch {
		t.Fatalf("room created by a join: epoch %d, want %d", p.Epoch, seed(1).Epoch)
	}
}

func testLease(t *testing.T, r dibs.Room) {
	drop := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	// Leases follow the backend's clock, not one a test can move. While a
	// lease must hold, it is long enough that a starved machine does not
	// see it run out between two calls; the one that must run out is
	// short, and the test waits it out (waiting longer only makes it more
	// expired).
	const long, short = time.Minute, 300 * time.Millisecond
	sync := func(node string, lease time.Duration) bool {
		_, leader, err := r.Sync(ctx, drop, node, lease, seed(1))
		if err != nil {
			t.Fatal(err)
		}
		return leader
	}
	if !sync("a", long) {
		t.Fatal("a did not get a free lease")
	}
	if sync("b", long) {
		t.Fatal("b got a lease a holds")
	}
	if !sync("a", long) {
		t.Fatal("a could not renew its lease")
	}
	if _, leader := mustSync(t, r, drop, ""); leader {
		t.Fatal("a read-only sync reported leading")
	}
	_, err := r.Advance(ctx, drop, "b", dibs.Advance{Now: epoch, Admit: 1})
	wantCode(t, err, dibs.ECONFLICT)
	if !sync("a", short) { // a's last renewal
		t.Fatal("a could not renew its lease")
	}
	time.Sleep(short + 200*time.Millisecond)
	if !sync("b", long) {
		t.Fatal("b did not get the lease after it expired")
	}
	_, err = r.Advance(ctx, drop, "a", dibs.Advance{Now: epoch, Admit: 1})
	wantCode(t, err, dibs.ECONFLICT)
}

func testAdvance(t *testing.T, r dibs.Room) {
	drop := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	for i := range 10 {
		mustJoin(t, r, drop, uint64(i+1))
	}
	if _, leader := mustSync(t, r, drop, "n"); !leader {
		t.Fatal("no lease")
	}
	adv := func(a dibs.Advance) dibs.RoomState {
		t.Helper()
		st, err := r.Advance(ctx, drop, "n", a)
		if err != nil {
			t.Fatalf("advance: %v", err)
		}
		return st
	}
	t0 := epoch
	st := adv(dibs.Advance{Now: t0, Open: true, Admit: 3, BatchWindow: time.Second, Rate: 2.5, Remaining: 7, ExpireBefore: t0.Add(-time.Minute)})
	if !st.Opened || st.PreQueue != 10 || st.Serving != 3 || st.Rate != 2.5 || st.Remaining != 7 || !st.LastAdvance.Equal(t0) {
		t.Fatalf("after opening: %+v", st)
	}
	if len(st.Batches) != 1 || st.Batches[0] != (dibs.Batch{Seq: 1, At: t0, Start: 1, End: 3}) {
		t.Fatalf("batches = %+v, want one of 1..3", st.Batches)
	}
	if p := mustJoin(t, r, drop, 11); p.Number != 11 {
		t.Fatalf("join after opening: %d", p.Number)
	}
	// Opening again changes nothing; a step within the window extends the batch.
	st = adv(dibs.Advance{Now: t0.Add(500 * time.Millisecond), Open: true, Admit: 2, BatchWindow: time.Second, ExpireBefore: t0.Add(-time.Minute)})
	if st.PreQueue != 10 || st.Serving != 5 || len(st.Batches) != 1 || st.Batches[0].End != 5 {
		t.Fatalf("second step: %+v", st)
	}
	if err := r.Use(ctx, drop, 1, 2); err != nil {
		t.Fatal(err)
	}
	// A new batch after the window; never more than the tickets waiting.
	t1 := t0.Add(1500 * time.Millisecond)
	st = adv(dibs.Advance{Now: t1, Admit: 100, BatchWindow: time.Second, SoldOut: true, ExpireBefore: t0.Add(-time.Minute)})
	if st.Serving != 11 || !st.SoldOut || len(st.Batches) != 2 {
		t.Fatalf("third step: %+v", st)
	}
	if b := st.Batches; b[0].Used != 1 || b[1] != (dibs.Batch{Seq: 2, At: t1, Start: 6, End: 11}) {
		t.Fatalf("batches = %+v", b)
	}
	// Expiry forgets the first batch and its count; using it is ignored.
	st = adv(dibs.Advance{Now: t1, BatchWindow: time.Second, ExpireBefore: t0.Add(time.Millisecond)})
	if len(st.Batches) != 1 || st.Batches[0].Seq != 2 {
		t.Fatalf("after expiry: %+v", st.Batches)
	}
	if err := r.Use(ctx, drop, 1, 3); err != nil {
		t.Fatal(err)
	}
	st = adv(dibs.Advance{Now: t1.Add(time.Minute), BatchWindow: time.Second, ExpireBefore: t1.Add(time.Millisecond), Admit: 5})
	if len(st.Batches) != 0 || st.LastBatch != 2 || st.Serving != 11 {
		t.Fatalf("after all expired: %+v", st)
	}
	mustJoin(t, r, drop, 12)
	st = adv(dibs.Advance{Now: t1.Add(2 * time.Minute), BatchWindow: time.Second, ExpireBefore: t1, Admit: 5})
	if len(st.Batches) != 1 || st.Batches[0] != (dibs.Batch{Seq: 3, At: t1.Add(2 * time.Minute), Start: 12, End: 12}) {
		t.Fatalf("batch after a gap: %+v", st.Batches)
	}
}

// testFindAndWon: Find reads a place without issuing one; Use remembers
// the ticket that won, even when its batch has expired, per drop.
func testFindAndWon(t *testing.T, r dibs.Room) {
	drop, other := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID, NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	if _, ok, err := r.Find(ctx, drop, 7); ok || err != nil {
		t.Fatalf("find in a room that does not exist: %v %v", ok, err)
	}
	mustJoin(t, r, drop, 7)
	want := mustJoin(t, r, drop, 8)
	want.Existing = true
	if p, ok, err := r.Find(ctx, drop, 8); err != nil || !ok || p != want {
		t.Fatalf("find = %+v %v %v, want %+v", p, ok, err, want)
	}
	if _, ok, err := r.Find(ctx, drop, 9); ok || err != nil {
		t.Fatalf("find of someone who never joined: %v %v", ok, err)
	}
	if st, _ := mustSync(t, r, drop, ""); st.Issued != 2 {
		t.Fatalf("issued %d after finding, want 2: Find issued a ticket", st.Issued)
	}
	mustJoin(t, r, other, 1)
	for _, n := range []uint64{2, 63, 64, 1000, dibs.MaxTicketNumber} {
		if won, err := r.Won(ctx, drop, n); won || err != nil {
			t.Fatalf("ticket %d won before any claim: %v %v", n, won, err)
		}
		if err := r.Use(ctx, drop, 99, n); err != nil { // batch 99 never existed: the win counts all the same
			t.Fatal(err)
		}
		if won, err := r.Won(ctx, drop, n); !won || err != nil {
			t.Fatalf("ticket %d after its win: %v %v", n, won, err)
		}
		if won, _ := r.Won(ctx, other, n); won {
			t.Fatalf("ticket %d won in another drop", n)
		}
	}
	for _, n := range []uint64{1, 3, 62, 65, 999, dibs.MaxTicketNumber - 1} {
		if won, err := r.Won(ctx, drop, n); won || err != nil {
			t.Fatalf("ticket %d never won: %v %v", n, won, err)
		}
	}
}

func testIsolation(t *testing.T, r dibs.Room) {
	a, b := NewDrop(10, 10, dibs.OrderShuffle, epoch).ID, NewDrop(10, 10, dibs.OrderShuffle, epoch).ID
	mustJoin(t, r, a, 1)
	mustJoin(t, r, a, 2)
	if p := mustJoin(t, r, b, 1); p.Number != 1 || p.Existing {
		t.Fatalf("drop b: %+v, want a fresh number 1", p)
	}
	if _, leader := mustSync(t, r, a, "n"); !leader {
		t.Fatal("no lease on a")
	}
	if _, leader := mustSync(t, r, b, "m"); !leader {
		t.Fatal("leases are per drop")
	}
}

// testShuffledPreQueue: 50,000 people join before opening; at opening they
// are admitted at the rate in the seed's order; exactly the stock wins;
// everyone else reads sold_out within a second of the last slot going.
// The same seed gives the same order, another seed another. (10,000 under
// the race detector.)
func testShuffledPreQueue(t *testing.T, newRoom Factory) {
	const stock, rate = 1000, 500
	people := 50_000
	if raceDetector {
		people = 10_000
	}
	run := func(seed uint64) []uint64 {
		h := newHarness(t, newRoom(t), NewDrop(stock, rate, dibs.OrderShuffle, epoch.Add(time.Minute)), options{seed: seed})
		h.joinMany("u", people)
		in := h.info()
		if in.Opened || in.Seed != "" || len(in.SeedDigest) != 64 {
			t.Fatalf("before opening: %+v; the seed must stay hidden, its digest shown", in)
		}
		digest := in.SeedDigest
		if st := h.status("u7"); st.State != dibs.QueueWaiting || st.Position != 0 || st.ETA < time.Minute {
			t.Fatalf("before opening: %+v, want waiting, no position yet, ETA past the opening", st)
		}
		for h.now().Before(h.drop.OpensAt) {
			h.clock.Add(time.Second)
		}
		h.clock.Add(-h.tick)
		h.step()
		in = h.info()
		if !in.Opened || in.PreQueue != uint64(people) || room.SeedDigest(mustHex(t, in.Seed)) != digest {
			t.Fatalf("at opening: %+v; want the whole pre-queue and the committed seed", in)
		}

		// Who holds which number, and where each number stands.
		byNumber := make(map[uint64]string, people)
		for i := range people {
			user := fmt.Sprintf("u%d", i)
			byNumber[h.status(user).Number] = user
		}
		byPos := make([]uint64, people+1)
		key := mustHex(t, in.Seed)
		for n := uint64(1); n <= uint64(people); n++ {
			byPos[room.Position(key, uint64(people), n)] = n
		}

		var order []uint64
		var lastWin time.Time
		served := uint64(0)
		start := h.now()
		for h.wins.Load() < stock {
			h.step()
			in := h.info()
			// The rate: never ahead of rate × elapsed (plus one tick).
			if limit := float64(rate) * (h.now().Sub(start).Seconds() + h.tick.Seconds()); float64(in.Serving) > limit+1 {
				t.Fatalf("served %d after %s at %d/s", in.Serving, h.now().Sub(start), rate)
			}
			if in.Serving > stock {
				t.Fatalf("served %d people for a stock of %d", in.Serving, stock)
			}
			for p := served + 1; p <= in.Serving; p++ {
				n := byPos[p]
				user := byNumber[n]
				st := h.status(user)
				if st.State != dibs.QueueAdmitted || st.Admission == "" {
					t.Fatalf("position %d (ticket %d): %+v, want admitted", p, n, st)
				}
				if err := h.claim(user, st.Admission); err != nil {
					t.Fatalf("claim by admitted %s: %v", user, err)
				}
				order = append(order, n)
				lastWin = h.now()
			}
			served = in.Serving
			if h.now().Sub(start) > time.Minute {
				t.Fatalf("only %d wins after a minute", h.wins.Load())
			}
		}
		if elapsed := lastWin.Sub(start); elapsed < time.Duration(stock/rate-1)*time.Second || elapsed > time.Duration(stock/rate+1)*time.Second {
			t.Fatalf("the stock of %d went in %s at %d/s", stock, elapsed, rate)
		}
		// Within one second of the last slot going, everyone else reads sold_out.
		for h.now().Sub(lastWin) < time.Second {
			h.step()
		}
		soldOut := 0
		for i := range people {
			user := fmt.Sprintf("u%d", i)
			st := h.status(user)
			switch {
			case h.won[user] && st.State != dibs.QueueAdmitted:
				t.Fatalf("winner %s reads %s", user, st.State)
			case !h.won[user] && st.State != dibs.QueueSoldOut:
				t.Fatalf("%s reads %+v a second after the last slot went", user, st)
			case !h.won[user]:
				soldOut++
			}
		}
		if h.wins.Load() != stock || soldOut != people-stock {
			t.Fatalf("%d winners, %d sold out; want %d and %d", h.wins.Load(), soldOut, stock, people-stock)
		}
		if _, err := h.svc.Join(ctx, h.drop, "late"); dibs.ErrorCode(err) != dibs.ESOLDOUT {
			t.Fatalf("joining a sold-out room: %v, want sold_out", err)
		}
		return order
	}

	a := run(1)
	if slices.IsSorted(a) {
		t.Fatal("admitted in arrival order; want a shuffle")
	}
	if b := run(1); !slices.Equal(a, b) {
		t.Fatal("the same seed gave another order")
	}
	if c := run(2); slices.Equal(a, c) {
		t.Fatal("another seed gave the same order")
	}
}

// testFIFO: a FIFO pre-queue is admitted in order of joining, and people
// who join after opening wait behind it (in either order).
func testFIFO(t *testing.T, r dibs.Room) {
	h := newHarness(t, r, NewDrop(100, 20, dibs.OrderFIFO, epoch.Add(time.Second)), options{})
	var users []string
	for i := range 30 {
		u := fmt.Sprintf("u%d", i)
		users = append(users, u)
		if st := h.join(u); st.Position != uint64(i+1) || st.Ahead() != uint64(i) {
			t.Fatalf("%s before opening: %+v, want position %d", u, st, i+1)
		}
	}
	for h.now().Before(h.drop.OpensAt) {
		h.step()
	}
	for i := range 10 {
		u := fmt.Sprintf("late%d", i)
		users = append(users, u)
		if st := h.join(u); st.Number != uint64(31+i) {
			t.Fatalf("%s: ticket %d, want %d", u, st.Number, 31+i)
		}
	}
	for served := uint64(0); served < 40; {
		h.step()
		served = h.info().Serving
		for _, u := range users {
			st := h.status(u)
			if admitted := st.State == dibs.QueueAdmitted; admitted != (st.Number <= served) {
				t.Fatalf("%d served: %s (ticket %d) reads %s", served, u, st.Number, st.State)
			}
		}
		if h.now().Sub(h.drop.OpensAt) > 10*time.Second {
			t.Fatalf("only %d served", served)
		}
	}
}

// testETA: people join a queue admitted at a steady rate; the ETA each is
// shown at joining is within ±20% of when they are admitted.
func testETA(t *testing.T, r dibs.Room) {
	const rate = 40
	h := newHarness(t, r, NewDrop(1_000_000, rate, dibs.OrderShuffle, epoch), options{})
	h.step() // open
	type join struct {
		at  time.Time
		eta time.Duration
		n   uint64
	}
	joins := map[string]*join{}
	admittedAt := map[string]time.Time{}
	arrivals := 0.0
	const perSecond = 60 // faster than the rate: the queue grows
	for h.now().Sub(epoch) < 30*time.Second {
		for arrivals += perSecond * h.tick.Seconds(); arrivals >= 1 && h.now().Sub(epoch) < 15*time.Second; arrivals-- {
			u := fmt.Sprintf("u%d", len(joins))
			st := h.join(u)
			joins[u] = &join{at: h.now(), eta: st.ETA, n: st.Number}
		}
		h.step()
		for u := range joins {
			if _, ok := admittedAt[u]; ok {
				continue
			}
			if st := h.status(u); st.State == dibs.QueueAdmitted {
				admittedAt[u] = h.now()
				if err := h.claim(u, st.Admission); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	checked := 0
	for u, j := range joins {
		at, ok := admittedAt[u]
		if !ok {
			t.Fatalf("%s (ticket %d) never admitted", u, j.n)
		}
		waited := at.Sub(j.at)
		if j.eta < 2*time.Second {
			continue // within a few ticks, the tick dominates: checked below in absolute terms
		}
		checked++
		if lo, hi := j.eta*8/10, j.eta*12/10; waited < lo || waited > hi {
			t.Errorf("%s (ticket %d): ETA %s at joining, admitted after %s", u, j.n, j.eta, waited)
		}
	}
	for u, j := range joins {
		if waited := admittedAt[u].Sub(j.at); j.eta < 2*time.Second && (waited-j.eta).Abs() > 400*time.Millisecond {
			t.Errorf("%s (ticket %d): ETA %s at joining, admitted after %s", u, j.n, j.eta, waited)
		}
	}
	if checked < 300 {
		t.Fatalf("only %d people had an ETA of 2s or more", checked)
	}
}

// testReleased: with every slot held and nobody paid, the room waits (a
// hold may come back); releasing k holds admits exactly k more people.
func testReleased(t *testing.T, r dibs.Room) {
	const stock = 10
	h := newHarness(t, r, NewDrop(stock, 100, dibs.OrderShuffle, epoch), options{})
	h.hold = true
	h.step()
	for i := range 50 {
		h.join(fmt.Sprintf("u%d", i))
	}
	admitAll := func() {
		for i := range 50 {
			u := fmt.Sprintf("u%d", i)
			if st := h.status(u); st.State == dibs.QueueAdmitted && !h.won[u] {
				if err := h.claim(u, st.Admission); err != nil {
					t.Fatalf("claim by %s: %v", u, err)
				}
			}
		}
	}
	for range 20 {
		h.step()
		admitAll()
	}
	if in := h.info(); in.Serving != stock || in.SoldOut || h.wins.Load() != stock {
		t.Fatalf("all held: %+v, %d wins; want %d served, not sold out", in, h.wins.Load(), stock)
	}
	if st := h.status(h.waiting()); st.State != dibs.QueueWaiting {
		t.Fatalf("a waiting ticket reads %+v while holds may come back", st)
	}

	h.stock.Release(3)
	h.svc.Released(ctx, h.drop.ID, 3)
	for range 20 {
		h.step()
		admitAll()
	}
	if in := h.info(); in.Serving != stock+3 || h.wins.Load() != stock+3 {
		t.Fatalf("after releasing 3: %+v, %d wins; want %d served", in, h.wins.Load(), stock+3)
	}

	h.stock.Held.Store(0) // every hold paid: nothing can come back
	for range 11 {
		h.step()
	}
	if in := h.info(); in.Serving != stock+3 || !in.SoldOut {
		t.Fatalf("all paid: %+v, want sold out", in)
	}
	if st := h.status(h.waiting()); st.State != dibs.QueueSoldOut {
		t.Fatalf("a waiting ticket reads %s once nothing can come back", st.State)
	}
}

// waiting returns a user who has not won.
func (h *harness) waiting() string {
	for i := 0; ; i++ {
		if u := fmt.Sprintf("u%d", i); !h.won[u] {
			return u
		}
	}
}

// testExpired: admitted people who do not claim lose their turn after the
// admission TTL, and the room admits the next ones in their place.
func testExpired(t *testing.T, r dibs.Room) {
	const stock, ttl = 5, 3 * time.Second
	h := newHarness(t, r, NewDrop(stock, 100, dibs.OrderFIFO, epoch), options{ttl: ttl})
	for i := range 20 {
		h.join(fmt.Sprintf("u%d", i))
	}
	for range 10 {
		h.step()
	}
	first := h.status("u0")
	if first.State != dibs.QueueAdmitted || h.info().Serving != stock {
		t.Fatalf("u0: %+v, %d served; want admitted, %d served", first, h.info().Serving, stock)
	}
	if st := h.status("u5"); st.State != dibs.QueueWaiting || st.Position != 1 {
		t.Fatalf("u5: %+v, want first in line", st)
	}
	for h.now().Before(first.Expires.Add(2 * h.tick)) {
		h.step()
	}
	if st := h.status("u0"); st.State != dibs.QueueExpired || st.Admission != "" {
		t.Fatalf("u0 after its turn: %+v, want expired", st)
	}
	wantCode(t, h.claim("u0", first.Admission), dibs.EADMISSIONINVALID)
	// The expired turns' slots go to the next people after a short grace
	// (claims checked just before the expiry may still be finishing).
	st := h.status("u5")
	for st.State != dibs.QueueAdmitted && h.now().Before(first.Expires.Add(10*time.Second)) {
		h.step()
		st = h.status("u5")
	}
	if st.State != dibs.QueueAdmitted || h.info().Serving != 2*stock {
		t.Fatalf("u5 after the first turns expired: %+v, %d served", st, h.info().Serving)
	}
	if err := h.claim("u5", st.Admission); err != nil {
		t.Fatal(err)
	}
}

// testWinnersReadWon: once the admissions have expired, a ticket that won
// reads won and one that did not claim reads expired; a winner who joins
// the sold-out room again gets their ticket back (won), anybody else
// sold_out; after the close a winner still reads won.
func testWinnersReadWon(t *testing.T, r dibs.Room) {
	const stock, ttl = 3, 2 * time.Second
	h := newHarness(t, r, NewDrop(stock, 100, dibs.OrderFIFO, epoch), options{ttl: ttl})
	for i := range 6 {
		h.join(fmt.Sprintf("u%d", i))
	}
	for range 3 {
		h.step()
	}
	var expires time.Time
	for _, u := range []string{"u0", "u1"} {
		st := h.status(u)
		if st.State != dibs.QueueAdmitted {
			t.Fatalf("%s: %+v, want admitted", u, st)
		}
		if err := h.claim(u, st.Admission); err != nil {
			t.Fatal(err)
		}
		if again := h.status(u); again.State != dibs.QueueAdmitted || again.Admission == "" {
			t.Fatalf("%s after winning, within the admission: %+v, want admitted (claiming again returns the claim)", u, again)
		}
		expires = st.Expires
	}
	for h.now().Before(expires.Add(h.tick)) {
		h.step()
	}
	for u, want := range map[string]dibs.QueueState{"u0": dibs.QueueWon, "u1": dibs.QueueWon, "u2": dibs.QueueExpired} {
		if st := h.status(u); st.State != want || st.Admission != "" || st.PollAfter != 0 || !st.Terminal() {
			t.Fatalf("%s after the admissions expired: %+v, want %s", u, st, want)
		}
	}
	// u2's turn passes to u3, who wins the last slot: sold out.
	var st dibs.QueueStatus
	for st = h.status("u3"); st.State != dibs.QueueAdmitted && h.now().Before(expires.Add(time.Minute)); st = h.status("u3") {
		h.step()
	}
	if err := h.claim("u3", st.Admission); err != nil {
		t.Fatalf("u3: %+v: %v", st, err)
	}
	for !h.info().SoldOut && h.now().Before(expires.Add(2*time.Minute)) {
		h.step()
	}
	if st := h.status("u5"); st.State != dibs.QueueSoldOut {
		t.Fatalf("u5 in the sold-out room: %+v", st)
	}
	for _, c := range []struct {
		user string
		want dibs.QueueState // "": refused, sold out
	}{{"u0", dibs.QueueWon}, {"u3", dibs.QueueAdmitted}, {"u2", ""}, {"u5", ""}, {"late", ""}} {
		st, err := h.svc.Join(ctx, h.drop, c.user)
		switch {
		case c.want == "" && dibs.ErrorCode(err) != dibs.ESOLDOUT:
			t.Fatalf("%s joins the sold-out room: %+v %v, want sold_out", c.user, st, err)
		case c.want != "" && (err != nil || st.State != c.want || !st.Existing || st.Ticket == ""):
			t.Fatalf("%s joins the sold-out room: %+v %v, want their ticket, %s", c.user, st, err, c.want)
		}
	}
	closed := *h.drop
	closed.Status = dibs.StatusClosed
	h.drop = &closed
	h.stock.Drop.Store(&closed)
	h.step()
	for u, want := range map[string]dibs.QueueState{"u0": dibs.QueueWon, "u2": dibs.QueueClosed, "u5": dibs.QueueClosed} {
		if st := h.status(u); st.State != want {
			t.Fatalf("%s after the close: %s, want %s", u, st.State, want)
		}
	}
	if st, err := h.svc.Join(ctx, h.drop, "u0"); err != nil || st.State != dibs.QueueWon {
		t.Fatalf("u0 joins the closed room: %+v %v, want their ticket, won", st, err)
	}
	for _, u := range []string{"u2", "u5", "late"} {
		if _, err := h.svc.Join(ctx, h.drop, u); dibs.ErrorCode(err) != dibs.ECLOSED {
			t.Fatalf("%s joins the closed room: %v, want closed", u, err)
		}
	}
}

// testETAPastStock: people the free stock can reach get an ETA from the
// pace; people past it get none (they get in only if slots come back).
func testETAPastStock(t *testing.T, r dibs.Room) {
	const stock, rate = 100, 10
	h := newHarness(t, r, NewDrop(stock, rate, dibs.OrderFIFO, epoch), options{})
	h.step()
	for i := range 300 {
		h.join(fmt.Sprintf("u%d", i))
	}
	h.step()
	served := h.info().Serving
	for _, c := range []struct {
		user  string
		known bool
	}{{"u50", true}, {fmt.Sprintf("u%d", stock-1), true}, {fmt.Sprintf("u%d", stock), false}, {"u299", false}} {
		st := h.status(c.user)
		if st.State != dibs.QueueWaiting || (st.ETA >= 0) != c.known {
			t.Fatalf("%s at position %d (%d served, stock %d): ETA %s, want known %v", c.user, st.Position, served, stock, st.ETA, c.known)
		}
		if c.known {
			if want := time.Duration(float64(st.Position) / rate * float64(time.Second)); (st.ETA - want).Abs() > want/5 {
				t.Fatalf("%s at position %d: ETA %s, want about %s", c.user, st.Position, st.ETA, want)
			}
		}
	}
}

// testETAHeld: while every free slot is held by an unpaid claim, nobody is
// admitted and nobody waiting gets an ETA, however long it lasts: not one
// from a rate decaying toward zero, nor from the configured rate once the
// measured one is zero.
func testETAHeld(t *testing.T, r dibs.Room) {
	const stock, rate = 10, 100
	h := newHarness(t, r, NewDrop(stock, rate, dibs.OrderFIFO, epoch), options{node: "leader"})
	h.hold = true
	for i := range 30 {
		h.join(fmt.Sprintf("u%d", i))
	}
	for range 5 {
		h.step()
		for i := range 30 {
			u := fmt.Sprintf("u%d", i)
			if st := h.status(u); st.State == dibs.QueueAdmitted && !h.won[u] {
				if err := h.claim(u, st.Admission); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if h.wins.Load() != stock {
		t.Fatalf("%d wins, want the stock %d held", h.wins.Load(), stock)
	}
	start := h.now()
	for _, after := range []time.Duration{time.Second, 5 * time.Second, 30 * time.Second} {
		for h.now().Sub(start) < after {
			h.step()
		}
		if st := h.status("u10"); st.State != dibs.QueueWaiting || st.ETA >= 0 || st.PollAfter <= 0 {
			t.Fatalf("u10 %s into the holds: %+v, want waiting with no ETA", after, st)
		}
	}
	// Even a measured rate of exactly zero (the end of a long decay) is not
	// replaced by the configured one.
	st, _ := mustSync(t, r, h.drop.ID, "leader")
	if _, err := r.Advance(ctx, h.drop.ID, "leader", dibs.Advance{Now: h.now(), BatchWindow: time.Second, ExpireBefore: h.now().Add(-time.Hour), Rate: 0, Remaining: st.Remaining}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.step()
	}
	if st := h.status("u10"); st.ETA >= 0 {
		t.Fatalf("u10 with a measured rate of zero: %+v, want no ETA", st)
	}
	// A hold comes back: the next person is admitted; the ones behind still
	// wait on holds.
	h.stock.Release(1)
	h.svc.Released(ctx, h.drop.ID, 1)
	h.step()
	if st := h.status("u10"); st.State != dibs.QueueAdmitted {
		t.Fatalf("u10 after a hold came back: %+v, want admitted", st)
	}
	if st := h.status("u11"); st.State != dibs.QueueWaiting || st.ETA >= 0 {
		t.Fatalf("u11 after one hold came back: %+v, want waiting with no ETA", st)
	}
}

// testLastCall: once every free slot is promised to admissions not yet
// claimed, the people waiting are asked back within the last call, spread
// out, not all at the floor; the admitted ones claim and the room sells out.
func testLastCall(t *testing.T, r dibs.Room) {
	const stock = 5
	h := newHarness(t, r, NewDrop(stock, 100, dibs.OrderFIFO, epoch), options{})
	for i := range 200 {
		h.join(fmt.Sprintf("u%d", i))
	}
	h.step()
	h.step()
	if in := h.info(); in.Serving != stock || in.SoldOut {
		t.Fatalf("%+v, want the stock admitted and not sold out", in)
	}
	advice := map[time.Duration]bool{}
	for i := stock; i < 200; i++ {
		st := h.status(fmt.Sprintf("u%d", i))
		if st.State != dibs.QueueWaiting || st.PollAfter < room.LastCallMin || st.PollAfter >= room.LastCallMax {
			t.Fatalf("u%d while the last slots are promised: %+v, want waiting, asked back within %s..%s", i, st, room.LastCallMin, room.LastCallMax)
		}
		advice[st.PollAfter] = true
	}
	if len(advice) < 32 {
		t.Fatalf("%d distinct returns advised to 195 people, want them spread", len(advice))
	}
	for i := range stock {
		u := fmt.Sprintf("u%d", i)
		if err := h.claim(u, h.status(u).Admission); err != nil {
			t.Fatal(err)
		}
	}
	h.step()
	if st := h.status("u199"); st.State != dibs.QueueSoldOut {
		t.Fatalf("u199 after the last claims: %+v, want sold_out", st)
	}
}

func testAdmissionChecks(t *testing.T, r dibs.Room) {
	h := newHarness(t, r, NewDrop(10, 100, dibs.OrderShuffle, epoch), options{})
	h.join("alice")
	h.join("bob")
	h.step()
	h.step()
	st := h.status("alice")
	if st.State != dibs.QueueAdmitted {
		t.Fatalf("alice: %+v", st)
	}
	other := NewDrop(10, 100, dibs.OrderShuffle, epoch)
	h.src.Add(other)
	otherStatus, err := h.svc.Join(ctx, other, "alice")
	if err != nil {
		t.Fatal(err)
	}
	h.step()
	h.step()
	otherStatus, err = h.svc.Status(ctx, other, "alice", otherStatus.Ticket)
	if err != nil || otherStatus.Admission == "" {
		t.Fatalf("alice in the other drop: %+v %v", otherStatus, err)
	}
	forged := []byte(st.Admission)
	forged[5] ^= 1
	for _, c := range []struct {
		name, user, token string
		code              string
	}{
		{"none", "alice", "", dibs.EADMISSIONREQUIRED},
		{"forged", "alice", string(forged), dibs.EADMISSIONINVALID},
		{"garbage", "alice", "a1.nope", dibs.EADMISSIONINVALID},
		{"a ticket", "alice", h.tickets["alice"], dibs.EADMISSIONINVALID},
		{"someone else's", "bob", st.Admission, dibs.EADMISSIONINVALID},
		{"another drop's", "alice", otherStatus.Admission, dibs.EADMISSIONINVALID},
	} {
		wantCode(t, h.claim(c.user, c.token), c.code)
	}
	if _, err := h.svc.Status(ctx, h.drop, "bob", h.tickets["alice"]); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Fatalf("bob reading alice's ticket: %v, want not_found", err)
	}
	if err := h.claim("alice", st.Admission); err != nil {
		t.Fatalf("alice's own admission: %v", err)
	}
	h.clock.Add(h.svc.AdmissionTTL())
	wantCode(t, h.claim("alice", st.Admission), dibs.EADMISSIONINVALID)
}

func testClosed(t *testing.T, r dibs.Room) {
	h := newHarness(t, r, NewDrop(10, 1, dibs.OrderShuffle, epoch), options{})
	for i := range 5 {
		h.join(fmt.Sprintf("u%d", i))
	}
	h.step()
	closed := *h.drop
	closed.Status = dibs.StatusClosed
	h.drop = &closed
	h.stock.Drop.Store(&closed)
	h.step()
	if st := h.status("u4"); st.State != dibs.QueueClosed || st.PollAfter != 0 {
		t.Fatalf("closed drop: %+v", st)
	}
	_, err := h.svc.Join(ctx, h.drop, "late")
	wantCode(t, err, dibs.ECLOSED)
	direct := NewDrop(10, 1, dibs.OrderShuffle, epoch)
	direct.Admission = dibs.Admission{Mode: dibs.AdmissionDirect}
	_, err = h.svc.Join(ctx, direct, "u1")
	wantCode(t, err, dibs.ECONFLICT)
}

// testOneLeader: two nodes over one backend; only one advances the room,
// and when it stops the other takes over after the lease.
func testOneLeader(t *testing.T, r dibs.Room) {
	d := NewDrop(1000, 50, dibs.OrderShuffle, epoch)
	clock := NewClock(epoch)
	src := NewSource()
	src.Add(d)
	node := func(name string) *room.Service {
		svc, err := room.New(room.Config{Backend: r, Secret: Secret, Now: clock.Now, Node: name, LeaseTTL: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	a, b := node("a"), node("b")
	for i := range 500 {
		if _, err := a.Join(ctx, d, fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 { // one simulated second, both nodes ticking
		clock.Add(100 * time.Millisecond)
		a.Tick(ctx, src)
		b.Tick(ctx, src)
	}
	in, _ := b.Info(ctx, d)
	if in.Serving < 45 || in.Serving > 55 {
		t.Fatalf("two nodes served %d in a second at 50/s: more than one leader?", in.Serving)
	}
	// a stops; b leads once a's lease (on the backend's clock) runs out.
	deadline := time.Now().Add(testenv.WaitTimeout)
	before := in.Serving
	for in.Serving == before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		clock.Add(100 * time.Millisecond)
		b.Tick(ctx, src)
		in, _ = b.Info(ctx, d)
	}
	if in.Serving == before {
		t.Fatal("b never took over")
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}
