package redis_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/gatetest"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/redis"
)

var t0 = time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)

// TestDifferential runs the same random operations (reserve, retry with
// and without keys, retry of a released key, release, confirm, status,
// restore, rebuild from the record) against the memory gate and the Redis gate, and wants the same
// answer to each: codes, slots, nths, claims, keys, flags.
func TestDifferential(t *testing.T) {
	t.Parallel()
	client := MustClient(t, testenv.RedisURL(t))
	prefix := testenv.RedisPrefix(t, client)
	run := 0
	var local float64 // answers the Redis gates gave from memory
	defer func() {
		if !t.Failed() && local == 0 {
			t.Error("no sold-out answer came from memory: the cache path was never compared")
		}
	}()
	rapid.Check(t, func(rt *rapid.T) {
		run++
		newRedis := func() *redis.Gate {
			run++
			g := redis.NewGate(client, redis.GateOptions{Prefix: fmt.Sprintf("%s%d:", prefix, run), LoadChunk: 2, Timeout: 10 * time.Second})
			if err := g.Start(context.Background()); err != nil {
				rt.Fatal(err)
			}
			return g
		}
		ctx := context.Background()
		mem, red := dibs.Gate(memory.NewGate()), newRedis()
		stop := func() {
			local += calls(t, red, "dibs_gate_sold_out_local_total", "")
			red.Stop()
		}
		defer func() { stop() }()

		d := gatetest.NewDrop(rapid.Int64Range(1, 6).Draw(rt, "stock"), rapid.IntRange(1, 3).Draw(rt, "limit"))
		d.OpensAt, d.ClosesAt = t0, t0.Add(time.Hour)
		status := dibs.StatusActive
		for _, g := range []dibs.Gate{mem, red} {
			if err := g.Prepare(ctx, d, nil); err != nil {
				rt.Fatal(err)
			}
		}

		users := []string{"ann", "bob", "cyd", "dee"}
		keys := []string{"", "", "k1", "k2", "k3"}
		times := []time.Time{t0.Add(-time.Second), t0.Add(time.Minute), t0.Add(time.Minute), t0.Add(time.Minute), t0.Add(2 * time.Hour)}
		var claimIDs []string
		seq := 0
		newID := func() string { seq++; return fmt.Sprintf("c%d", seq) }

		for step := range rapid.IntRange(1, 50).Draw(rt, "steps") {
			switch op := rapid.IntRange(0, 9).Draw(rt, "op"); op {
			case 0, 1, 2, 3: // reserve
				req := dibs.ReserveRequest{
					Drop: d, UserID: rapid.SampledFrom(users).Draw(rt, "user"), IdempotencyKey: rapid.SampledFrom(keys).Draw(rt, "key"),
					ClaimID: newID(), Now: rapid.SampledFrom(times).Draw(rt, "now"),
				}
				if len(claimIDs) > 0 && rapid.IntRange(0, 3).Draw(rt, "unrecorded") == 0 {
					req.Unrecorded = rapid.SampledFrom(claimIDs).Draw(rt, "unrecorded claim")
				}
				hm, em := mem.Reserve(ctx, req)
				hr, er := red.Reserve(ctx, req)
				sameErr(rt, step, "reserve", em, er)
				sameHold(rt, step, hm, hr)
				if em == nil && !hm.Existing {
					claimIDs = append(claimIDs, hm.ClaimID)
				}
				if dibs.ErrorCode(er) == dibs.ESOLDOUT && rapid.Bool().Draw(rt, "settle") {
					red.Settle(d.ID)
				}
			case 4: // release, sometimes of a claim that is gone or never was
				id := "nope"
				if len(claimIDs) > 0 && rapid.IntRange(0, 5).Draw(rt, "bogus") > 0 {
					id = rapid.SampledFrom(claimIDs).Draw(rt, "claim")
				}
				okm, em := mem.Release(ctx, d.ID, id)
				okr, er := red.Release(ctx, d.ID, id)
				sameErr(rt, step, "release", em, er)
				if okm != okr {
					rt.Fatalf("step %d: release %s = %v (memory), %v (redis)", step, id, okm, okr)
				}
			case 5: // confirm
				if len(claimIDs) == 0 {
					continue
				}
				ids := rapid.SliceOfNDistinct(rapid.SampledFrom(claimIDs), 1, 3, rapid.ID).Draw(rt, "confirm")
				sameErr(rt, step, "confirm", mem.Confirm(ctx, d.ID, ids...), red.Confirm(ctx, d.ID, ids...))
			case 6: // status
				status = rapid.SampledFrom([]dibs.Status{dibs.StatusActive, dibs.StatusActive, dibs.StatusPaused, dibs.StatusClosed}).Draw(rt, "status")
				sameErr(rt, step, "status", mem.SetStatus(ctx, d.ID, status), red.SetStatus(ctx, d.ID, status))
			case 7: // restore a claim the record has and the gate lost
				c := &dibs.Claim{
					ID: newID(), DropID: d.ID, UserID: rapid.SampledFrom(users).Draw(rt, "ruser"),
					Slot: rapid.Int64Range(1, d.Stock).Draw(rt, "rslot"), Nth: rapid.IntRange(1, d.PerUserLimit).Draw(rt, "rnth"),
					IdempotencyKey: rapid.SampledFrom(keys).Draw(rt, "rkey"), CreatedAt: t0, State: dibs.ClaimConfirmed,
				}
				okm, em := mem.Restore(ctx, c)
				okr, er := red.Restore(ctx, c)
				sameErr(rt, step, "restore", em, er)
				if okm != okr {
					rt.Fatalf("step %d: restore %+v = %v (memory), %v (redis)", step, c, okm, okr)
				}
				claimIDs = append(claimIDs, c.ID)
			case 8: // both lose their state and rebuild from the record: the memory gate's holds
				record := holdsOf(rt, mem, d.ID)
				slices.SortFunc(record, func(a, b dibs.Hold) int { return cmp.Compare(a.Slot, b.Slot) })
				scan := func(ctx context.Context, fn func(*dibs.Claim) error) error {
					for _, h := range record {
						c := &dibs.Claim{ID: h.ClaimID, DropID: d.ID, UserID: h.UserID, Slot: h.Slot, Nth: h.Nth,
							IdempotencyKey: h.IdempotencyKey, CreatedAt: h.CreatedAt, State: dibs.ClaimConfirmed}
						if err := fn(c); err != nil {
							return err
						}
					}
					return nil
				}
				stop()
				mem, red = memory.NewGate(), newRedis()
				dc := *d
				dc.Status = status
				for _, g := range []dibs.Gate{mem, red} {
					if err := g.Prepare(ctx, &dc, scan); err != nil {
						rt.Fatal(err)
					}
				}
			case 9:
				lm, em := mem.Remaining(ctx, d.ID)
				lr, er := red.Remaining(ctx, d.ID)
				sameErr(rt, step, "remaining", em, er)
				if lm != lr {
					rt.Fatalf("step %d: remaining = %d (memory), %d (redis)", step, lm, lr)
				}
			}
			hm, hr := holdsOf(rt, mem, d.ID), holdsOf(rt, red, d.ID)
			if !slices.EqualFunc(hm, hr, func(a, b dibs.Hold) bool { return a == b || holdEqual(a, b) }) {
				rt.Fatalf("step %d: holds differ:\nmemory %+v\nredis  %+v", step, hm, hr)
			}
		}
	})
}

func holdsOf(rt *rapid.T, g dibs.Gate, dropID string) []dibs.Hold {
	var hs []dibs.Hold
	if err := g.Holds(context.Background(), dropID, func(h dibs.Hold) error { hs = append(hs, h); return nil }); err != nil {
		rt.Fatal(err)
	}
	slices.SortFunc(hs, func(a, b dibs.Hold) int { return cmp.Compare(a.ClaimID, b.ClaimID) })
	return hs
}

func holdEqual(a, b dibs.Hold) bool {
	a.CreatedAt, b.CreatedAt = a.CreatedAt.UTC(), b.CreatedAt.UTC()
	return a == b
}

func sameErr(rt *rapid.T, step int, op string, em, er error) {
	rt.Helper()
	if dibs.ErrorCode(em) != dibs.ErrorCode(er) {
		rt.Fatalf("step %d: %s: memory %v, redis %v", step, op, em, er)
	}
}

func sameHold(rt *rapid.T, step int, hm, hr dibs.Hold) {
	rt.Helper()
	if !holdEqual(hm, hr) {
		rt.Fatalf("step %d: reserve:\nmemory %+v\nredis  %+v", step, hm, hr)
	}
}
