// Command ceiling is the HTTP ceiling reference: a net/http server that
// reads each request and answers 410 with a small problem+json body, like
// dibs answering a sold-out claim, and does nothing else. Whatever dibs
// does per request is measured against it.
//
// It runs with the timeouts `dibs serve` sets (cmd/dibs/serve.go), which
// any server facing the internet needs: net/http then arms a deadline on
// the connection for every request, and that cost is HTTP's, not dibs's.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

var body = []byte(`{"type":"urn:dibs:problem:sold_out","title":"Gone","status":410,"detail":"drop d is sold out","code":"sold_out"}` + "\n")

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	flag.Parse()
	srv := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusGone)
			w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	log.Fatal(srv.ListenAndServe())
}
