//go:build !race

package post_test

const defaultSeeds = 4000
