//go:build race

package post_test

import "time"

// The race detector slows the simulation about sixfold, and finds little
// in it: the workers run one at a time there.
const defaultSeeds = 1000

// riverPoll is how often River polls each queue in TestRunnerOnRiver. Under
// the race detector a poll of SQLite costs tens of milliseconds of CPU, and
// six queues polling often would take all of it.
const riverPoll = time.Second
