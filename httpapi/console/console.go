// Package console serves the operator console: one page from which an
// operator follows a live sale and acts on it (switches, pace, the action
// log).
//
// The page is plain HTML, CSS and JavaScript embedded in the binary, with
// the chart library (uPlot) vendored beside it, so it works on a network
// that reaches nothing but the node. It holds no data of its own: it reads
// the admin API of the origin it was served from (GET /v1/admin/live,
// GET /v1/admin/actions, PATCH /v1/admin/switches, PATCH
// /v1/admin/drops/{id}) with the admin token the operator types in, kept in
// the tab's sessionStorage and sent only in the Authorization header.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
)

//go:embed console.html console.js console.css uplot/uPlot.iife.min.js uplot/uPlot.min.css uplot/LICENSE
var files embed.FS

// Policy is the page's Content-Security-Policy: its own script and style
// only (no inline script, no eval), requests to the origin that served it
// only, and no framing.
const Policy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file as served.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// assets maps the names under /console/assets/ to embedded files.
var assets = map[string]string{
	"console.js":    "console.js",
	"console.css":   "console.css",
	"uplot.js":      "uplot/uPlot.iife.min.js",
	"uplot.css":     "uplot/uPlot.min.css",
	"uplot-LICENSE": "uplot/LICENSE",
}

// Handler serves the console: the page at /console and its script, style
// and chart library under /console/assets/. Anything else under /console/
// is a 404 problem; methods other than GET and HEAD are a 405 problem. It is
// safe for concurrent use and holds no state.
//
// Mount it on the admin listener for both patterns:
//
//	mux.Handle("/console", console.Handler())
//	mux.Handle("/console/", console.Handler())
func Handler() http.Handler {
	page := load("console.html", "text/html; charset=utf-8")
	served := make(map[string]asset, len(assets))
	for name, file := range assets {
		served[name] = load(file, contentType(name))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a asset
		switch name, isAsset := strings.CutPrefix(r.URL.Path, "/console/assets/"); {
		case r.URL.Path == "/console":
			a = page
		case isAsset && served[name].body != nil:
			a = served[name]
		default:
			writeProblem(w, http.StatusNotFound, dibs.ENOTFOUND, "No such resource.")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed", "Use GET.")
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		// no-cache with an ETag: a browser revalidates each file (a 304
		// when unchanged), so after an upgrade an operator never runs the
		// previous release's script against the new API.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("Content-Security-Policy", Policy)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}

func load(file, contentType string) asset {
	body, err := files.ReadFile(file)
	if err != nil {
		panic("console: embedded file missing: " + file) // the embed directive lists it
	}
	sum := sha256.Sum256(body)
	return asset{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

func contentType(name string) string {
	switch {
	case strings.HasSuffix(name, ".js"):
		return "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".css"):
		return "text/css; charset=utf-8"
	default:
		return "text/plain; charset=utf-8"
	}
}

// writeProblem answers with an RFC 9457 problem carrying dibs's stable code,
// in the shape the API uses.
func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	body, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
		Code   string `json:"code"`
	}{"urn:dibs:problem:" + code, http.StatusText(status), status, detail, code})
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
