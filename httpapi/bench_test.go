package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/dibs-io/dibs/httpapi"
)

// BenchmarkSoldOutClaim is the hot path of a spike after sell-out: verify
// the passport, find the drop sold out, answer 410. Compare with
// BenchmarkCeiling, a handler that only reads the request and answers 410.
func BenchmarkSoldOutClaim(b *testing.B) {
	bd := setup(b, httpapi.Limits{})
	bd.mustCreateDrop(b, `{"id":"d","title":"d","kind":"coupon","stock":1}`)
	bd.do(b, "POST", "/v1/drops/d/claims", pass(b, "winner"), "")
	h := bd.srv.Config.Handler
	tok := "Bearer " + pass(b, "loser")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/drops/d/claims", nil)
			req.Header.Set("Authorization", tok)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusGone {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}

func BenchmarkCeiling(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusGone)
		w.Write([]byte(`{"type":"urn:dibs:problem:sold_out","title":"Gone","status":410,"detail":"drop d is sold out","code":"sold_out"}`))
	})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/drops/d/claims", nil)
			req.Header.Set("Authorization", "Bearer x")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
		}
	})
}

// BenchmarkWinningClaim: a new user each claim on a drop that never sells
// out; every claim is committed before its answer.
func BenchmarkWinningClaim(b *testing.B) {
	bd := setup(b, httpapi.Limits{})
	bd.mustCreateDrop(b, `{"id":"d","title":"d","kind":"coupon","stock":10000000}`)
	h := bd.srv.Config.Handler
	toks := make([]string, b.N+1)
	for i := range toks {
		toks[i] = "Bearer " + pass(b, "u"+strconv.Itoa(i))
	}
	var n atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/drops/d/claims", nil)
			req.Header.Set("Authorization", toks[n.Add(1)])
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusCreated {
				b.Fatalf("status %d %s", w.Code, w.Body)
			}
		}
	})
}
