package httpapi

import (
	"container/list"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// JoinLimit bounds waiting-room joins per client address, so that one
// machine cannot mint places for a thousand accounts in a second. IPv6
// clients are counted per /64, the block one subscriber usually gets.
type JoinLimit struct {
	Rate  float64 // joins per second per address; zero or less: unlimited
	Burst int     // joins at once (at least 1)
	// MaxClients bounds the addresses remembered (least recently seen
	// forgotten first; default DefaultMaxJoinClients).
	MaxClients int
}

// Defaults of JoinLimit as dibs serve uses them. People behind one NAT
// share an address, so the rate allows a busy office; scripts minting
// places for many accounts are held to it.
const (
	DefaultJoinRate       = 10
	DefaultJoinBurst      = 20
	DefaultMaxJoinClients = 100_000
)

// joinLimiter keeps one token bucket per client address in an LRU of
// bounded size. A nil joinLimiter allows everything.
type joinLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu    sync.Mutex
	lru   *list.List // of *bucket, most recently used first
	byKey map[netip.Prefix]*list.Element
}

type bucket struct {
	key netip.Prefix
	lim *rate.Limiter
}

func newJoinLimiter(l JoinLimit) *joinLimiter {
	if l.Rate <= 0 {
		return nil
	}
	if l.MaxClients <= 0 {
		l.MaxClients = DefaultMaxJoinClients
	}
	return &joinLimiter{
		limit: rate.Limit(l.Rate), burst: max(l.Burst, 1), max: l.MaxClients,
		lru: list.New(), byKey: make(map[netip.Prefix]*list.Element),
	}
}

// allow takes a token of key's bucket at now, or says how long until one
// is there.
func (l *joinLimiter) allow(key netip.Prefix, now time.Time) (time.Duration, bool) {
	if l == nil {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if el, ok := l.byKey[key]; ok {
		l.lru.MoveToFront(el)
		b = el.Value.(*bucket)
	} else {
		if l.lru.Len() >= l.max {
			oldest := l.lru.Back()
			l.lru.Remove(oldest)
			delete(l.byKey, oldest.Value.(*bucket).key)
		}
		b = &bucket{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.byKey[key] = l.lru.PushFront(b)
	}
	if b.lim.AllowN(now, 1) {
		return 0, true
	}
	r := b.lim.ReserveN(now, 1)
	defer r.CancelAt(now)
	return r.DelayFrom(now), false
}

// clientKey is the address a request is counted under: from the trusted
// header if one is configured and present (its last entry: the one the
// proxy in front of dibs wrote), else the connection's. IPv6 addresses
// count per /64.
func clientKey(r *http.Request, header string) netip.Prefix {
	var addr netip.Addr
	if header != "" {
		if vs := r.Header.Values(header); len(vs) > 0 {
			v := vs[len(vs)-1]
			if i := strings.LastIndexByte(v, ','); i >= 0 {
				v = v[i+1:]
			}
			addr, _ = netip.ParseAddr(strings.TrimSpace(v))
		}
	}
	if !addr.IsValid() {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = ap.Addr()
		}
	}
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}
