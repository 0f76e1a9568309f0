package room

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/bits"
)

// Position is where ticket n of a shuffled pre-queue of pre tickets stands
// (both 1-based): a permutation of 1..pre keyed by seed, computed without
// storing a list.
//
// The permutation is a four-round Feistel network over the smallest domain
// of 2^(2h) values that holds 0..pre-1, walked until it lands inside the
// range ("cycle walking"). Round r maps (L, R) to (R, L xor F(r, R)) where
// F(r, R) is the first 8 bytes of SHA-256(seed || r || R) (r one byte, R
// eight bytes big-endian) read big-endian, masked to h bits; the input x =
// n-1 splits into L = x >> h and R = x & (2^h - 1).
//
// Anyone who has the published seed and pre-queue size can recompute every
// position, and so the whole order; docs/waiting-room.md shows how.
func Position(seed []byte, pre, n uint64) uint64 {
	if pre <= 1 || n == 0 || n > pre {
		return n
	}
	h := uint((bits.Len64(pre-1) + 1) / 2)
	x := n - 1
	for {
		x = feistel(seed, h, x)
		if x < pre {
			return x + 1
		}
	}
}

func feistel(seed []byte, h uint, x uint64) uint64 {
	mask := uint64(1)<<h - 1
	l, r := x>>h, x&mask
	if len(seed) > 55 { // rooms draw 32-byte seeds; a longer one is hashed to fit one block
		s := sha256.Sum256(seed)
		seed = s[:]
	}
	var buf [64]byte
	k := copy(buf[:], seed)
	for round := range 4 {
		buf[k] = byte(round)
		binary.BigEndian.PutUint64(buf[k+1:], r)
		f := sha256.Sum256(buf[:k+9])
		l, r = r, l^(binary.BigEndian.Uint64(f[:8])&mask)
	}
	return l<<h | r
}

// SeedDigest is the hex SHA-256 of a seed: published before the room opens
// as a commitment, so that the seed revealed at opening is seen to be the
// one chosen before anyone joined.
func SeedDigest(seed []byte) string {
	s := sha256.Sum256(seed)
	return hex.EncodeToString(s[:])
}
