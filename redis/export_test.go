package redis

import (
	"time"
)

// Settle waits until no roster load of the drop is in flight, so that a
// test can tell whether the next answer comes from memory.
func (g *Gate) Settle(dropID string) {
	dr := g.lookup(dropID)
	for dr != nil && dr.loading.Load() {
		time.Sleep(100 * time.Microsecond)
	}
}

// SoldOutCached reports whether the node answers the drop's losers from
// memory.
func (g *Gate) SoldOutCached(dropID string) bool {
	dr := g.lookup(dropID)
	return dr != nil && dr.cache.Load() != nil
}

// Key is the name of one of the drop's keys.
func (g *Gate) Key(dropID, name string) string { return g.key(dropID, name) }
