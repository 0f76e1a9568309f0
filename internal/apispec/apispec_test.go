package apispec_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dibs-io/dibs/internal/apispec"
)

// The document loads and validates as OpenAPI 3.1: the lint every build
// runs, whatever linters are installed.
func TestDocumentIsValid(t *testing.T) {
	t.Parallel()
	if _, err := apispec.Load(); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidDocument(t *testing.T) {
	t.Parallel()
	_, err := apispec.New([]byte(`{"openapi":"3.1.0","info":{"title":"x"},"paths":{"/a":{"get":{"responses":"no"}}}}`))
	if err == nil {
		t.Fatal("an invalid document was accepted")
	}
}

// Response must fail an answer the document does not describe, else the
// API tests built on it prove nothing.
func TestResponseCatchesDrift(t *testing.T) {
	t.Parallel()
	spec, err := apispec.Load()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ctype, body string
		status            int
		ok                bool
	}{
		{"healthy", "application/json", `{"status":"ok"}`, 200, true},
		{"wrong value", "application/json", `{"status":"fine"}`, 200, false},
		{"undeclared member", "application/json", `{"status":"ok","extra":1}`, 200, false},
		{"undeclared status", "application/json", `{"status":"ok"}`, 418, false},
		{"problem with a wrong code", "application/problem+json", `{"type":"urn:dibs:problem:sold_out","title":"x","status":503,"detail":"d","code":"sold_out"}`, 503, false},
		{"problem", "application/problem+json", `{"type":"urn:dibs:problem:overloaded","title":"Service Unavailable","status":503,"detail":"d","code":"overloaded"}`, 503, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "http://dibs.test/healthz", nil)
			resp := &http.Response{
				StatusCode: tt.status,
				Header:     http.Header{"Content-Type": {tt.ctype}, "Retry-After": {"1"}},
				Body:       io.NopCloser(strings.NewReader(tt.body)),
				Request:    req,
			}
			err := spec.Response(req, resp)
			if (err == nil) != tt.ok {
				t.Fatalf("Response: %v, want ok=%v", err, tt.ok)
			}
			if b, _ := io.ReadAll(resp.Body); string(b) != tt.body {
				t.Errorf("body after validation = %q, want it put back", b)
			}
		})
	}
}
