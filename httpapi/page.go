package httpapi

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/dibs-io/dibs"
)

// web holds the waiting room page and its assets: plain HTML, CSS and
// JavaScript with nothing loaded from elsewhere.
//
//go:embed web
var web embed.FS

// pagePolicy lets the page load its own script and style and talk to this
// server only.
const pagePolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// page serves the waiting room page of a drop, /d/{id}. The passport is
// given in the fragment (/d/{id}#passport=...), which never reaches a
// server, or pasted into the page's form.
func (s *Server) page(w http.ResponseWriter, r *http.Request) error {
	status := http.StatusOK
	if _, err := s.drops.Drop(r.PathValue("id")); err != nil {
		status = http.StatusNotFound // the page says so too
	}
	html, err := web.ReadFile("web/room.html")
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", pagePolicy)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(html)
	return nil
}

// assets serves the page's script and style under /assets/.
func assets() http.Handler {
	sub, err := fs.Sub(web, "web")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/assets/room.js", "/assets/room.css":
		default:
			writeProblem(w, http.StatusNotFound, dibs.ENOTFOUND, "No such resource.")
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "public, max-age=300")
		h.Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}
