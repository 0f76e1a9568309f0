package memory

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dibs-io/dibs"
)

var _ dibs.Room = (*Room)(nil)

// Room keeps waiting rooms in memory: the embedded default, where one
// process leads every room. A person costs one entry of a hash map from
// their 64-bit key to their 32-bit ticket number, under 30 bytes, and one
// bit that says whether their ticket won.
type Room struct {
	mu    sync.RWMutex
	rooms map[string]*room
}

// NewRoom returns an empty set of waiting rooms.
func NewRoom() *Room {
	return &Room{rooms: make(map[string]*room)}
}

// personShards spreads joins over locks; a power of two.
const personShards = 64

type room struct {
	issued atomic.Uint64

	mu         sync.Mutex
	st         dibs.RoomState // all but Issued
	leader     string
	leaseUntil time.Time
	won        []uint64 // bit n: ticket n won a claim

	people [personShards]struct {
		mu sync.Mutex
		m  map[uint64]uint32
	}
}

// room returns the drop's room, creating it from fresh.
func (r *Room) room(dropID string, fresh dibs.RoomSeed) *room {
	r.mu.RLock()
	rm := r.rooms[dropID]
	r.mu.RUnlock()
	if rm != nil {
		return rm
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if rm = r.rooms[dropID]; rm == nil {
		rm = &room{}
		rm.st.Epoch = fresh.Epoch
		rm.st.Seed = slices.Clone(fresh.Seed)
		for i := range rm.people {
			rm.people[i].m = make(map[uint64]uint32)
		}
		r.rooms[dropID] = rm
	}
	return rm
}

// Join implements dibs.Room.
func (r *Room) Join(ctx context.Context, dropID string, person uint64, fresh dibs.RoomSeed) (dibs.Place, error) {
	rm := r.room(dropID, fresh)
	sh := &rm.people[person%personShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n, ok := sh.m[person]; ok {
		return dibs.Place{Number: uint64(n), Epoch: rm.st.Epoch, Existing: true}, nil
	}
	n := rm.issued.Add(1)
	if n > dibs.MaxTicketNumber {
		rm.issued.Add(^uint64(0))
		return dibs.Place{}, dibs.Errorf(dibs.ECONFLICT, "the waiting room of drop %s is full", dropID)
	}
	sh.m[person] = uint32(n)
	return dibs.Place{Number: n, Epoch: rm.st.Epoch}, nil
}

// Find implements dibs.Room.
func (r *Room) Find(ctx context.Context, dropID string, person uint64) (dibs.Place, bool, error) {
	r.mu.RLock()
	rm := r.rooms[dropID]
	r.mu.RUnlock()
	if rm == nil {
		return dibs.Place{}, false, nil
	}
	sh := &rm.people[person%personShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n, ok := sh.m[person]
	if !ok {
		return dibs.Place{}, false, nil
	}
	return dibs.Place{Number: uint64(n), Epoch: rm.st.Epoch, Existing: true}, true, nil
}

// Sync implements dibs.Room. Leases follow the process's clock.
func (r *Room) Sync(ctx context.Context, dropID, node string, lease time.Duration, fresh dibs.RoomSeed) (dibs.RoomState, bool, error) {
	rm := r.room(dropID, fresh)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	leader := false
	if node != "" {
		now := time.Now()
		if rm.leader == node || !now.Before(rm.leaseUntil) {
			rm.leader, rm.leaseUntil = node, now.Add(lease)
			leader = true
		}
	}
	return rm.state(), leader, nil
}

// Advance implements dibs.Room.
func (r *Room) Advance(ctx context.Context, dropID, node string, a dibs.Advance) (dibs.RoomState, error) {
	r.mu.RLock()
	rm := r.rooms[dropID]
	r.mu.RUnlock()
	if rm == nil {
		return dibs.RoomState{}, dibs.Errorf(dibs.ECONFLICT, "no waiting room for drop %s", dropID)
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.leader != node || !time.Now().Before(rm.leaseUntil) {
		return dibs.RoomState{}, dibs.Errorf(dibs.ECONFLICT, "node %s does not lead the waiting room of drop %s", node, dropID)
	}
	st := &rm.st
	issued := rm.issued.Load()
	if a.Open && !st.Opened {
		st.Opened, st.PreQueue = true, issued
	}
	i := 0
	for i < len(st.Batches) && st.Batches[i].At.Before(a.ExpireBefore) {
		i++
	}
	st.Batches = slices.Delete(st.Batches, 0, i)
	if n := min(a.Admit, issued-min(st.Serving, issued)); n > 0 {
		if k := len(st.Batches) - 1; k >= 0 && a.Now.Sub(st.Batches[k].At) < a.BatchWindow {
			st.Batches[k].End += n
		} else {
			st.LastBatch++
			st.Batches = append(st.Batches, dibs.Batch{Seq: st.LastBatch, At: a.Now, Start: st.Serving + 1, End: st.Serving + n})
		}
		st.Serving += n
	}
	st.SoldOut, st.Rate, st.Remaining, st.LastAdvance = a.SoldOut, a.Rate, a.Remaining, a.Now
	return rm.state(), nil
}

// Use implements dibs.Room.
func (r *Room) Use(ctx context.Context, dropID string, seq, number uint64) error {
	r.mu.RLock()
	rm := r.rooms[dropID]
	r.mu.RUnlock()
	if rm == nil {
		return nil
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	for i := range rm.st.Batches {
		if rm.st.Batches[i].Seq == seq {
			rm.st.Batches[i].Used++
		}
	}
	if w := int(number / 64); w >= len(rm.won) {
		rm.won = append(rm.won, make([]uint64, w+1-len(rm.won))...)
	}
	rm.won[number/64] |= 1 << (number % 64)
	return nil
}

// Won implements dibs.Room.
func (r *Room) Won(ctx context.Context, dropID string, number uint64) (bool, error) {
	r.mu.RLock()
	rm := r.rooms[dropID]
	r.mu.RUnlock()
	if rm == nil {
		return false, nil
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	w := number / 64
	return w < uint64(len(rm.won)) && rm.won[w]&(1<<(number%64)) != 0, nil
}

// state is a copy of the room's state; the caller holds mu.
func (rm *room) state() dibs.RoomState {
	st := rm.st
	st.Issued = rm.issued.Load()
	st.Seed = slices.Clone(st.Seed)
	st.Batches = slices.Clone(st.Batches)
	return st
}
