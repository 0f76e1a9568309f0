//go:build race

package main

// raceEnabled: the race detector slows the demo's two events five to ten
// times; they run in make test's full-size phase instead.
const raceEnabled = true
