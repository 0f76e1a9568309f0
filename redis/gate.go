package redis

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
)

var _ dibs.Gate = (*Gate)(nil)

var (
	//go:embed gate_common.lua
	commonLua string
	//go:embed gate_reserve.lua
	reserveLua string
	//go:embed gate_release.lua
	releaseLua string
	//go:embed gate_confirm.lua
	confirmLua string
	//go:embed gate_settings.lua
	settingsLua string
	//go:embed gate_status.lua
	statusLua string
	//go:embed gate_reset.lua
	resetLua string
	//go:embed gate_load.lua
	loadLua string
	//go:embed gate_built.lua
	builtLua string
	//go:embed gate_unlock.lua
	unlockLua string
	//go:embed gate_restore.lua
	restoreLua string
)

// gateScript is a gate script: the shared prelude, then its own body. The
// shebang makes Redis refuse the whole script up front when it is out of
// memory, instead of failing a write halfway.
func gateScript(name, body string) *script {
	return newScript(name, "#!lua\n"+commonLua+body)
}

var (
	reserveScript  = gateScript("reserve", reserveLua)
	releaseScript  = gateScript("release", releaseLua)
	confirmScript  = gateScript("confirm", confirmLua)
	settingsScript = gateScript("settings", settingsLua)
	statusScript   = gateScript("status", statusLua)
	resetScript    = gateScript("reset", resetLua)
	loadScript     = gateScript("load", loadLua)
	builtScript    = gateScript("built", builtLua)
	unlockScript   = gateScript("unlock", unlockLua)
	restoreScript  = gateScript("restore", restoreLua)
)

// Defaults of GateOptions.
const (
	DefaultTimeout          = time.Second
	DefaultPollInterval     = 50 * time.Millisecond
	DefaultIdentityInterval = 500 * time.Millisecond
	DefaultLoadChunk        = 1000
	DefaultLockTTL          = 10 * time.Second
)

// GateOptions configure a Gate. The zero value works.
type GateOptions struct {
	// Prefix goes before every key, so that several deployments (or tests)
	// share a server: keys are <Prefix>{drop:ID}:<name>.
	Prefix string
	// Timeout bounds each Redis call on the claim path (default 1s). A call
	// that runs out answers EUNAVAILABLE.
	Timeout time.Duration
	// PollInterval is how often a node checks the drops it answers "sold
	// out" for, in case a release notice was lost (default 50ms: with a
	// round trip and a late tick, a lost notice is still made good within
	// the 100 ms in which every node must learn of a release).
	PollInterval time.Duration
	// IdentityInterval is how often a node checks that the primary is the
	// server the drops were built on (default 500ms).
	IdentityInterval time.Duration
	// LoadChunk is how many claims one rebuild step loads (default 1000).
	LoadChunk int
	// LockTTL is how long a rebuild may stall before another node takes
	// over (default 10s).
	LockTTL time.Duration
	// Reference makes the gate the per-request baseline that benchmarks
	// compare against: the script's source sent with EVAL on every call and
	// no sold-out cache. Never for production.
	Reference bool
	Logger    *slog.Logger
	Now       func() time.Time // time.Now if nil; stamps status changes
}

