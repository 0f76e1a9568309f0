//go:build race

package memory_test

// raceEnabled: under the race detector a million joins take minutes.
const raceEnabled = true
