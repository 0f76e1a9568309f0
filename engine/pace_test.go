package engine_test

import (
	"context"
	"testing"

	"github.com/dibs-io/dibs"
)

func TestSetAdmission(t *testing.T) {
	ctx := context.Background()
	e := setup(t).engine
	queued := &dibs.Drop{ID: "queued", Title: "t", Kind: dibs.KindCoupon, Stock: 10,
		Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 100}}
	direct := &dibs.Drop{ID: "direct", Title: "t", Kind: dibs.KindCoupon, Stock: 10}
	for _, d := range []*dibs.Drop{queued, direct} {
		if err := e.CreateDrop(ctx, d); err != nil {
			t.Fatal(err)
		}
	}

	d, err := e.SetAdmission(ctx, "queued", dibs.Admission{Rate: 300})
	if err != nil || d.Admission.Rate != 300 || d.Admission.Order != dibs.OrderShuffle {
		t.Fatalf("fixed rate: %+v, %v", d, err)
	}
	if got, _ := e.Drop("queued"); got.Admission.Rate != 300 {
		t.Fatalf("engine serves rate %d, want 300", got.Admission.Rate)
	}
	if _, err := e.SetAdmission(ctx, "queued", dibs.Admission{Rate: 0}); dibs.ErrorCode(err) != dibs.EINVALID {
		t.Fatalf("rate 0: %v, want invalid", err)
	}
	if _, err := e.SetAdmission(ctx, "direct", dibs.Admission{Rate: 10}); dibs.ErrorCode(err) != dibs.ECONFLICT {
		t.Fatalf("direct drop: %v, want conflict", err)
	}
	if _, err := e.SetAdmission(ctx, "nope", dibs.Admission{Rate: 10}); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Fatalf("unknown drop: %v, want not_found", err)
	}

	// A paced rate counts only while the pace is auto, within its bounds.
	if err := e.SetPacedRate(ctx, "queued", 50); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Drop("queued"); got.Admission.Rate != 300 {
		t.Fatalf("a fixed pace took a paced rate: %d", got.Admission.Rate)
	}
	if _, err := e.SetAdmission(ctx, "queued", dibs.Admission{Rate: 100, Pace: dibs.PaceAuto, MinRate: 20, MaxRate: 200}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetPacedRate(ctx, "queued", 5000); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Drop("queued"); got.Admission.Rate != 200 {
		t.Fatalf("paced rate %d, want the bound 200", got.Admission.Rate)
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Drop("queued"); got.Admission.Rate != 200 || got.Admission.Pace != dibs.PaceAuto {
		t.Fatalf("after refresh from the record: %+v", got.Admission)
	}
}