func (o *GateOptions) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.IdentityInterval <= 0 {
		o.IdentityInterval = DefaultIdentityInterval
	}
	if o.LoadChunk <= 0 {
		o.LoadChunk = DefaultLoadChunk
	}
	if o.LockTTL <= 0 {
		o.LockTTL = DefaultLockTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Gate is a dibs.Gate on Redis, shared by every node of a deployment. Each
// operation is one Lua script run atomically on the primary; concurrent
// operations share round trips (auto-pipelining).
//
// Once a drop sells out, a node answers users who cannot be holders
// "sold out" from memory, without calling Redis, until a slot comes back:
// see Start.
//
// While a drop's state is missing from Redis (a restart, a failover) or
// being rebuilt from the record, Reserve answers EUNAVAILABLE.
//
// Safe for concurrent use.
type Gate struct {
	client  Client
	opts    GateOptions
	log     *slog.Logger
	metrics *gateMetrics

	mu    sync.RWMutex
	drops map[string]*drop

	host     atomic.Pointer[string] // run id of the primary; "" unknown
	fenceOff atomic.Bool            // a Cluster: no single run id to check
	// suspect is set when a call fails as a lost or wrong primary would
	// make it fail, and cleared when the primary's identity is checked:
	// until then claims answer EUNAVAILABLE rather than risk a stale state.
	suspect atomic.Bool
	recheck chan struct{} // wakes the identity check

	ctx      context.Context // background work: rebuilds, roster loads
	cancel   context.CancelFunc
	bg       sync.WaitGroup
	started  atomic.Bool
	running  atomic.Bool // the poll and the listener run: caching is safe
	watching atomic.Bool // the identity check runs: suspicion gets cleared

	rosterRead func() // tests: runs between a roster load and its check
	installing func() // tests: runs after that check, before the install
	releaseRan func() // tests: runs between a release's script and its invalidation
	muted      bool   // tests: releases publish their notice where no node listens
}

// drop is what a node knows of one drop.
type drop struct {
	id      string
	keys    []string // state users claims slots free roster lock released released-order
	channel string
	soldOut error // the same answer for every loser: built once

	settings atomic.Pointer[dibs.Drop]   // the newest the record gave us
	status   atomic.Pointer[dibs.Status] // the newest heard of
	scan     atomic.Pointer[dibs.ScanFunc]

	rebuildMu sync.Mutex
	// fenced: the primary changed since the drop was last seen built on
	// it; no claim until it is rebuilt (or found rebuilt) there.
	fenced    atomic.Bool
	reprepare atomic.Bool // a background Prepare of a fenced drop runs

	// The sold-out cache. mu orders installs against invalidations: an
	// answer learnt before an invalidation is never installed after it.
	mu      sync.Mutex
	epoch   atomic.Uint64
	cache   atomic.Pointer[soldOut]
	loading atomic.Bool
	roster  roster // used by one loader at a time (loading)

	// Releases and restores this node runs: begun counts them before their
	// script, ended after their invalidation. See trusted.
	begun, ended atomic.Uint64
}

// NewGate returns a gate over client. Call Start to run the background
// work that keeps the sold-out cache honest, and Stop when done.
func NewGate(client Client, opts GateOptions) *Gate {
	opts.setDefaults()
	g := &Gate{
		client:  client,
		opts:    opts,
		log:     opts.Logger,
		metrics: newGateMetrics(),
		drops:   make(map[string]*drop),
		recheck: make(chan struct{}, 1),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	empty := ""
	g.host.Store(&empty)
	return g
}

func (g *Gate) key(dropID, name string) string {
	return g.opts.Prefix + "{drop:" + dropID + "}:" + name
}

func (g *Gate) lookup(id string) *drop {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.drops[id]
}

func (g *Gate) drop(id string) (*drop, error) {
	if dr := g.lookup(id); dr != nil {
		return dr, nil
	}
	return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
}

func (g *Gate) all() []*drop {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]*drop, 0, len(g.drops))
	for _, dr := range g.drops {
		out = append(out, dr)
	}
	return out
}

// register makes d known to this node, or takes its settings if they are
// newer than what the node has.
func (g *Gate) register(d *dibs.Drop, scan dibs.ScanFunc) *drop {
	dc := *d
	g.mu.Lock()
	defer g.mu.Unlock()
	dr := g.drops[d.ID]
	if dr == nil {
		dr = &drop{id: d.ID, channel: g.key(d.ID, "events"), soldOut: dibs.Errorf(dibs.ESOLDOUT, "drop %s is sold out", d.ID)}
		for _, name := range []string{"state", "users", "claims", "slots", "free", "roster", "lock", "released", "released-order"} {
			dr.keys = append(dr.keys, g.key(d.ID, name))
		}
		dr.settings.Store(&dc)
		dr.setStatus(dc.Status)
		g.drops[d.ID] = dr
	} else if cur := dr.settings.Load(); dc.UpdatedAt.After(cur.UpdatedAt) {
		dr.settings.Store(&dc)
		dr.setStatus(dc.Status)
	}
	dr.scan.Store(&scan)
	return dr
}

func (dr *drop) setStatus(s dibs.Status) { dr.status.Store(&s) }

// exec runs a gate script on the drop's keys within the call timeout,
// counted under op, and translates failures into dibs errors.
func (g *Gate) exec(ctx context.Context, op op, s *script, dr *drop, args ...string) (rueidis.RedisResult, error) {
	cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	g.metrics.call(op)
	r := s.run(cctx, g.client, g.opts.Reference, dr.keys, args...)
	if err := r.Error(); err != nil {
		return r, g.fail(ctx, s.name, err)
	}
	return r, nil
}

