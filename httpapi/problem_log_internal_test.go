package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dibs-io/dibs"
)

// lines is a slog.Handler that keeps every record.
type lines struct {
	mu  sync.Mutex
	got []slog.Record
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, r)
	return nil
}
func (l *lines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lines) WithGroup(string) slog.Handler      { return l }

func (l *lines) records() []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]slog.Record(nil), l.got...)
}

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

func fail(w *httptest.ResponseRecorder, log *slog.Logger, err error) {
	writeError(w, httptest.NewRequest("POST", "/v1/drops/d/claims", nil), log, err)
}

// TestProblemLogOutageIsOneLine: a thousand claims answered 503 during a
// Redis outage write one warning, and every client still gets its 503 with
// Retry-After.
func TestProblemLogOutageIsOneLine(t *testing.T) {
	t.Parallel()
	h := &lines{}
	log := slog.New(h)
	down := dibs.WrapError(dibs.EUNAVAILABLE, "The gate is unavailable; please retry.", errors.New("redis reserve: connection refused"))
	for range 1000 {
		w := httptest.NewRecorder()
		fail(w, log, down)
		if w.Code != 503 || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("answer = %d, Retry-After %q; want 503, 1", w.Code, w.Header().Get("Retry-After"))
		}
	}
	got := h.records()
	if len(got) != 1 {
		t.Fatalf("%d lines for 1,000 failed claims, want 1", len(got))
	}
	if got[0].Level != slog.LevelWarn || attr(got[0], "code").String() != dibs.EUNAVAILABLE {
		t.Fatalf("line = %v %q code %v; want a warning with code unavailable", got[0].Level, got[0].Message, attr(got[0], "code"))
	}
}

// TestProblemLogBurstIsCounted: the first failure of a burst is logged at
// once, the rest are counted in one line when the window ends, each code
// on its own; the next failure after the window is logged again. It runs
// on synctest's clock, so the window ends when the test says and not when
// a starved machine gets round to it.
func TestProblemLogBurstIsCounted(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const window = 50 * time.Millisecond
		h := &lines{}
		log := slog.New(h)
		f := newFailureLog(window)
		r := httptest.NewRequest("POST", "/v1/drops/d/claims", nil)
		down := dibs.Errorf(dibs.EUNAVAILABLE, "down")
		for range 100 {
			f.log(log, r, dibs.EUNAVAILABLE, down)
		}
		f.log(log, r, dibs.EINTERNAL, errors.New("a bug"))
		if got := h.records(); len(got) != 2 || got[0].Level != slog.LevelWarn || got[1].Level != slog.LevelError {
			t.Fatalf("lines during the burst = %v, want the first unavailable (warning) and the internal error", got)
		}

		time.Sleep(window - time.Millisecond)
		synctest.Wait()
		if got := h.records(); len(got) != 2 {
			t.Fatalf("%d lines just before the window ends, want 2", len(got))
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		got := h.records()
		if len(got) != 3 {
			t.Fatalf("%d lines after the window, want 3: the summary, and nothing for the internal error's window", len(got))
		}
		sum := got[2]
		if sum.Level != slog.LevelWarn || attr(sum, "count").Int64() != 99 || attr(sum, "code").String() != dibs.EUNAVAILABLE {
			t.Fatalf("summary = %v %q count %v code %v; want a warning counting 99 unavailable", sum.Level, sum.Message, attr(sum, "count"), attr(sum, "code"))
		}

		f.log(log, r, dibs.EUNAVAILABLE, down)
		if got := h.records(); len(got) != 4 {
			t.Fatalf("%d lines after a new failure, want it logged at once (4)", len(got))
		}
	})
}
