package room_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/room"
)

// stock is a room.Source with one drop and a count of free slots.
type stock struct {
	drop *dibs.Drop
	left int64
}

func (s *stock) Drops() []*dibs.Drop                                  { return []*dibs.Drop{s.drop} }
func (s *stock) Remaining(context.Context, string) (int64, error)     { return s.left, nil }
func (s *stock) Returning(context.Context, *dibs.Drop) (int64, error) { return 0, nil }

// A person joins the waiting room of a queued drop, the room admits them,
// and the admission they present with their claim checks out.
func Example() {
	ctx := context.Background()
	now := time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	d := &dibs.Drop{ID: "pepero", Title: "Pepero Day", Kind: dibs.KindCoupon, Stock: 1111, OpensAt: now,
		Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 100}}
	d.Normalize(now)
	src := &stock{drop: d, left: d.Stock}

	svc, _ := room.New(room.Config{Backend: memory.NewRoom(), Secret: []byte("example-room-secret-0123456789ab"), Now: clock})
	st, _ := svc.Join(ctx, d, "alice")
	fmt.Println("joined:", st.State, "ticket", st.Number)

	now = now.Add(room.DefaultTick)
	svc.Tick(ctx, src) // what Start runs once per tick
	st, _ = svc.Status(ctx, d, "alice", st.Ticket)
	fmt.Println("then:", st.State)

	pass, err := svc.Check(ctx, d, "alice", st.Admission, now)
	fmt.Println("claim key:", pass.ClaimKey(), err)
	_, err = svc.Check(ctx, d, "bob", st.Admission, now)
	fmt.Println("bob:", dibs.ErrorCode(err))
	// Output:
	// joined: waiting ticket 1
	// then: admitted
	// claim key: admission-1 <nil>
	// bob: admission_invalid
}
