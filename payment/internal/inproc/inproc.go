// Package inproc serves an http.Handler to an http.Client without a
// network, so that the tests of timeouts, hangs and the circuit breaker can
// run in a testing/synctest bubble: there time is fake and moves only when
// every goroutine of the bubble waits, so a 100 ms timeout fires after the
// gateway took the request, never before, however busy the machine is.
package inproc

import (
	"bytes"
	"errors"
	"io"
	"net/http"
)

// ErrReset is what a round trip returns when the handler dropped the
// connection (it panicked with http.ErrAbortHandler, as a handler does
// when it cannot hijack the connection to reset it).
var ErrReset = errors.New("inproc: connection reset by handler")

// Transport is an http.RoundTripper that calls Handler in a goroutine of
// its own. The handler's request carries the client's context, so a
// client that gives up is seen by the handler as a client that left. The
// answer is returned once the handler has returned.
type Transport struct{ Handler http.Handler }

// RoundTrip implements http.RoundTripper.
func (t Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	sreq := req.Clone(ctx)
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	w := &writer{header: make(http.Header), status: http.StatusOK}
	done := make(chan bool, 1) // true: the handler aborted
	go func() {
		aborted := true
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				panic(p)
			}
			done <- aborted
		}()
		t.Handler.ServeHTTP(w, sreq)
		aborted = false
	}()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case aborted := <-done:
		if aborted {
			return nil, ErrReset
		}
	}
	return &http.Response{
		Status:        http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.header,
		Body:          io.NopCloser(bytes.NewReader(w.body.Bytes())),
		ContentLength: int64(w.body.Len()),
		Request:       req,
	}, nil
}

// writer is the handler's http.ResponseWriter. It is read only after the
// handler returned.
type writer struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (w *writer) Header() http.Header { return w.header }

func (w *writer) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
}

func (w *writer) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}
