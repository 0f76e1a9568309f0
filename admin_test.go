package dibs_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/dibs-io/dibs"
)

func TestSwitchesJSON(t *testing.T) {
	t.Parallel()
	var zero dibs.Switches
	if got, want := zero.String(), `{"claims":"on","queue_joins":"on","payments":"on","webhooks":"on"}`; got != want {
		t.Fatalf("zero = %s, want %s", got, want)
	}
	s := zero.With(dibs.SwitchPayments, false).With(dibs.SwitchWebhooks, false)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"claims":"on","queue_joins":"on","payments":"off","webhooks":"off"}`; string(b) != want {
		t.Fatalf("marshal = %s, want %s", b, want)
	}
	var back dibs.Switches
	if err := json.Unmarshal(b, &back); err != nil || back != s {
		t.Fatalf("round trip = %s, %v; want %s", back, err, s)
	}
	// Names left out keep their state.
	if err := json.Unmarshal([]byte(`{"claims":"off"}`), &back); err != nil {
		t.Fatal(err)
	}
	if want := s.With(dibs.SwitchClaims, false); back != want {
		t.Fatalf("partial = %s, want %s", back, want)
	}
	if d := back.Diff(s); !reflect.DeepEqual(d, map[dibs.Switch]bool{dibs.SwitchClaims: false}) {
		t.Fatalf("diff = %v", d)
	}
	if !back.With("nope", false).On("nope") || back.With("nope", false) != back {
		t.Fatal("an unknown switch changed the state")
	}
}

func TestParseSwitchChange(t *testing.T) {
	t.Parallel()
	got, err := dibs.ParseSwitchChange([]byte(` {"claims":"off", "webhooks":"on"} `))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[dibs.Switch]bool{dibs.SwitchClaims: false, dibs.SwitchWebhooks: true}; !reflect.DeepEqual(got, want) {
		t.Fatalf("change = %v, want %v", got, want)
	}
	for _, tc := range []struct{ body, says string }{
		{``, "JSON object"},
		{`null`, "not null"},
		{`{}`, "at least one switch"},
		{`[]`, "JSON object"},
		{`"claims"`, "JSON object"},
		{`{"claims":"off"`, "JSON object"},
		{`{"claims":"off"} {}`, "JSON object"},
		{`{"claim":"off"}`, `no switch "claim"`},
		{`{"Claims":"off"}`, `no switch "Claims"`},
		{`{"claims":"OFF"}`, `"on" or "off", not "OFF"`},
		{`{"claims":false}`, `"on" or "off", not false`},
		{`{"claims":null}`, `"on" or "off", not null`},
		{`{"claims":""}`, `"on" or "off"`},
		{`{"claims":{"on":true}}`, `"on" or "off"`},
	} {
		_, err := dibs.ParseSwitchChange([]byte(tc.body))
		if dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("%s: err = %v, want invalid", tc.body, err)
			continue
		}
		if msg := dibs.ErrorMessage(err); !strings.Contains(msg, tc.says) {
			t.Errorf("%s: message %q does not say %q", tc.body, msg, tc.says)
		}
	}
	var s dibs.Switches
	if err := json.Unmarshal([]byte(`{"claims":"maybe"}`), &s); dibs.ErrorCode(err) != dibs.EINVALID {
		t.Errorf("unmarshal of a bad value = %v, want invalid", err)
	}
}

func TestCheckSwitchChange(t *testing.T) {
	t.Parallel()
	if err := dibs.CheckSwitchChange(map[dibs.Switch]bool{dibs.SwitchQueueJoins: false}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []map[dibs.Switch]bool{nil, {}, {"nope": true}, {dibs.SwitchClaims: true, "": false}} {
		if err := dibs.CheckSwitchChange(c); dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("%v: err = %v, want invalid", c, err)
		}
	}
}

func TestActionListLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, want int }{
		{0, dibs.DefaultActionList}, {1, 1}, {dibs.MaxActionList, dibs.MaxActionList},
	} {
		if got, err := dibs.ActionListLimit(tc.n); err != nil || got != tc.want {
			t.Errorf("ActionListLimit(%d) = %d, %v; want %d", tc.n, got, err, tc.want)
		}
	}
	for _, n := range []int{-1, dibs.MaxActionList + 1} {
		if _, err := dibs.ActionListLimit(n); dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("ActionListLimit(%d) = %v, want invalid", n, err)
		}
	}
}

func TestSwitchesFromRecord(t *testing.T) {
	t.Parallel()
	got, err := dibs.SwitchesFromRecord([]byte(`{"claims":"off","queue_joins":"on","lights":"off"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := (dibs.Switches{}).With(dibs.SwitchClaims, false); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	for _, b := range []string{`{"claims":"maybe"}`, `[]`, `{"claims":false}`} {
		if _, err := dibs.SwitchesFromRecord([]byte(b)); err == nil {
			t.Errorf("%s: no error", b)
		}
	}
}
