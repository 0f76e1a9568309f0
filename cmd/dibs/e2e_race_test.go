//go:build race

package main_test

// raceDetector: the race detector slows the test process (the load
// generator) several times; end-to-end spikes run smaller under it.
const raceDetector = true
