package main

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// latencies is what a run of regular traffic saw, in milliseconds, each
// request timed from its intended send time.
type latencies struct {
	requests, errors int64
	p50, p99, p999   float64
}

// regularTraffic reads url at rate requests/s for d, on an open schedule:
// request i is due at start + i/rate whether or not earlier ones were
// answered, and its latency counts from then, so a stalled server cannot
// hide behind a client that waited for it.
func regularTraffic(ctx context.Context, client *http.Client, url string, rate float64, d time.Duration) latencies {
	h := hdrhistogram.New(1, 60_000_000, 3) // microseconds
	var mu sync.Mutex
	var errs atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	start := time.Now()
	n := int(rate * d.Seconds())
	for i := range n {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return latencies{}
			}
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := client.Get(url)
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					err = io.ErrUnexpectedEOF
				}
			}
			if err != nil {
				errs.Add(1)
			}
			mu.Lock()
			h.RecordValue(time.Since(due).Microseconds())
			mu.Unlock()
		})
	}
	wg.Wait()
	ms := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1000 }
	return latencies{requests: int64(n), errors: errs.Load(), p50: ms(50), p99: ms(99), p999: ms(99.9)}
}
