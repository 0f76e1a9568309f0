//go:build !race

package post_test

import "time"

const (
	defaultSeeds = 4000
	riverPoll    = 20 * time.Millisecond
)
