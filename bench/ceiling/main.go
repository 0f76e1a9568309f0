// Command ceiling is the HTTP ceiling reference: a net/http server that
// reads each request and answers 410 with a small problem+json body, like
// dibs answering a sold-out claim, and does nothing else. Whatever dibs
// does per request is measured against it.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
)

var body = []byte(`{"type":"urn:dibs:problem:sold_out","title":"Gone","status":410,"detail":"drop d is sold out","code":"sold_out"}` + "\n")

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusGone)
		w.Write(body)
	})))
}
