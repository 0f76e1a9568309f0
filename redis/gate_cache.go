package redis

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
)

// The sold-out cache.
//
// When Redis answers "sold out", the answer carries the drop's generation
// (bumped by every release and restore), its build stamp, and the length of
// its roster: an append-only string of 8-byte fingerprints (sha1 of the user
// id), one per user who ever became a holder since the drop was built. The
// node loads the roster (only the part it has not seen) into a sorted slice
// and from then on answers a user whose fingerprint is absent "sold out"
// itself: that user holds nothing, and no slot is free. A user who may hold
// a claim (fingerprint present: every holder, the odd released user, and
// one in 2^64 others) still asks Redis and gets the claim back.
//
// A slot can only come back through a release or a restore. Both publish on
// the drop's channel, and the node that runs them answers nothing from its
// cache while they run and drops it before returning (trusted); every other
// node drops it when the message arrives, or at the latest at the next
// poll of the drop's generation (PollInterval). Until then a user who won
// the freed slot through another node may be told "sold out" by this one:
// that window is the price of answering losers from memory. A new build (Redis restarted
// or failed over) changes the build stamp.
//
// The roster costs 16 bytes per holder in Redis and 8 per holder on each
// node: 17 KB and 9 KB for 1,111 holders, 16 MB and 8 MB for a million.

// soldOut is a node's knowledge that a drop has no free slot, valid while
// the drop's generation and build are unchanged.
type soldOut struct {
	gen, build string
	fps        []uint64 // sorted fingerprints of everyone who may hold a claim
}

func (c *soldOut) mayHold(user string) bool {
	_, found := slices.BinarySearch(c.fps, fingerprint(user))
	return found
}

// fingerprint is the first 8 bytes of sha1(user), as the scripts append
// them (in hex) to the roster.
func fingerprint(user string) uint64 {
	sum := sha1.Sum([]byte(user))
	return binary.BigEndian.Uint64(sum[:8])
}

// roster is the part of a drop's roster a node has loaded.
type roster struct {
	build string
	n     int64    // entries loaded
	fps   []uint64 // sorted; never modified in place
}

const rosterEntry = 16 // hex digits per fingerprint

// rosterChunk is how many entries one GETRANGE reads (1 MiB).
const rosterChunk = 1 << 16

// changing marks a release or restore of this node under way; the function
// it returns, called once the script has run, invalidates the cache and
// marks the change done.
func (dr *drop) changing() (done func()) {
	dr.begun.Add(1)
	return func() {
		dr.invalidate()
		dr.ended.Add(1)
	}
}

// trusted returns the sold-out cache if it may answer: nil while a release
// or restore of this node is under way.
//
// A change's script frees a slot before the change invalidates the cache,
// and a cache can even be installed in between (its answer and check came
// before the script). Meanwhile a user missing from the cached roster can
// win the slot through a request that found no cache, and a retry of
// theirs would be told "sold out" by it: won, then sold out. So the cache
// is read between two looks at the counters: ended, then begun equal to
// it (no change under way), then the cache, then begun unchanged (none
// began). Every change of this node whose script ran before the cache was
// read then ended before it, and its invalidation dropped any cache
// installed earlier; a cache installed later was learnt from an answer
// after that invalidation (the epoch check), so after the script. The
// cache read is Redis's state then, for this node's changes; another
// node's are heard within PollInterval, the window the cache is built on.
func (dr *drop) trusted() *soldOut {
	ended := dr.ended.Load()
	if dr.begun.Load() != ended {
		return nil
	}
	c := dr.cache.Load()
	if c == nil || dr.begun.Load() != ended {
		return nil
	}
	return c
}

// invalidate drops the sold-out cache and any answer being loaded.
func (dr *drop) invalidate() {
	dr.mu.Lock()
	dr.epoch.Add(1)
	dr.cache.Store(nil)
	dr.mu.Unlock()
}

func (g *Gate) invalidateAll() {
	for _, dr := range g.all() {
		dr.invalidate()
	}
}

