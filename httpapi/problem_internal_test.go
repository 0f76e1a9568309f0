package httpapi

import (
	"encoding/json"
	"net/http"
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
