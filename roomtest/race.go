//go:build race

package roomtest

// raceDetector: the race detector slows the suite five to ten times; its
// large scenarios run smaller under it, to look for races rather than
// measure scale.
const raceDetector = true
