package redis

import (
	"context"
	_ "embed"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/dibs-io/dibs"
)

var _ dibs.Room = (*Room)(nil)

var (
	//go:embed room_join.lua
	roomJoinLua string
	//go:embed room_sync.lua
	roomSyncLua string
	//go:embed room_advance.lua
	roomAdvanceLua string
	//go:embed room_use.lua
	roomUseLua string

	roomJoin    = newScript("room_join", roomJoinLua)
	roomSync    = newScript("room_sync", roomSyncLua)
	roomAdvance = newScript("room_advance", roomAdvanceLua)
	roomUse     = newScript("room_use", roomUseLua)
)

// DefaultRoomKeyTTL is how long a room's keys outlive its last write.
const DefaultRoomKeyTTL = 7 * 24 * time.Hour

// personBuckets is how many small hashes hold a room's people. Redis keeps
// a hash of up to hash-max-listpack-entries (128 by default) fields as one
// compact listpack, about 14 bytes a person here; a million people fill
// the buckets to about 15 each, and up to about five million stay compact.
const personBuckets = 1 << 16

// Room keeps waiting rooms in Redis, shared by every node. Per drop:
//
//	{drop:ID}:room         hash: epoch, seed, issued, serving, opened, pre,
//	                       soldout, rate, rem, last, batches b:<seq> and
//	                       their used admissions u:<seq>
//	{drop:ID}:room:lease   the leader's node name, with a TTL
//	{drop:ID}:room:p:XXXX  65,536 bucket hashes: 6-byte person key → ticket number
//	{drop:ID}:room:won     bitmap: bit n set when ticket n won a claim
//
// The client must talk to the primary only.
type Room struct {
	client Client
	prefix string
	ttl    string // seconds
}

// RoomOptions tune a Room.
type RoomOptions struct {
	// Prefix starts every key, so that tests (or deployments) can share a
	// Redis. It must not contain '{' or '}'.
	Prefix string
	// KeyTTL is how long a room's keys outlive its last write (default
	// DefaultRoomKeyTTL).
	KeyTTL time.Duration
}

// NewRoom returns waiting rooms kept in Redis through client. Under
// miniredis, the client needs DisableCache.
func NewRoom(client Client, o RoomOptions) (*Room, error) {
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("room key prefix %q must not contain braces", o.Prefix)
	}
	if o.KeyTTL <= 0 {
		o.KeyTTL = DefaultRoomKeyTTL
	}
	return &Room{client: client, prefix: o.Prefix, ttl: strconv.FormatInt(int64(o.KeyTTL/time.Second), 10)}, nil
}

func (r *Room) roomKey(dropID string) string { return r.prefix + "{drop:" + dropID + "}:room" }

// person is the bucket key and field of a person: the top 16 bits of the
// person key pick the bucket, the other 48 are the field.
func (r *Room) person(dropID string, person uint64) (key, field string) {
	var f [8]byte
	binary.BigEndian.PutUint64(f[:], person)
	return fmt.Sprintf("%s:p:%04x", r.roomKey(dropID), person>>48), string(f[2:])
}

// Join implements dibs.Room.
func (r *Room) Join(ctx context.Context, dropID string, person uint64, fresh dibs.RoomSeed) (dibs.Place, error) {
	bucket, field := r.person(dropID, person)
	res, err := roomJoin.run(ctx, r.client, false, []string{r.roomKey(dropID), bucket},
		field, r.ttl, strconv.FormatUint(fresh.Epoch, 10), string(fresh.Seed)).ToArray()
	if err != nil {
		return dibs.Place{}, fmt.Errorf("join: %w", err)
	}
	if len(res) != 3 {
		return dibs.Place{}, fmt.Errorf("join: %d values in the answer", len(res))
	}
	n, err1 := res[0].AsInt64()
	e, err2 := res[1].ToString()
	existing, err3 := res[2].AsInt64()
	epoch, err4 := strconv.ParseUint(e, 10, 64)
	if err := firstErr(err1, err2, err3, err4); err != nil {
		return dibs.Place{}, fmt.Errorf("join: %w", err)
	}
	return dibs.Place{Number: uint64(n), Epoch: epoch, Existing: existing == 1}, nil
}

// Find implements dibs.Room.
func (r *Room) Find(ctx context.Context, dropID string, person uint64) (dibs.Place, bool, error) {
	bucket, field := r.person(dropID, person)
	res := r.client.DoMulti(ctx,
		r.client.B().Hget().Key(bucket).Field(field).Build(),
		r.client.B().Hget().Key(r.roomKey(dropID)).Field("epoch").Build())
	n, err1 := res[0].AsUint64()
	epoch, err2 := res[1].AsUint64()
	if rueidis.IsRedisNil(err1) || rueidis.IsRedisNil(err2) {
		return dibs.Place{}, false, nil
	}
	if err := firstErr(err1, err2); err != nil {
		return dibs.Place{}, false, fmt.Errorf("find place: %w", err)
	}
	return dibs.Place{Number: n, Epoch: epoch, Existing: true}, true, nil
}

