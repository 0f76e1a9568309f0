package engine_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/room"
	"github.com/dibs-io/dibs/sqlite"
)

var _ room.Source = (*engine.Engine)(nil)

func withRoom(t *testing.T) (*bundle, *room.Service) {
	t.Helper()
	svc, err := room.New(room.Config{Backend: memory.NewRoom(), Secret: []byte("engine-test-room-secret-01234567")})
	if err != nil {
		t.Fatal(err)
	}
	b := open(t, t.TempDir()+"/dibs.db", func(c *engine.Config, _ *faultyStore) { c.Admissions = svc })
	return b, svc
}

func createQueued(t *testing.T, e *engine.Engine, id string, kind dibs.Kind, stock int64, perUser int) *dibs.Drop {
	t.Helper()
	d := &dibs.Drop{ID: id, Title: id, Kind: kind, Stock: stock, PerUserLimit: perUser,
		Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 100}}
	if err := e.CreateDrop(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// admitted joins user and steps the room until they are admitted.
func admitted(t *testing.T, e *engine.Engine, svc *room.Service, d *dibs.Drop, user string) dibs.QueueStatus {
	t.Helper()
	ctx := context.Background()
	st, err := svc.Join(ctx, d, user)
	if err != nil {
		t.Fatal(err)
	}
	ticket := st.Ticket
	for range 50 {
		svc.Tick(ctx, e)
		if st, err = svc.Status(ctx, d, user, ticket); err != nil {
			t.Fatal(err)
		} else if st.State == dibs.QueueAdmitted {
			return st
		}
	}
	t.Fatalf("%s never admitted: %+v", user, st)
	return st
}

// TestQueuedClaimsNeedAnAdmission: no admission, a bad one or someone
// else's are refused; a good one wins once, and every claim with it gets
// that claim back, whatever Idempotency-Key comes with it.
func TestQueuedClaimsNeedAnAdmission(t *testing.T) {
	t.Parallel()
	b, svc := withRoom(t)
	d := createQueued(t, b.engine, "q", dibs.KindCoupon, 5, 3)
	ctx := context.Background()
	_, _, err := b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "q", UserID: "alice"})
	wantCode(t, err, dibs.EADMISSIONREQUIRED)
	_, _, err = b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "q", UserID: "alice", Admission: "a1.forged"})
	wantCode(t, err, dibs.EADMISSIONINVALID)

	st := admitted(t, b.engine, svc, d, "alice")
	_, _, err = b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "q", UserID: "bob", Admission: st.Admission})
	wantCode(t, err, dibs.EADMISSIONINVALID)
	first, created, err := b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "q", UserID: "alice", Admission: st.Admission, IdempotencyKey: "k1"})
	if err != nil || !created {
		t.Fatalf("claim with admission: created=%v err=%v", created, err)
	}
	for _, key := range []string{"k1", "k2", ""} {
		again, created, err := b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "q", UserID: "alice", Admission: st.Admission, IdempotencyKey: key})
		if err != nil || created || again.ID != first.ID {
			t.Fatalf("again with key %q: %+v created=%v err=%v, want claim %s back", key, again, created, err, first.ID)
		}
	}
	if left, _ := b.gate.Remaining(ctx, "q"); left != 4 {
		t.Fatalf("remaining = %d, want 4: one admission, one win", left)
	}
}

