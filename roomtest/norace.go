//go:build !race

package roomtest

const raceDetector = false