func (g *Gate) execInt(ctx context.Context, op op, s *script, dr *drop, args ...string) (int64, error) {
	r, err := g.exec(ctx, op, s, dr, args...)
	if err != nil {
		return 0, err
	}
	n, err := r.AsInt64()
	if err != nil {
		return 0, dibs.WrapError(dibs.EINTERNAL, "Internal error.", fmt.Errorf("redis %s reply: %w", s.name, err))
	}
	return n, nil
}

func rebuilding(dropID string) error {
	return dibs.Errorf(dibs.EUNAVAILABLE, "Drop %s is being rebuilt; please retry.", dropID)
}

// Prepare implements dibs.Gate. A drop whose state Redis lacks, or holds
// from another server than the primary (a failover), is rebuilt from scan
// under a lock, so that one node rebuilds while the others answer
// EUNAVAILABLE. If another node holds the lock, Prepare returns at once.
func (g *Gate) Prepare(ctx context.Context, d *dibs.Drop, scan dibs.ScanFunc) error {
	dr := g.register(d, scan)
	g.identity(ctx)
	cur := dr.settings.Load()
	r, err := g.exec(ctx, opPrepare, settingsScript, dr,
		stamp(cur.UpdatedAt), strconv.Itoa(cur.PerUserLimit), stamp(cur.OpensAt), micros(cur.ClosesAt), string(cur.Status), dr.channel)
	if err != nil {
		return err
	}
	reply, err := r.ToArray()
	if err != nil || len(reply) == 0 {
		return dibs.WrapError(dibs.EINTERNAL, "Internal error.", fmt.Errorf("redis settings reply: %v", err))
	}
	if built, _ := reply[0].AsInt64(); built == 1 && len(reply) == 3 {
		host, _ := reply[1].ToString()
		if !g.stale(host) {
			if s, err := reply[2].ToString(); err == nil {
				dr.setStatus(dibs.Status(s))
			}
			dr.fenced.Store(false)
			return nil
		}
		g.log.Warn("drop state was built on another redis server; rebuilding it from the record", "drop", d.ID, "built_on", host, "primary", *g.host.Load())
	}
	return g.rebuild(ctx, dr, true)
}

// Reserve implements dibs.Gate.
func (g *Gate) Reserve(ctx context.Context, r dibs.ReserveRequest) (dibs.Hold, error) {
	dr, err := g.drop(r.Drop.ID)
	if err != nil {
		return dibs.Hold{}, err
	}
	if c := dr.trusted(); c != nil && !c.mayHold(r.UserID) {
		d := dr.settings.Load()
		if err := d.Admits(*dr.status.Load(), r.Now); err != nil {
			return dibs.Hold{}, err
		}
		g.metrics.soldOutLocal.Inc()
		return dibs.Hold{}, dr.soldOut
	}

	if g.suspect.Load() {
		g.checkSoon()
		return dibs.Hold{}, dibs.Errorf(dibs.EUNAVAILABLE, "The gate is checking its Redis primary; please retry.")
	}
	if dr.fenced.Load() {
		g.unfence(dr)
		return dibs.Hold{}, rebuilding(dr.id)
	}

	epoch := dr.epoch.Load()
	res, err := g.exec(ctx, opReserve, reserveScript, dr, r.UserID, r.IdempotencyKey, r.ClaimID, stamp(r.Now), r.Unrecorded)
	if err != nil {
		return dibs.Hold{}, err
	}
	reply, err := res.ToArray()
	if err != nil || len(reply) == 0 {
		return dibs.Hold{}, badReply("reserve", err)
	}
	kind, _ := reply[0].ToString()
	switch kind {
	case "hold":
		return parseHold(r.UserID, reply)
	case "released":
		if len(reply) != 2 {
			return dibs.Hold{}, badReply("reserve", fmt.Errorf("%d fields in a released hold", len(reply)))
		}
		id, err := reply[1].ToString()
		if err != nil {
			return dibs.Hold{}, badReply("reserve", err)
		}
		return dibs.Hold{UserID: r.UserID, ClaimID: id, IdempotencyKey: r.IdempotencyKey, Existing: true, Released: true}, nil
	case "sold_out":
		if len(reply) == 4 {
			g.learnSoldOut(dr, epoch, reply)
		}
		return dibs.Hold{}, dr.soldOut
	case "limit":
		n, _ := reply[1].AsInt64()
		return dibs.Hold{}, dibs.Errorf(dibs.ELIMIT, "you hold %d claims of drop %s, the most allowed", n, dr.id)
	case "closed":
		return dibs.Hold{}, dibs.Errorf(dibs.ECLOSED, "drop %s is closed", dr.id)
	case "paused":
		return dibs.Hold{}, dibs.Errorf(dibs.EPAUSED, "drop %s is paused", dr.id)
	case "not_open":
		return dibs.Hold{}, dibs.Errorf(dibs.ENOTOPEN, "drop %s opens at %s", dr.id, dr.settings.Load().OpensAt.Format(time.RFC3339))
	case "unbuilt":
		g.rebuildLater(dr)
		return dibs.Hold{}, rebuilding(dr.id)
	case "need_id":
		return dibs.Hold{}, dibs.ErrNeedClaimID
	}
	return dibs.Hold{}, badReply("reserve", fmt.Errorf("unknown answer %q", kind))
}

