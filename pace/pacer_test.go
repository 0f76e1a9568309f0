package pace_test

import (
	"context"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/pace"
)

type fakeHealth struct{ h pace.Health }

func (f *fakeHealth) Health(context.Context, *dibs.Drop) (pace.Health, error) { return f.h, nil }

type fakeRates struct{ set []int }

func (f *fakeRates) SetPacedRate(_ context.Context, _ string, rate int) error {
	f.set = append(f.set, rate)
	return nil
}

func TestPacerStepsOncePerTickFromTheRecordedRate(t *testing.T) {
	ctx := context.Background()
	health := &fakeHealth{h: pace.Health{LatencyTarget: time.Second, GatewayP99: 100 * time.Millisecond}}
	rates := &fakeRates{}
	p := pace.NewPacer(health, rates, time.Second)
	d := &dibs.Drop{ID: "d", Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 100, Pace: dibs.PaceAuto, MinRate: 10, MaxRate: 1000}}
	t0 := time.Unix(1_000_000, 0)

	if err := p.Pace(ctx, d, 500, 10_000, t0); err != nil {
		t.Fatal(err)
	}
	if len(rates.set) != 1 || rates.set[0] != 150 { // 100 + max(1, 1000/20)
		t.Fatalf("healthy step set %v, want [150]", rates.set)
	}
	if err := p.Pace(ctx, d, 500, 10_000, t0.Add(500*time.Millisecond)); err != nil || len(rates.set) != 1 {
		t.Fatalf("a second step within the tick: %v, %v", rates.set, err)
	}

	// The gateway slows: the rate the record has (150) is halved.
	d.Admission.Rate = 150
	health.h.GatewayP99 = 3 * time.Second
	if err := p.Pace(ctx, d, 500, 10_000, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := rates.set[len(rates.set)-1]; got != 75 {
		t.Fatalf("slow gateway: rate %d, want 75", got)
	}
	if p.Reason("d") != pace.ReasonLatency {
		t.Fatalf("reason %q", p.Reason("d"))
	}

	// Nobody waits: the rate holds and nothing is written.
	d.Admission.Rate = 75
	health.h.GatewayP99 = 0
	n := len(rates.set)
	if err := p.Pace(ctx, d, 0, 10_000, t0.Add(2*time.Second)); err != nil || len(rates.set) != n {
		t.Fatalf("idle: %v, %v", rates.set, err)
	}

	// A fixed pace is left alone.
	d.Admission = dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 100}
	if err := p.Pace(ctx, d, 500, 10_000, t0.Add(10*time.Second)); err != nil || len(rates.set) != n {
		t.Fatalf("fixed pace: %v, %v", rates.set, err)
	}
}

func TestPacerNewBoundsTakeANewController(t *testing.T) {
	ctx := context.Background()
	rates := &fakeRates{}
	p := pace.NewPacer(&fakeHealth{}, rates, time.Second)
	d := &dibs.Drop{ID: "d", Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 100, Pace: dibs.PaceAuto, MinRate: 10, MaxRate: 1000}}
	t0 := time.Unix(1_000_000, 0)
	_ = p.Pace(ctx, d, 500, 10_000, t0)
	d.Admission.Rate, d.Admission.MaxRate = 100, 110
	_ = p.Pace(ctx, d, 500, 10_000, t0.Add(100*time.Millisecond)) // new bounds: steps at once
	if got := rates.set[len(rates.set)-1]; got != 105 {           // 100 + max(1, 110/20)
		t.Fatalf("after new bounds: rate %d, want 105 (sets %v)", got, rates.set)
	}
}