// learnSoldOut caches a "sold out" answer given while the drop's epoch was
// epoch: reply is {'sold_out', gen, build, roster length in bytes}. It loads the
// roster in the background; if anything invalidated the drop meanwhile, the
// answer is dropped.
//
// The roster read is checked against the drop's generation, read again
// after it: a release (and a new holder in the returned slot) between the
// answer and the read would otherwise leave that holder out of a roster
// cut at the answer's length, and this node would tell them "sold out"
// until its poll, if the release notice reached it after the install.
func (g *Gate) learnSoldOut(dr *drop, epoch uint64, reply []rueidis.RedisMessage) {
	if g.opts.Reference || !g.running.Load() || dr.cache.Load() != nil {
		return
	}
	gen, err1 := reply[1].ToString()
	build, err2 := reply[2].ToString()
	size, err3 := reply[3].AsInt64()
	n := size / rosterEntry
	if err := errors.Join(err1, err2, err3); err != nil {
		g.log.Error("sold-out answer", "drop", dr.id, "err", err)
		return
	}
	if !dr.loading.CompareAndSwap(false, true) {
		return
	}
	g.bg.Go(func() {
		defer dr.loading.Store(false)
		ctx, cancel := context.WithTimeout(g.ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		fps, err := g.loadRoster(ctx, dr, build, n)
		if err == nil {
			if g.rosterRead != nil {
				g.rosterRead()
			}
			err = g.stillSoldOut(ctx, dr, gen, build)
		}
		if errors.Is(err, errMoved) {
			return // the next sold-out answer learns the new state
		} else if err != nil {
			if g.ctx.Err() == nil {
				g.log.Warn("load roster of a sold-out drop; its losers keep asking redis", "drop", dr.id, "err", err)
			}
			return
		}
		if g.installing != nil {
			g.installing()
		}
		dr.mu.Lock()
		defer dr.mu.Unlock()
		if dr.epoch.Load() != epoch {
			return
		}
		dr.cache.Store(&soldOut{gen: gen, build: build, fps: fps})
		g.log.Debug("drop sold out; answering its losers from memory", "drop", dr.id, "holders", len(fps), "took", time.Since(start))
	})
}

var errMoved = errors.New("drop changed since its sold-out answer")

// stillSoldOut reports errMoved unless the drop's generation and build are
// still those of its sold-out answer: no slot came back since, so no
// holder joined the roster after the part that was read.
func (g *Gate) stillSoldOut(ctx context.Context, dr *drop, gen, build string) error {
	g.metrics.call(opRoster)
	cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	vals, err := g.client.Do(cctx, g.client.B().Hmget().Key(dr.keys[0]).Field("gen", "build").Build()).AsStrSlice()
	switch {
	case err != nil:
		return g.fail(ctx, "roster", err)
	case len(vals) != 2 || vals[0] != gen || vals[1] != build:
		return errMoved
	}
	return nil
}

// loadRoster returns the first n entries of the drop's roster of build,
// reading only what this node has not read before.
func (g *Gate) loadRoster(ctx context.Context, dr *drop, build string, n int64) ([]uint64, error) {
	r := &dr.roster
	if r.build != build || n < r.n {
		*r = roster{build: build}
	}
	fresh := make([]uint64, 0, n-r.n)
	for off := r.n; off < n; off += rosterChunk {
		end := min(off+rosterChunk, n)
		g.metrics.call(opRoster)
		cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
		s, err := g.client.Do(cctx, g.client.B().Getrange().Key(dr.keys[5]).Start(off*rosterEntry).End(end*rosterEntry-1).Build()).ToString()
		cancel()
		if err != nil {
			return nil, g.fail(ctx, "roster", err)
		}
		if int64(len(s)) != (end-off)*rosterEntry {
			return nil, fmt.Errorf("roster of drop %s is shorter than announced: rebuilt meanwhile", dr.id)
		}
		for i := 0; i < len(s); i += rosterEntry {
			fp, err := strconv.ParseUint(s[i:i+rosterEntry], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("roster of drop %s: %w", dr.id, err)
			}
			fresh = append(fresh, fp)
		}
	}
	slices.Sort(fresh)
	merged := make([]uint64, 0, len(r.fps)+len(fresh))
	i, j := 0, 0
	for i < len(r.fps) || j < len(fresh) {
		var v uint64
		if j == len(fresh) || (i < len(r.fps) && r.fps[i] <= fresh[j]) {
			v, i = r.fps[i], i+1
		} else {
			v, j = fresh[j], j+1
		}
		if len(merged) == 0 || merged[len(merged)-1] != v {
			merged = append(merged, v)
		}
	}
	r.fps, r.n = merged, n
	return merged, nil
}

// Start runs the work that lets nodes answer losers of sold-out drops from
// memory: a subscription to every drop's channel, a poll of the sold-out
// drops' generations, and a check of the primary's identity (a new primary
// means the drops are rebuilt from the record). Without it, every request
// goes to Redis. Start returns at once; the work ends with ctx or Stop.
func (g *Gate) Start(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("redis gate already started")
	}
	ctx, cancel := context.WithCancel(ctx)
	if !g.opts.Reference {
		g.running.Store(true)
	}
	g.bg.Go(func() {
		select {
		case <-ctx.Done():
		case <-g.ctx.Done():
		}
		// Nothing keeps a cache honest any more.
		g.running.Store(false)
		g.invalidateAll()
		cancel()
	})
	g.bg.Go(func() { g.listen(ctx) })
	g.bg.Go(func() { g.every(ctx, g.opts.PollInterval, g.poll) })
	g.bg.Go(func() { g.watchIdentity(ctx) })
	return nil
}