func badReply(op string, err error) error {
	return dibs.WrapError(dibs.EINTERNAL, "Internal error.", fmt.Errorf("redis %s reply: %v", op, err))
}

// parseHold reads {'hold', claim id, slot, nth, key, created, durable, existing}.
func parseHold(user string, m []rueidis.RedisMessage) (dibs.Hold, error) {
	if len(m) != 8 {
		return dibs.Hold{}, badReply("reserve", fmt.Errorf("%d fields in a hold", len(m)))
	}
	h := dibs.Hold{UserID: user}
	var created, nth, durable, existing int64
	var err error
	if h.ClaimID, err = m[1].ToString(); err != nil {
		return dibs.Hold{}, badReply("reserve", err)
	}
	if h.Slot, err = m[2].AsInt64(); err != nil {
		return dibs.Hold{}, badReply("reserve", err)
	}
	if nth, err = m[3].AsInt64(); err != nil {
		return dibs.Hold{}, badReply("reserve", err)
	}
	if h.IdempotencyKey, err = m[4].ToString(); err != nil {
		return dibs.Hold{}, badReply("reserve", err)
	}
	if created, err = m[5].AsInt64(); err != nil {
		return dibs.Hold{}, badReply("reserve", err)
	}
	if durable, err = m[6].AsInt64(); err != nil {
		return dibs.Hold{}, badReply("reserve", err)
	}
	if existing, err = m[7].AsInt64(); err != nil {
		return dibs.Hold{}, badReply("reserve", err)
	}
	h.Nth, h.CreatedAt, h.Durable, h.Existing = int(nth), time.UnixMicro(created).UTC(), durable == 1, existing == 1
	return h, nil
}

// Confirm implements dibs.Gate. A drop being rebuilt needs no confirmation:
// its holds come from the record, durable.
func (g *Gate) Confirm(ctx context.Context, dropID string, claimIDs ...string) error {
	dr, err := g.drop(dropID)
	if err != nil || len(claimIDs) == 0 {
		return err
	}
	if _, err := g.execInt(ctx, opConfirm, confirmScript, dr, claimIDs...); err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	return nil
}

// Release implements dibs.Gate. Every node hears of the returned slot and
// stops answering "sold out" from memory.
func (g *Gate) Release(ctx context.Context, dropID, claimID string) (bool, error) {
	dr, err := g.drop(dropID)
	if err != nil {
		return false, err
	}
	// After the script, whatever it did: a "sold out" learnt while it ran
	// is stale now. Until then the cache is not trusted (trusted).
	defer dr.changing()()
	channel := dr.channel
	if g.muted {
		channel = g.key(dropID, "unheard")
	}
	n, err := g.execInt(ctx, opRelease, releaseScript, dr, claimID, channel, strconv.Itoa(dibs.ReleasedKeys))
	if g.releaseRan != nil {
		g.releaseRan()
	}
	switch {
	case err != nil:
		return false, err
	case n < 0:
		g.rebuildLater(dr)
		return false, rebuilding(dropID)
	}
	return n == 1, nil
}

// SetStatus implements dibs.Gate. Every node hears of it at once.
func (g *Gate) SetStatus(ctx context.Context, dropID string, s dibs.Status) error {
	dr, err := g.drop(dropID)
	if err != nil {
		return err
	}
	dr.setStatus(s)
	d := *dr.settings.Load()
	d.Status = s
	dr.settings.Store(&d) // a rebuild from here on writes it
	n, err := g.execInt(ctx, opStatus, statusScript, dr, string(s), stamp(g.opts.Now()), dr.channel)
	if err != nil {
		return err
	}
	if n < 0 {
		g.rebuildLater(dr)
	}
	return nil
}

