package engine

import "time"

// busyWindow is how recent a group commit must be for the record to count
// as busy.
const busyWindow = 100 * time.Millisecond

// RecordBusy reports whether the recorder committed claims within the last
// 100 ms: claims are flowing, and whatever else wants the record's writer
// (the outbox pump) should take it in small bites.
func (e *Engine) RecordBusy() bool {
	last := e.rec.lastCommit.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < busyWindow
}
