package httpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/mock"
)

// streamWriter is a ResponseWriter that a stream under test writes and
// flushes to while the test reads what it has so far.
type streamWriter struct {
	mu     sync.Mutex
	header http.Header
	status int
	body   strings.Builder
}

func (w *streamWriter) Header() http.Header { return w.header }
func (w *streamWriter) WriteHeader(s int)   { w.mu.Lock(); w.status = s; w.mu.Unlock() }
func (w *streamWriter) Flush()              {}

func (w *streamWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

func (w *streamWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.String()
}

// TestLiveHeartbeat: an idle live stream sends a comment every
// LiveHeartbeat and nothing before; CloseStreams ends it.
func TestLiveHeartbeat(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		never := make(chan struct{})
		live := &mock.LiveService{
			ChangedFn:  func() <-chan struct{} { return never },
			SnapshotFn: func(context.Context) (dibs.LiveSnapshot, error) { return dibs.LiveSnapshot{At: time.Now().UTC()}, nil },
		}
		api := httpapi.New(httpapi.Config{Drops: &mock.DropService{}, Claims: &mock.ClaimService{}, AdminToken: adminToken, Live: live})
		req := httptest.NewRequest("GET", "/v1/admin/live", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		w := &streamWriter{header: http.Header{}}
		done := make(chan struct{})
		go func() { defer close(done); api.ServeHTTP(w, req) }()

		synctest.Wait()
		if got := w.String(); !strings.HasPrefix(got, "data: {") || strings.Contains(got, ": ping") {
			t.Fatalf("stream at first = %q, want one snapshot", got)
		}
		time.Sleep(httpapi.LiveHeartbeat - time.Millisecond)
		synctest.Wait()
		if strings.Contains(w.String(), ": ping") {
			t.Fatal("a heartbeat came before LiveHeartbeat")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := w.String(); strings.Count(got, ": ping\n\n") != 1 {
			t.Fatalf("stream after LiveHeartbeat = %q, want one heartbeat", got)
		}
		api.CloseStreams()
		<-done
	})
}