// Remaining implements dibs.Gate. A drop this node knows to be sold out
// costs no call.
func (g *Gate) Remaining(ctx context.Context, dropID string) (int64, error) {
	dr, err := g.drop(dropID)
	if err != nil {
		return 0, err
	}
	if dr.trusted() != nil {
		return 0, nil
	}
	cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	g.metrics.call(opRemaining)
	vals, err := g.client.Do(cctx, g.client.B().Hmget().Key(dr.keys[0]).Field("built", "left").Build()).ToArray()
	if err != nil {
		return 0, g.fail(ctx, "remaining", err)
	}
	if len(vals) != 2 || vals[0].IsNil() {
		g.rebuildLater(dr)
		return 0, rebuilding(dropID)
	}
	left, err := vals[1].AsInt64()
	if err != nil {
		return 0, badReply("remaining", err)
	}
	return left, nil
}

// Holds implements dibs.Gate. It scans the drop's holders in steps, so a
// large drop never blocks Redis.
func (g *Gate) Holds(ctx context.Context, dropID string, fn func(dibs.Hold) error) error {
	dr, err := g.drop(dropID)
	if err != nil {
		return err
	}
	do := func(cmd rueidis.Completed) rueidis.RedisResult {
		cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
		defer cancel()
		g.metrics.call(opHolds)
		return g.client.Do(cctx, cmd)
	}
	built, err := do(g.client.B().Hexists().Key(dr.keys[0]).Field("built").Build()).AsBool()
	if err != nil {
		return g.fail(ctx, "holds", err)
	}
	if !built {
		g.rebuildLater(dr)
		return rebuilding(dropID)
	}
	var cursor uint64
	for {
		e, err := do(g.client.B().Hscan().Key(dr.keys[1]).Cursor(cursor).Count(500).Build()).AsScanEntry()
		if err != nil {
			return g.fail(ctx, "holds", err)
		}
		for i := 0; i+1 < len(e.Elements); i += 2 {
			var hs []wireHold
			if err := json.Unmarshal([]byte(e.Elements[i+1]), &hs); err != nil {
				return badReply("holds", fmt.Errorf("holds of %q: %w", e.Elements[i], err))
			}
			for _, w := range hs {
				if err := fn(w.hold(e.Elements[i])); err != nil {
					return err
				}
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return nil
		}
	}
}

// wireHold is a hold as the scripts store it: a JSON array of claim id,
// slot, nth, key, created (unix µs, a string) and durable (0 or 1).
type wireHold struct {
	claimID, key, created string
	slot                  int64
	nth, durable          int
}

func (w *wireHold) UnmarshalJSON(b []byte) error {
	fields := []any{&w.claimID, &w.slot, &w.nth, &w.key, &w.created, &w.durable}
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	if len(fields) != 6 {
		return fmt.Errorf("%d fields in a hold", len(fields))
	}
	return nil
}

func (w wireHold) hold(user string) dibs.Hold {
	created, _ := strconv.ParseInt(w.created, 10, 64)
	return dibs.Hold{
		UserID: user, ClaimID: w.claimID, Slot: w.slot, Nth: w.nth, IdempotencyKey: w.key,
		CreatedAt: time.UnixMicro(created).UTC(), Durable: w.durable == 1,
	}
}

// Restore implements dibs.Gate. Every node hears of it, as of a release.
func (g *Gate) Restore(ctx context.Context, c *dibs.Claim) (bool, error) {
	dr, err := g.drop(c.DropID)
	if err != nil {
		return false, err
	}
	defer dr.changing()()
	n, err := g.execInt(ctx, opRestore, restoreScript, dr,
		c.ID, c.UserID, strconv.FormatInt(c.Slot, 10), strconv.Itoa(c.Nth), c.IdempotencyKey, stamp(c.CreatedAt), dr.channel)
	switch {
	case err != nil:
		return false, err
	case n == -1:
		g.rebuildLater(dr)
		return false, rebuilding(c.DropID)
	case n == -2:
		return false, dibs.Errorf(dibs.EINVALID, "claim %s: slot %d or nth %d outside drop %s", c.ID, c.Slot, c.Nth, c.DropID)
	}
	return n == 1, nil
}

// Ping reports whether the primary answers.
func (g *Gate) Ping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	g.metrics.call(opPing)
	return g.fail(ctx, "ping", g.client.Do(cctx, g.client.B().Ping().Build()).Error())
}

// stamp is t in unix microseconds, the unit of every time the scripts see.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

// micros is stamp, but "" for the zero time: a drop that never closes.
func micros(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return stamp(t)
}
