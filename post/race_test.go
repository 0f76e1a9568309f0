//go:build race

package post_test

// The race detector slows the simulation about fivefold, and finds little
// in it: the workers run one at a time there.
const defaultSeeds = 1000
