package openapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dibs-io/dibs/httpapi/openapi"
)

func TestJSONIsTheYAML(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	if err := json.Unmarshal(openapi.JSON(), &doc); err != nil {
		t.Fatalf("JSON() is not JSON: %v", err)
	}
	if got := doc["openapi"]; got != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", got)
	}
	paths, _ := doc["paths"].(map[string]any)
	if len(paths) == 0 {
		t.Fatal("no paths")
	}
}

func TestToJSON(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"b: 1\na: [x, 2.5, true, null]\n", `{"b":1,"a":["x",2.5,true,null]}`},
		{"s: \"<&>\\u0007\"\nq: '1'\n", `{"s":"\u003c\u0026\u003e\u0007","q":"1"}`},
		{"a: &x {k: v}\nb: *x\n", `{"a":{"k":"v"},"b":{"k":"v"}}`},
		{"t: 2026-01-02\n", `{"t":"2026-01-02"}`},
	}
	for _, tt := range tests {
		got, err := openapi.ToJSON([]byte(tt.in))
		if err != nil {
			t.Errorf("ToJSON(%q): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("ToJSON(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"a: .inf\n", "? [1]\n: x\n", "a: 1\n---\nb: 2\n", ": :\n  - ["} {
		if _, err := openapi.ToJSON([]byte(bad)); err == nil {
			t.Errorf("ToJSON(%q) succeeded, want an error", bad)
		}
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	openapi.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec.Body.String() != string(openapi.JSON()) {
		t.Error("the body is not JSON()")
	}
}
