package storetest

import (
	"context"
	"encoding/json"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
)

// AdminFactory returns a new, empty admin store isolated from every other
// test's.
type AdminFactory func(t *testing.T) dibs.AdminStore

// RunAdmin runs the conformance suite of the switches' record and the
// action log against stores made by newStore.
func RunAdmin(t *testing.T, newStore AdminFactory) {
	t.Run("SwitchesStartOn", func(t *testing.T) { t.Parallel(); testSwitchesStartOn(t, newStore(t)) })
	t.Run("SaveSwitchesByVersion", func(t *testing.T) { t.Parallel(); testSaveSwitches(t, newStore(t)) })
	t.Run("ConcurrentSavesOneWins", func(t *testing.T) { t.Parallel(); testConcurrentSaves(t, newStore(t)) })
	t.Run("ActionsNewestFirst", func(t *testing.T) { t.Parallel(); testActions(t, newStore(t)) })
	t.Run("ActionListBounds", func(t *testing.T) { t.Parallel(); testActionBounds(t, newStore(t)) })
	t.Run("InvalidActions", func(t *testing.T) { t.Parallel(); testInvalidActions(t, newStore(t)) })
}

func mustLoadSwitches(t *testing.T, s dibs.AdminStore) (dibs.Switches, int64) {
	t.Helper()
	sw, v, err := s.LoadSwitches(context.Background())
	if err != nil {
		t.Fatalf("load switches: %v", err)
	}
	return sw, v
}

func testSwitchesStartOn(t *testing.T, s dibs.AdminStore) {
	sw, v := mustLoadSwitches(t, s)
	if sw != (dibs.Switches{}) || v != 0 {
		t.Fatalf("fresh record = %s at version %d, want all on at 0", sw, v)
	}
	for _, name := range dibs.AllSwitches {
		if !sw.On(name) {
			t.Fatalf("fresh record has %s off", name)
		}
	}
}

func testSaveSwitches(t *testing.T, s dibs.AdminStore) {
	ctx := context.Background()
	off := dibs.Switches{}.With(dibs.SwitchClaims, false).With(dibs.SwitchWebhooks, false)
	v, err := s.SaveSwitches(ctx, off, 0)
	if err != nil || v != 1 {
		t.Fatalf("save at 0 = %d, %v; want 1, nil", v, err)
	}
	if got, gv := mustLoadSwitches(t, s); got != off || gv != 1 {
		t.Fatalf("load = %s at %d, want %s at 1", got, gv, off)
	}
	// A save that read version 0 comes too late.
	if _, err := s.SaveSwitches(ctx, dibs.Switches{}, 0); dibs.ErrorCode(err) != dibs.ECONFLICT {
		t.Fatalf("stale save = %v, want conflict", err)
	}
	if got, gv := mustLoadSwitches(t, s); got != off || gv != 1 {
		t.Fatalf("after stale save: %s at %d, want %s at 1", got, gv, off)
	}
	if _, err := s.SaveSwitches(ctx, dibs.Switches{}, 7); dibs.ErrorCode(err) != dibs.ECONFLICT {
		t.Fatalf("save at a future version = %v, want conflict", err)
	}
	on := off.With(dibs.SwitchClaims, true)
	if v, err := s.SaveSwitches(ctx, on, 1); err != nil || v != 2 {
		t.Fatalf("save at 1 = %d, %v; want 2, nil", v, err)
	}
	if got, gv := mustLoadSwitches(t, s); got != on || gv != 2 {
		t.Fatalf("load = %s at %d, want %s at 2", got, gv, on)
	}
}