// Stop ends the background work, including rebuilds and roster loads in
// flight, and waits for it. Safe to call twice, or without Start.
func (g *Gate) Stop() {
	g.running.Store(false)
	g.invalidateAll()
	g.cancel()
	g.bg.Wait()
}

func (g *Gate) every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// listen hears every drop's channel: releases and restores invalidate the
// drop's cache, status changes replace the node's copy. A lost subscription
// may have lost messages, so it invalidates everything.
func (g *Gate) listen(ctx context.Context) {
	pattern := globEscape(g.opts.Prefix) + "{drop:*}:events"
	failures := 0
	for {
		began := time.Now()
		err := g.client.Receive(ctx, g.client.B().Psubscribe().Pattern(pattern).Build(), g.onEvent)
		g.invalidateAll()
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > time.Second {
			failures = 0 // it was up: a new outage
		}
		failures++
		// Once per outage, then every hundredth attempt: a Redis that is
		// down for minutes is retried every poll interval.
		if failures == 1 || failures%100 == 0 {
			g.log.Warn("redis subscription lost; resubscribing", "attempts", failures, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(g.opts.PollInterval):
		}
	}
}

func (g *Gate) onEvent(m rueidis.PubSubMessage) {
	id, ok := strings.CutPrefix(m.Channel, g.opts.Prefix+"{drop:")
	if !ok {
		return
	}
	id, ok = strings.CutSuffix(id, "}:events")
	if !ok {
		return
	}
	dr := g.lookup(id)
	if dr == nil {
		return
	}
	if s, ok := strings.CutPrefix(m.Message, "status:"); ok {
		dr.setStatus(statusOf(s))
		return
	}
	dr.invalidate()
}

// poll checks the generation, build and status of every drop this node
// answers "sold out" for, in one round trip: the safety net under lost
// messages and a Redis that came back empty.
func (g *Gate) poll(ctx context.Context) {
	type polled struct {
		dr *drop
		c  *soldOut
	}
	var ps []polled
	for _, dr := range g.all() {
		if c := dr.cache.Load(); c != nil {
			ps = append(ps, polled{dr, c})
		}
	}
	if len(ps) == 0 {
		return
	}
	cmds := make([]rueidis.Completed, len(ps))
	for i, p := range ps {
		cmds[i] = g.client.B().Hmget().Key(p.dr.keys[0]).Field("built", "gen", "build", "status").Build()
	}
	cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	g.metrics.add(opPoll, len(cmds))
	for i, r := range g.client.DoMulti(cctx, cmds...) {
		vals, err := r.AsStrSlice()
		if err != nil || len(vals) != 4 {
			continue // Redis unreachable: nothing can change there meanwhile
		}
		p := ps[i]
		if vals[0] == "" || vals[1] != p.c.gen || vals[2] != p.c.build {
			p.dr.invalidate()
		}
		if vals[3] != "" {
			p.dr.setStatus(statusOf(vals[3]))
		}
	}
}

// checkSoon wakes the identity check.
func (g *Gate) checkSoon() {
	select {
	case g.recheck <- struct{}{}:
	default:
	}
}

// watchIdentity checks the primary's identity every IdentityInterval, and
// at once (then every 20ms until it succeeds) after a call failed.
func (g *Gate) watchIdentity(ctx context.Context) {
	g.watching.Store(true)
	defer func() {
		g.watching.Store(false)
		g.suspect.Store(false)
	}()
	t := time.NewTicker(g.opts.IdentityInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.recheck:
		}
		for ctx.Err() == nil {
			_, err := g.fetchIdentity(ctx)
			if err == nil {
				if g.suspect.CompareAndSwap(true, false) {
					g.log.Info("redis primary checked; claims go on")
				}
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// identity is the run id of the primary, fetched if not known yet; "" in a
// Cluster, where no single server holds every drop.
func (g *Gate) identity(ctx context.Context) string {
	if h := *g.host.Load(); h != "" || g.fenceOff.Load() {
		return h
	}
	h, _ := g.fetchIdentity(ctx)
	return h
}

func (g *Gate) fetchIdentity(ctx context.Context) (string, error) {
	if g.fenceOff.Load() {
		return "", nil
	}
	cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	g.metrics.call(opIdentity)
	info, err := g.client.Do(cctx, g.client.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return "", err
	}
	var host string
	for line := range strings.Lines(info) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch k {
		case "run_id":
			host = v
		case "redis_mode":
			if v == "cluster" {
				g.fenceOff.Store(true)
				return "", nil
			}
		}
	}
	if old := *g.host.Swap(&host); old != "" && old != host {
		g.newPrimary(old, host)
	}
	return host, nil
}

// newPrimary reacts to a new primary: Redis restarted, or a replica was
// promoted. Its drops may lack writes the old primary acknowledged, so every
// drop built elsewhere is rebuilt from the record before it takes claims
// again.
func (g *Gate) newPrimary(old, host string) {
	g.log.Warn("redis primary changed (a restart or a failover); rebuilding drops from the record", "was", old, "now", host)
	drops := g.all()
	for _, dr := range drops {
		dr.fenced.Store(true)
		dr.invalidate()
	}
	for _, dr := range drops {
		g.unfence(dr)
	}
}

// unfence prepares a fenced drop again in the background: rebuilt from the
// record, unless it was built on the new primary already.
func (g *Gate) unfence(dr *drop) {
	if !dr.reprepare.CompareAndSwap(false, true) {
		return
	}
	g.bg.Go(func() {
		defer dr.reprepare.Store(false)
		ctx, cancel := context.WithTimeout(g.ctx, 10*g.opts.LockTTL)
		defer cancel()
		if err := g.Prepare(ctx, dr.settings.Load(), *dr.scan.Load()); err != nil && g.ctx.Err() == nil {
			g.log.Error("prepare drop on a new primary", "drop", dr.id, "err", err)
		}
	})
}

// stale reports whether a drop built on host must be rebuilt: it was built
// on another server than the primary.
func (g *Gate) stale(host string) bool {
	cur := *g.host.Load()
	return cur != "" && host != cur
}

func isNil(err error) bool { return rueidis.IsRedisNil(err) }

func statusOf(s string) dibs.Status { return dibs.Status(s) }

// globEscape quotes the characters PSUBSCRIBE patterns treat specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
