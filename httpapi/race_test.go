//go:build race

package httpapi_test

// raceEnabled: the race detector slows everything five to ten times, which
// turns load tests into tests of the detector.
const raceEnabled = true
