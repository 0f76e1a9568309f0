package passport

import (
	"hash/maphash"
	"sync"
	"time"
)

// DefaultCacheSize is how many verified passports a Verifier remembers.
// A passport is about 200 bytes, so the default costs about 16 MB at most.
const DefaultCacheSize = 65536

const cacheShards = 32

// cache remembers passports that verified, until they expire, so that a
// user pressing again, polling a claim or following a queue ticket is not
// re-verified each time. It is keyed by the whole token: a hit is the very
// same bytes that verified before.
type cache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
	per    int // entries per shard
}

type cacheShard struct {
	mu sync.Mutex
	m  map[string]cacheEntry
}

type cacheEntry struct {
	user string
	exp  int64 // unix nanoseconds after which the entry is no use
}

func newCache(size int) *cache {
	c := &cache{seed: maphash.MakeSeed(), per: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]cacheEntry)
	}
	return c
}

func (c *cache) shard(token string) *cacheShard {
	return &c.shards[maphash.String(c.seed, token)%cacheShards]
}

func (c *cache) get(token string, now time.Time) (string, bool) {
	s := c.shard(token)
	s.mu.Lock()
	e, ok := s.m[token]
	s.mu.Unlock()
	if !ok || now.UnixNano() > e.exp {
		return "", false
	}
	return e.user, true
}

func (c *cache) put(token, user string, exp time.Time) {
	s := c.shard(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= c.per {
		for k := range s.m { // map iteration starts anywhere: a random eviction
			delete(s.m, k)
			break
		}
	}
	s.m[token] = cacheEntry{user: user, exp: exp.UnixNano()}
}