// Of savers that read the same version, exactly one writes.
func testConcurrentSaves(t *testing.T, s dibs.AdminStore) {
	const savers = 8
	var wg sync.WaitGroup
	errs := make([]error, savers)
	for i := range savers {
		wg.Go(func() {
			sw := dibs.Switches{}.With(dibs.AllSwitches[i%len(dibs.AllSwitches)], false)
			_, errs[i] = s.SaveSwitches(context.Background(), sw, 0)
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch dibs.ErrorCode(err) {
		case "":
			won++
		case dibs.ECONFLICT:
		default:
			t.Fatalf("saver %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d savers of version 0 wrote, want 1", won)
	}
	if _, v := mustLoadSwitches(t, s); v != 1 {
		t.Fatalf("version = %d, want 1", v)
	}
}

func testActions(t *testing.T, s dibs.AdminStore) {
	ctx := context.Background()
	if got, err := s.ListActions(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("empty log = %v, %v", got, err)
	}
	at := time.Date(2026, 12, 7, 11, 0, 0, 123456000, time.UTC)
	want := []dibs.Action{
		{At: at, Actor: "sre-alice", Kind: dibs.ActionDropCreated, DropID: "phones", Detail: json.RawMessage(`{"stock":1000}`)},
		{At: at.Add(time.Second), Actor: "sre-bob", Kind: dibs.ActionSwitchFlipped, Detail: json.RawMessage(`{"changed":{"claims":"off"}}`)},
		{At: at.Add(2 * time.Second), Actor: "sre-alice", Kind: dibs.ActionDropPaused, DropID: "phones"},
	}
	var last int64
	for i := range want {
		id, err := s.AppendAction(ctx, want[i])
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if id <= last {
			t.Fatalf("append %d: id %d after %d, want it higher", i, id, last)
		}
		want[i].ID, last = id, id
	}
	got, err := s.ListActions(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d actions, want %d", len(got), len(want))
	}
	for i := range got {
		wantActionEqual(t, got[i], want[len(want)-1-i])
	}
	two, err := s.ListActions(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(two) != 2 || two[0].ID != want[2].ID || two[1].ID != want[1].ID {
		t.Fatalf("list of 2 = %+v, want the newest two, newest first", two)
	}
	if all, err := s.ListActions(ctx, 0); err != nil || len(all) != len(want) {
		t.Fatalf("list with the default limit = %d actions, %v; want %d", len(all), err, len(want))
	}
}

func wantActionEqual(t *testing.T, got, want dibs.Action) {
	t.Helper()
	if got.ID != want.ID || !got.At.Equal(want.At) || got.At.Location() != time.UTC || got.Actor != want.Actor ||
		got.Kind != want.Kind || got.DropID != want.DropID {
		t.Fatalf("action = %+v\nwant     %+v", got, want)
	}
	if (got.Detail == nil) != (want.Detail == nil) {
		t.Fatalf("action %d detail = %s, want %s", got.ID, got.Detail, want.Detail)
	}
	if want.Detail != nil {
		var g, w any
		if err := json.Unmarshal(got.Detail, &g); err != nil {
			t.Fatalf("action %d detail %s: %v", got.ID, got.Detail, err)
		}
		json.Unmarshal(want.Detail, &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("action %d detail = %s, want %s", got.ID, got.Detail, want.Detail)
		}
	}
}

func testActionBounds(t *testing.T, s dibs.AdminStore) {
	ctx := context.Background()
	for _, n := range []int{-1, dibs.MaxActionList + 1} {
		if _, err := s.ListActions(ctx, n); dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("list of %d = %v, want invalid", n, err)
		}
	}
	if _, err := s.ListActions(ctx, dibs.MaxActionList); err != nil {
		t.Errorf("list of %d = %v", dibs.MaxActionList, err)
	}
}

func testInvalidActions(t *testing.T, s dibs.AdminStore) {
	ctx := context.Background()
	ok := dibs.Action{At: epoch, Actor: "sre", Kind: dibs.ActionDropClosed}
	for name, mod := range map[string]func(*dibs.Action){
		"no time":         func(a *dibs.Action) { a.At = time.Time{} },
		"no actor":        func(a *dibs.Action) { a.Actor = "" },
		"no kind":         func(a *dibs.Action) { a.Kind = "" },
		"detail not JSON": func(a *dibs.Action) { a.Detail = json.RawMessage(`{"a":`) },
		"detail too large": func(a *dibs.Action) {
			a.Detail = json.RawMessage(`"` + string(repeat(dibs.MaxActionDetail-1, 'x')) + `"`)
		},
	} {
		a := ok
		mod(&a)
		if _, err := s.AppendAction(ctx, a); dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("%s: append = %v, want invalid", name, err)
		}
	}
	if got, err := s.ListActions(ctx, 0); err != nil || len(got) != 0 {
		t.Fatalf("after refused appends: %d actions, %v; want none", len(got), err)
	}
	// The largest detail allowed is taken.
	a := ok
	a.Detail = json.RawMessage(`"` + string(repeat(dibs.MaxActionDetail-2, 'x')) + `"`)
	if _, err := s.AppendAction(ctx, a); err != nil {
		t.Fatalf("append with a detail of %d bytes: %v", len(a.Detail), err)
	}
}

func repeat(n int, c byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
