package console_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/dibs-io/dibs/httpapi/console"
)

// The console is mounted beside the admin API on the same listener: the
// page talks to the origin that served it only.
func ExampleHandler() {
	mux := http.NewServeMux()
	mux.Handle("/console", console.Handler())
	mux.Handle("/console/", console.Handler())
	// mux.Handle("/v1/admin/", adminAPI) on the same mux

	for _, path := range []string{"/console", "/console/assets/console.js", "/console/assets/nope.js"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		fmt.Println(path, rec.Code, rec.Header().Get("Content-Type"))
	}
	// Output:
	// /console 200 text/html; charset=utf-8
	// /console/assets/console.js 200 text/javascript; charset=utf-8
	// /console/assets/nope.js 404 application/problem+json
}