// TestReleaseSlotAdmitsTheNext: a released hold goes back to the gate and
// the room admits exactly one more person in its place.
func TestReleaseSlotAdmitsTheNext(t *testing.T) {
	t.Parallel()
	b, svc := withRoom(t)
	d := createQueued(t, b.engine, "p", dibs.KindPurchase, 1, 1)
	ctx := context.Background()
	st := admitted(t, b.engine, svc, d, "alice")
	c, _, err := b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "p", UserID: "alice", Admission: st.Admission})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := svc.Join(ctx, d, "bob")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		svc.Tick(ctx, b.engine)
	}
	if st, _ := svc.Status(ctx, d, "bob", bob.Ticket); st.State != dibs.QueueWaiting {
		t.Fatalf("bob while alice holds the only slot: %s, want waiting (the hold may come back)", st.State)
	}
	if ok, err := b.engine.ReleaseSlot(ctx, "p", c.ID); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	// The record's side of a release (held → released) belongs to the
	// release flow; the gate's slot and the room's admission are here.
	admitted(t, b.engine, svc, d, "bob")
	if in, _ := svc.Info(ctx, d); in.Serving != 2 {
		t.Fatalf("served %d after one release, want 2", in.Serving)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := dibs.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

// usedCounter counts the wins the engine reports to the waiting room.
type usedCounter struct {
	*room.Service
	used atomic.Int64
}

func (u *usedCounter) Used(ctx context.Context, p dibs.Pass) {
	u.used.Add(1)
	u.Service.Used(ctx, p)
}

// TestReleasedAdmissionWinsOnce: alice's payment is declined and her hold
// released; the room admits bob in her place. Alice claiming again with
// her admission (still valid) gets her released claim back and takes no
// slot, so bob gets the one that came back, and the room counts one win
// for alice's admission.
func TestReleasedAdmissionWinsOnce(t *testing.T) {
	t.Parallel()
	svc, err := room.New(room.Config{Backend: memory.NewRoom(), Secret: []byte("engine-test-room-secret-01234567")})
	if err != nil {
		t.Fatal(err)
	}
	counter := &usedCounter{Service: svc}
	b := open(t, t.TempDir()+"/dibs.db", func(c *engine.Config, _ *faultyStore) { c.Admissions = counter })
	d := createQueued(t, b.engine, "p", dibs.KindPurchase, 1, 1)
	ctx := context.Background()

	alice := admitted(t, b.engine, svc, d, "alice")
	first, created, err := b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "p", UserID: "alice", Admission: alice.Admission})
	if err != nil || !created {
		t.Fatalf("alice: created=%v err=%v", created, err)
	}
	// The payment is declined: the record first, then the gate and the room.
	if _, changed, err := b.store.Store.(*sqlite.Store).SettlePayment(ctx, first.ID, false, time.Now()); err != nil || !changed {
		t.Fatalf("decline: changed=%v err=%v", changed, err)
	}
	if ok, err := b.engine.ReleaseSlot(ctx, "p", first.ID); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	bob := admitted(t, b.engine, svc, d, "bob")

	again, created, err := b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "p", UserID: "alice", Admission: alice.Admission})
	if err != nil || created || again.ID != first.ID || again.State != dibs.ClaimReleased {
		t.Fatalf("alice again = %+v created=%v err=%v; want her claim %s back, released", again, created, err, first.ID)
	}
	if left, _ := b.gate.Remaining(ctx, "p"); left != 1 {
		t.Fatalf("remaining after alice's retry = %d, want 1: the slot is bob's to take", left)
	}
	won, created, err := b.engine.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "p", UserID: "bob", Admission: bob.Admission})
	if err != nil || !created || won.Slot != first.Slot {
		t.Fatalf("bob = %+v created=%v err=%v; want the returned slot %d", won, created, err, first.Slot)
	}
	if n := counter.used.Load(); n != 2 {
		t.Fatalf("room told of %d wins, want 2 (alice once, bob once)", n)
	}
}

// TestFailedWriteKeyClaimsAgain: a claim whose write failed won nothing;
// its slot went back, and a retry with the same Idempotency-Key claims
// afresh once the record is back.
func TestFailedWriteKeyClaimsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 1, 2)
	ctx := context.Background()
	req := dibs.ClaimRequest{DropID: "d", UserID: "alice", IdempotencyKey: "order-1"}
	b.store.failWith(errors.New("disk full"))
	if _, _, err := b.engine.ClaimAndWait(ctx, req); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("claim during failure = %v, want unavailable", err)
	}
	b.store.heal()
	c, created, err := b.engine.ClaimAndWait(ctx, req)
	if err != nil || !created || c.IdempotencyKey != "order-1" {
		t.Fatalf("retry after heal = %+v created=%v err=%v, want a new claim with the key", c, created, err)
	}
	again, created, err := b.engine.ClaimAndWait(ctx, req)
	if err != nil || created || again.ID != c.ID {
		t.Fatalf("retry of the new claim = %+v created=%v err=%v, want %s", again, created, err, c.ID)
	}
}
