package loadgen

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// TerminalWriter returns w if it is a terminal, else nil: the progress line
// rewrites itself with carriage returns, which only a terminal shows well.
// Callers also leave Progress nil under CI.
func TerminalWriter(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return w
}

// progressEvery spaces the progress line's updates.
const progressEvery = 250 * time.Millisecond

// showProgress rewrites one line on cfg.Progress until ctx ends: arrivals,
// claim answers by status, the current request rate and the claims' p99.
func (r *runner) showProgress(ctx context.Context) {
	w := r.cfg.Progress
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	var lastN int64
	lastT := r.cfg.Now()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(w, r.progressLine(0))
			return
		case <-t.C:
		}
		now := r.cfg.Now()
		p := r.rec.progress()
		rate := float64(p.requests-lastN) / now.Sub(lastT).Seconds()
		lastN, lastT = p.requests, now
		fmt.Fprint(w, "\r"+r.progressLine(rate)+"\x1b[K")
	}
}

func (r *runner) progressLine(rate float64) string {
	p := r.rec.progress()
	var b strings.Builder
	fmt.Fprintf(&b, "arrived %d/%d", r.spike.arrived.Load(), r.cfg.Users)
	for _, c := range p.claims {
		fmt.Fprintf(&b, "  %s:%d", c.label, c.n)
	}
	if rate > 0 {
		fmt.Fprintf(&b, "  %.0f req/s", rate)
	}
	fmt.Fprintf(&b, "  p99 %s", p.p99.Round(time.Millisecond/10))
	if m := r.spike.missed.Load(); m > 0 {
		fmt.Fprintf(&b, "  missed %d", m)
	}
	return b.String()
}
