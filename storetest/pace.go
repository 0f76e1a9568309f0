package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
)

// testPace: an operator's change of a queued drop's pace is stored whole;
// a paced rate is taken only while the pace is auto, clamped to its bounds.
func testPace(t *testing.T, s dibs.Store) {
	ctx := context.Background()
	d := &dibs.Drop{ID: "paced", Title: "t", Kind: dibs.KindCoupon, Stock: 10, OpensAt: epoch,
		Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 100}}
	d.Normalize(epoch)
	if err := s.CreateDrop(ctx, d); err != nil {
		t.Fatal(err)
	}
	find := func() *dibs.Drop {
		t.Helper()
		got, err := s.FindDrop(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := find(); got.Admission != d.Admission {
		t.Fatalf("created admission %+v, want %+v", got.Admission, d.Admission)
	}
	if ok, err := s.SetPacedRate(ctx, d.ID, 50, epoch.Add(time.Second)); err != nil || ok {
		t.Fatalf("paced rate on a fixed pace = %v, %v; want false", ok, err)
	}
	if got := find(); got.Admission.Rate != 100 {
		t.Fatalf("a fixed pace took a paced rate: %+v", got.Admission)
	}

	auto := d.Admission
	auto.Pace, auto.MinRate, auto.MaxRate, auto.Rate = dibs.PaceAuto, 20, 400, 100
	at := epoch.Add(time.Minute)
	if err := s.SetDropAdmission(ctx, d.ID, auto, at); err != nil {
		t.Fatal(err)
	}
	if got := find(); got.Admission != auto || !got.UpdatedAt.Equal(at) {
		t.Fatalf("after the change: %+v updated %s, want %+v at %s", got.Admission, got.UpdatedAt, auto, at)
	}
	for _, c := range []struct {
		ask, want int
		changed   bool
	}{
		{50, 50, true},
		{50, 50, false}, // no change
		{1, 20, true},   // clamped to min
		{9000, 400, true},
	} {
		ok, err := s.SetPacedRate(ctx, d.ID, c.ask, at.Add(time.Second))
		if err != nil || ok != c.changed {
			t.Fatalf("SetPacedRate(%d) = %v, %v; want %v", c.ask, ok, err, c.changed)
		}
		if got := find(); got.Admission.Rate != c.want {
			t.Fatalf("after SetPacedRate(%d): rate %d, want %d", c.ask, got.Admission.Rate, c.want)
		}
	}
	if err := s.SetDropAdmission(ctx, "nope", auto, at); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Fatalf("admission of unknown = %v, want not_found", err)
	}
	if ok, err := s.SetPacedRate(ctx, "nope", 5, at); err != nil || ok {
		t.Fatalf("paced rate of unknown = %v, %v; want false, nil", ok, err)
	}
}
