package redis

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
)

// Mode is how c reaches Redis: standalone, sentinel or cluster. A client
// NewClient made while Redis did not answer reports the mode of the client
// it connected as, standalone until then.
func Mode(c Client) rueidis.ClientMode {
	if late, ok := c.(*lateClient); ok {
		return late.to().Mode()
	}
	return c.(rueidis.Client).Mode()
}

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

// OnRosterRead makes fn run after each roster load of a sold-out drop,
// before the load is checked and installed.
func (g *Gate) OnRosterRead(fn func()) { g.rosterRead = fn }

// OnInstall makes fn run after each roster load has been checked, before
// the sold-out answer is installed.
func (g *Gate) OnInstall(fn func()) { g.installing = fn }

// OnReleaseRan makes fn run after each release's script, before the
// release invalidates the sold-out cache.
func (g *Gate) OnReleaseRan(fn func()) { g.releaseRan = fn }

// MuteReleases makes Release publish its notice where no node listens, as
// ReleaseUnheard does: the node learns of its own releases only when they
// return, as when its subscription is down.
func (g *Gate) MuteReleases() { g.muted = true }

// ReleaseUnheard releases the hold claimID as Release does, but publishes
// its notice where no node listens: a release this node and the others
// have not heard of yet.
func (g *Gate) ReleaseUnheard(ctx context.Context, dropID, claimID string) error {
	dr, err := g.drop(dropID)
	if err != nil {
		return err
	}
	_, err = g.execInt(ctx, opRelease, releaseScript, dr, claimID, g.key(dropID, "unheard"), strconv.Itoa(dibs.ReleasedKeys))
	return err
}

// SetStatusUnheard is SetStatus with its notice published where no node
// listens, and without this node taking the status itself.
func (g *Gate) SetStatusUnheard(ctx context.Context, dropID string, s dibs.Status) error {
	dr, err := g.drop(dropID)
	if err != nil {
		return err
	}
	_, err = g.execInt(ctx, opStatus, statusScript, dr, string(s), stamp(g.opts.Now()), g.key(dropID, "unheard"))
	return err
}

// ReserveScript is the reserve script's source, as the gate sends it, and
// its SHA-1.
func ReserveScript() (src, sha string) { return reserveScript.src, reserveScript.sha }
