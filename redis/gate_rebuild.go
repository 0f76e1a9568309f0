package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dibs-io/dibs"
)

// maxGapSlots bounds the free slots one load step pushes, so that a sparse
// record never makes one script block Redis for long.
const maxGapSlots = 10_000

var errLockLost = errors.New("rebuild lock lost to another node")

// rebuildLater rebuilds the drop in the background, unless this node is
// already at it. Claims answer EUNAVAILABLE meanwhile.
func (g *Gate) rebuildLater(dr *drop) {
	if !dr.rebuildMu.TryLock() {
		return
	}
	dr.rebuildMu.Unlock()
	g.bg.Go(func() {
		ctx, cancel := context.WithTimeout(g.ctx, 10*g.opts.LockTTL)
		defer cancel()
		if err := g.rebuild(ctx, dr, false); err != nil && g.ctx.Err() == nil {
			g.log.Error("rebuild drop from the record", "drop", dr.id, "err", err)
		}
	})
}

// rebuild loads the drop's state from the record, if no other node is
// doing it: reset, then chunks of claims, then the "built" marker, each step
// checked against the lock so that a node that stalled past the lock's TTL
// cannot finish over another's work. wait says whether to wait for a
// rebuild this node already runs.
func (g *Gate) rebuild(ctx context.Context, dr *drop, wait bool) error {
	if wait {
		dr.rebuildMu.Lock()
	} else if !dr.rebuildMu.TryLock() {
		return nil
	}
	defer dr.rebuildMu.Unlock()
	start := time.Now()

	host := g.identity(ctx)
	token := rand.Text()
	lockMS := strconv.FormatInt(g.opts.LockTTL.Milliseconds(), 10)
	g.metrics.call(opRebuild)
	cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	err := g.client.Do(cctx, g.client.B().Set().Key(dr.keys[6]).Value(token).Nx().PxMilliseconds(g.opts.LockTTL.Milliseconds()).Build()).Error()
	cancel()
	if isNil(err) {
		return nil // another node rebuilds; claims wait for its "built"
	} else if err != nil {
		return g.fail(ctx, "rebuild lock", err)
	}
	done := false
	defer func() {
		if !done {
			uctx, cancel := context.WithTimeout(context.Background(), g.opts.Timeout)
			g.exec(uctx, opRebuild, unlockScript, dr, token)
			cancel()
		}
	}()

	switch n, err := g.execInt(ctx, opRebuild, resetScript, dr, token, host); {
	case err != nil:
		return err
	case n == 0:
		return errLockLost
	case n == 2:
		done = true // built on this server meanwhile
		dr.fenced.Store(false)
		return nil
	}

	var (
		next   int64 = 1
		claims int
		gaps   []string
		nGap   int64
		batch  []string
	)
	flush := func() error {
		args := append([]string{token, lockMS, strconv.Itoa(len(gaps) / 2)}, gaps...)
		args = append(args, batch...)
		n, err := g.execInt(ctx, opRebuild, loadScript, dr, args...)
		if err == nil && n != 1 {
			err = errLockLost
		}
		gaps, nGap, batch = gaps[:0], 0, batch[:0]
		return err
	}
	addGap := func(from, to int64) error {
		for from <= to {
			end := min(to, from+maxGapSlots-nGap-1)
			gaps = append(gaps, strconv.FormatInt(from, 10), strconv.FormatInt(end, 10))
			nGap += end - from + 1
			from = end + 1
			if nGap >= maxGapSlots {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	d := dr.settings.Load()
	if scan := *dr.scan.Load(); scan != nil {
		err := scan(ctx, func(c *dibs.Claim) error {
			if c.Slot < next || c.Slot > d.Stock {
				return fmt.Errorf("claim %s: slot %d out of order or outside the drop", c.ID, c.Slot)
			}
			if err := addGap(next, c.Slot-1); err != nil {
				return err
			}
			next = c.Slot + 1
			batch = append(batch, c.ID, c.UserID, strconv.FormatInt(c.Slot, 10), strconv.Itoa(c.Nth), c.IdempotencyKey, stamp(c.CreatedAt))
			if claims++; len(batch)/6 >= g.opts.LoadChunk {
				return flush()
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("rebuild drop %s: %w", dr.id, err)
		}
	}
	if len(batch) > 0 || len(gaps) > 0 {
		if err := flush(); err != nil {
			return fmt.Errorf("rebuild drop %s: %w", dr.id, err)
		}
	}

	d = dr.settings.Load() // the newest: an operator may have acted meanwhile
	build := stamp(g.opts.Now())
	n, err := g.execInt(ctx, opRebuild, builtScript, dr, token, strconv.FormatInt(next, 10), strconv.FormatInt(d.Stock, 10),
		strconv.Itoa(d.PerUserLimit), stamp(d.OpensAt), micros(d.ClosesAt), string(*dr.status.Load()), stamp(d.UpdatedAt),
		host, build, dr.channel)
	if err != nil {
		return fmt.Errorf("rebuild drop %s: %w", dr.id, err)
	} else if n != 1 {
		return fmt.Errorf("rebuild drop %s: %w", dr.id, errLockLost)
	}
	done = true
	dr.fenced.Store(false)
	dr.invalidate()
	g.log.Info("drop rebuilt from the record", "drop", dr.id, "claims", claims, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
