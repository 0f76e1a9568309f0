package engine_test

import (
	"context"
	"testing"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/room"
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
func admitted(t *testing.T, e *engine.Engine, svc *room.Service, d *dibs.Drop, user string) room.Status {
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
	_, _, err := b.engine.Claim(ctx, engine.ClaimRequest{DropID: "q", UserID: "alice"})
	wantCode(t, err, dibs.EADMISSIONREQUIRED)
	_, _, err = b.engine.Claim(ctx, engine.ClaimRequest{DropID: "q", UserID: "alice", Admission: "a1.forged"})
	wantCode(t, err, dibs.EADMISSIONINVALID)

	st := admitted(t, b.engine, svc, d, "alice")
	_, _, err = b.engine.Claim(ctx, engine.ClaimRequest{DropID: "q", UserID: "bob", Admission: st.Admission})
	wantCode(t, err, dibs.EADMISSIONINVALID)
	first, created, err := b.engine.Claim(ctx, engine.ClaimRequest{DropID: "q", UserID: "alice", Admission: st.Admission, IdempotencyKey: "k1"})
	if err != nil || !created {
		t.Fatalf("claim with admission: created=%v err=%v", created, err)
	}
	for _, key := range []string{"k1", "k2", ""} {
		again, created, err := b.engine.Claim(ctx, engine.ClaimRequest{DropID: "q", UserID: "alice", Admission: st.Admission, IdempotencyKey: key})
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
	c, _, err := b.engine.Claim(ctx, engine.ClaimRequest{DropID: "p", UserID: "alice", Admission: st.Admission})
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
