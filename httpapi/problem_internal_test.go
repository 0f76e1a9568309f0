package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
)

// FuzzAppendProblem: the hand-written problem body is byte for byte what
// encoding/json writes.
func FuzzAppendProblem(f *testing.F) {
	for _, s := range []string{"", "drop d is sold out", `quote " and \ back`, "<tag>&", "tab\tnewline\n", "ünïcode ☃", "\x00\x7f", "\xff invalid"} {
		f.Add(410, "sold_out", s)
	}
	f.Fuzz(func(t *testing.T, status int, code, detail string) {
		if status < 100 || status > 999 {
			return
		}
		want, err := json.Marshal(Problem{Type: ProblemType(code), Title: http.StatusText(status), Status: status, Detail: detail, Code: code})
		if err != nil {
			t.Fatal(err)
		}
		got := appendProblem(nil, status, code, detail)
		if string(got) != string(want)+"\n" {
			t.Fatalf("appendProblem = %s\njson.Marshal   = %s", got, want)
		}
	})
}

func TestClaimsPath(t *testing.T) {
	for _, tt := range []struct {
		path, id string
		ok       bool
	}{
		{"/v1/drops/pepero-day/claims", "pepero-day", true},
		{"/v1/drops/d/claims", "d", true},
		{"/v1/drops//claims", "", false},
		{"/v1/drops/a/b/claims", "", false},
		{"/v1/drops/../claims", "", false},
		{"/v1/drops/Pepero/claims", "", false},
		{"/v1/drops/d/claims/", "", false},
		{"/v1/drops/d", "", false},
		{"/v2/drops/d/claims", "", false},
	} {
		if id, ok := claimsPath(tt.path); id != tt.id && tt.ok || ok != tt.ok {
			t.Errorf("claimsPath(%q) = %q, %v; want %q, %v", tt.path, id, ok, tt.id, tt.ok)
		}
	}
}

// problemBody answers from its cache what appendProblem would encode, and
// the cache stops growing at maxBodies.
func TestProblemBodyCache(t *testing.T) {
	want := string(appendProblem(nil, 410, "sold_out", "Drop d is sold out."))
	for range 2 {
		if got := string(problemBody(410, "sold_out", "Drop d is sold out.")); got != want {
			t.Fatalf("problemBody = %s, want %s", got, want)
		}
	}
	for i := range maxBodies + 10 {
		problemBody(409, "limit_reached", "detail "+strconv.Itoa(i))
	}
	if n := bodiesKept.Load(); n > maxBodies {
		t.Errorf("%d bodies kept, want at most %d", n, maxBodies)
	}
	if got := string(problemBody(409, "limit_reached", "past the bound")); got != string(appendProblem(nil, 409, "limit_reached", "past the bound")) {
		t.Errorf("past the bound: %s", got)
	}
}
