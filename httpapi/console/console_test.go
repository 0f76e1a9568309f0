package console_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/dibs-io/dibs/httpapi/console"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	h := console.Handler()
	tests := []struct {
		method, path string
		status       int
		contentType  string
	}{
		{"GET", "/console", 200, "text/html; charset=utf-8"},
		{"HEAD", "/console", 200, "text/html; charset=utf-8"},
		{"GET", "/console/assets/console.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/console/assets/console.css", 200, "text/css; charset=utf-8"},
		{"GET", "/console/assets/uplot.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/console/assets/uplot.css", 200, "text/css; charset=utf-8"},
		{"GET", "/console/assets/uplot-LICENSE", 200, "text/plain; charset=utf-8"},
		{"GET", "/console/assets/nope.js", 404, "application/problem+json"},
		{"GET", "/console/assets/", 404, "application/problem+json"},
		{"GET", "/console/assets/console.go", 404, "application/problem+json"},
		{"GET", "/console/assets/uplot/uPlot.min.css", 404, "application/problem+json"},
		{"GET", "/console/assets/../console.html", 404, "application/problem+json"},
		{"GET", "/console/", 404, "application/problem+json"},
		{"GET", "/console/console.html", 404, "application/problem+json"},
		{"POST", "/console", 405, "application/problem+json"},
		{"DELETE", "/console/assets/console.js", 405, "application/problem+json"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			res := rec.Result()
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			if got := res.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type %q, want %q", got, tt.contentType)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", got)
			}
			if tt.status != 200 {
				var p struct {
					Status int    `json:"status"`
					Code   string `json:"code"`
					Title  string `json:"title"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != tt.status || p.Code == "" || p.Title == "" {
					t.Errorf("problem %s (%v), want status %d with a code and a title", rec.Body, err, tt.status)
				}
				if tt.status == 405 && res.Header.Get("Allow") != "GET, HEAD" {
					t.Errorf("Allow %q, want GET, HEAD", res.Header.Get("Allow"))
				}
				return
			}
			if got := res.Header.Get("Content-Security-Policy"); got != console.Policy {
				t.Errorf("Content-Security-Policy %q, want %q", got, console.Policy)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if res.Header.Get("ETag") == "" {
				t.Error("no ETag")
			}
			if tt.method == "GET" && rec.Body.Len() == 0 {
				t.Error("empty body")
			}
			if tt.method == "HEAD" && rec.Body.Len() != 0 {
				t.Errorf("HEAD answered a body of %d bytes", rec.Body.Len())
			}
		})
	}
}

// TestPolicy checks the policy the page depends on: scripts from the
// origin only (no inline script, no eval), requests to the origin only.
func TestPolicy(t *testing.T) {
	t.Parallel()
	directives := map[string]string{}
	for _, d := range strings.Split(console.Policy, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{
		"default-src": "'none'", "script-src": "'self'", "connect-src": "'self'",
		"style-src": "'self'", "form-action": "'none'", "frame-ancestors": "'none'",
	} {
		if got := directives[name]; got != want {
			t.Errorf("%s %q, want %q", name, got, want)
		}
	}
}

// TestRevalidation: an unchanged asset answers 304 to its ETag.
func TestRevalidation(t *testing.T) {
	t.Parallel()
	h := console.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/console/assets/console.js", nil))
	etag := rec.Result().Header.Get("ETag")
	req := httptest.NewRequest("GET", "/console/assets/console.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Fatalf("status %d with If-None-Match %s, want 304", rec.Code, etag)
	}
}

// TestPageLinksServedAssets: every script and stylesheet the page names is
// one the handler serves, and the page has no inline script or style,
// which the policy would block.
func TestPageLinksServedAssets(t *testing.T) {
	t.Parallel()
	h := console.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/console", nil))
	page := rec.Body.String()
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 4 {
		t.Fatalf("the page names %d assets, want the 2 scripts and 2 stylesheets", len(refs))
	}
	for _, m := range refs {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", m[1], nil))
		if rec.Code != 200 {
			t.Errorf("%s: status %d, want 200", m[1], rec.Code)
		}
	}
	inline := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle=|\son[a-z]+=`)
	if m := inline.FindString(page); m != "" {
		t.Errorf("the page has inline script or style: %q", m)
	}
}