// Sync implements dibs.Room. Leases follow the Redis server's clock.
func (r *Room) Sync(ctx context.Context, dropID, node string, lease time.Duration, fresh dibs.RoomSeed) (dibs.RoomState, bool, error) {
	key := r.roomKey(dropID)
	res, err := roomSync.run(ctx, r.client, false, []string{key, key + ":lease"},
		node, strconv.FormatInt(max(lease.Milliseconds(), 1), 10),
		strconv.FormatUint(fresh.Epoch, 10), string(fresh.Seed), r.ttl,
	).ToArray()
	if err != nil {
		return dibs.RoomState{}, false, fmt.Errorf("sync: %w", err)
	}
	if len(res) != 2 {
		return dibs.RoomState{}, false, fmt.Errorf("sync: %d values in the answer", len(res))
	}
	leader, err := res[0].AsInt64()
	if err != nil {
		return dibs.RoomState{}, false, fmt.Errorf("sync: %w", err)
	}
	st, err := parseRoom(&res[1])
	if err != nil {
		return dibs.RoomState{}, false, fmt.Errorf("sync: %w", err)
	}
	return st, leader == 1, nil
}

// Advance implements dibs.Room.
func (r *Room) Advance(ctx context.Context, dropID, node string, a dibs.Advance) (dibs.RoomState, error) {
	key := r.roomKey(dropID)
	res, err := roomAdvance.run(ctx, r.client, false, []string{key, key + ":lease"},
		node,
		strconv.FormatInt(a.Now.UnixMilli(), 10),
		flag(a.Open),
		strconv.FormatUint(a.Admit, 10),
		strconv.FormatInt(a.ExpireBefore.UnixMilli(), 10),
		strconv.FormatInt(a.BatchWindow.Milliseconds(), 10),
		flag(a.SoldOut),
		strconv.FormatFloat(a.Rate, 'g', 8, 64),
		strconv.FormatInt(a.Remaining, 10),
		r.ttl,
	).ToArray()
	if err != nil {
		return dibs.RoomState{}, fmt.Errorf("advance: %w", err)
	}
	if len(res) == 0 {
		return dibs.RoomState{}, fmt.Errorf("advance: empty answer")
	}
	if ok, err := res[0].AsInt64(); err != nil {
		return dibs.RoomState{}, fmt.Errorf("advance: %w", err)
	} else if ok != 1 || len(res) != 2 {
		return dibs.RoomState{}, dibs.Errorf(dibs.ECONFLICT, "node %s does not lead the waiting room of drop %s", node, dropID)
	}
	st, err := parseRoom(&res[1])
	if err != nil {
		return dibs.RoomState{}, fmt.Errorf("advance: %w", err)
	}
	return st, nil
}

// Use implements dibs.Room.
func (r *Room) Use(ctx context.Context, dropID string, seq, number uint64) error {
	key := r.roomKey(dropID)
	err := roomUse.run(ctx, r.client, false, []string{key, key + ":won"},
		strconv.FormatUint(seq, 10), strconv.FormatUint(number, 10), r.ttl).Error()
	if err != nil {
		return fmt.Errorf("use admission: %w", err)
	}
	return nil
}

// Won implements dibs.Room.
func (r *Room) Won(ctx context.Context, dropID string, number uint64) (bool, error) {
	bit, err := r.client.Do(ctx, r.client.B().Getbit().Key(r.roomKey(dropID)+":won").Offset(int64(number)).Build()).AsInt64()
	if err != nil {
		return false, fmt.Errorf("read won ticket: %w", err)
	}
	return bit == 1, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// parseRoom reads a room hash.
func parseRoom(m *rueidis.RedisMessage) (dibs.RoomState, error) {
	h, err := m.AsStrMap()
	if err != nil {
		return dibs.RoomState{}, err
	}
	var st dibs.RoomState
	var errs []error
	u := func(field string) uint64 {
		v, ok := h[field]
		if !ok {
			return 0
		}
		n, err := strconv.ParseUint(v, 10, 64)
		errs = append(errs, err)
		return n
	}
	i := func(field string) int64 {
		v, ok := h[field]
		if !ok {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		errs = append(errs, err)
		return n
	}
	st.Epoch = u("epoch")
	st.Seed = []byte(h["seed"])
	st.Issued = u("issued")
	st.Serving = u("serving")
	st.Opened = h["opened"] == "1"
	st.PreQueue = u("pre")
	st.SoldOut = h["soldout"] == "1"
	if v, ok := h["rate"]; ok {
		f, err := strconv.ParseFloat(v, 64)
		errs = append(errs, err)
		st.Rate = f
	}
	st.Remaining = i("rem")
	if ms := i("last"); ms > 0 {
		st.LastAdvance = time.UnixMilli(ms).UTC()
	}
	st.LastBatch = u("blast")
	first := max(u("bfirst"), 1)
	for seq := first; seq <= st.LastBatch; seq++ {
		v, ok := h["b:"+strconv.FormatUint(seq, 10)]
		if !ok {
			continue
		}
		var at int64
		var start, end uint64
		if _, err := fmt.Sscanf(v, "%d %d %d", &at, &start, &end); err != nil {
			errs = append(errs, fmt.Errorf("batch %d %q: %w", seq, v, err))
			continue
		}
		b := dibs.Batch{Seq: seq, At: time.UnixMilli(at).UTC(), Start: start, End: end}
		if v, ok := h["u:"+strconv.FormatUint(seq, 10)]; ok {
			b.Used, err = strconv.ParseUint(v, 10, 64)
			errs = append(errs, err)
		}
		st.Batches = append(st.Batches, b)
	}
	if err := firstErr(errs...); err != nil {
		return dibs.RoomState{}, fmt.Errorf("parse room: %w", err)
	}
	return st, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
