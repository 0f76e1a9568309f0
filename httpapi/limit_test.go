package httpapi

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// TestJoinLimiter: a client gets its burst and then the rate, within a few
// percent, however fast it asks; other clients are not affected; the map
// of clients stays bounded.
func TestJoinLimiter(t *testing.T) {
	t.Parallel()
	l := newJoinLimiter(JoinLimit{Rate: 50, Burst: 10, MaxClients: 3})
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	t0 := time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)
	allowed := 0
	for ms := range 2000 { // 1,000 asks a second for 2 s
		if _, ok := l.allow(a, t0.Add(time.Duration(ms)*time.Millisecond)); ok {
			allowed++
		}
	}
	if want := 10 + 50*2; allowed < want*95/100 || allowed > want*105/100 {
		t.Fatalf("allowed %d of 2,000 in 2 s, want %d ±5%%", allowed, want)
	}
	l.allow(a, t0.Add(2*time.Second))
	wait, ok := l.allow(a, t0.Add(2*time.Second))
	if ok || wait <= 0 || wait > 20*time.Millisecond {
		t.Fatalf("over the rate: ok=%v wait=%s, want a wait of at most one interval", ok, wait)
	}
	if _, ok := l.allow(b, t0.Add(2*time.Second)); !ok {
		t.Fatal("another client was limited")
	}
	for i := range 10 {
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32), t0)
	}
	if n := l.lru.Len(); n != 3 || len(l.byKey) != 3 {
		t.Fatalf("%d clients remembered, want at most 3", n)
	}
	if _, ok := (*joinLimiter)(nil).allow(a, t0); !ok {
		t.Fatal("no limit refused a join")
	}
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, remote, header, value, want string
	}{
		{"connection", "192.0.2.7:5555", "", "", "192.0.2.7/32"},
		{"header ignored unless trusted", "192.0.2.7:5555", "", "203.0.113.9", "192.0.2.7/32"},
		{"trusted header, last entry", "10.0.0.1:5555", "X-Forwarded-For", "198.51.100.1, 203.0.113.9", "203.0.113.9/32"},
		{"trusted header missing", "10.0.0.1:5555", "X-Forwarded-For", "", "10.0.0.1/32"},
		{"trusted header garbage", "10.0.0.1:5555", "X-Real-IP", "not an address", "10.0.0.1/32"},
		{"IPv6 per /64", "[2001:db8:1:2:3:4:5:6]:443", "", "", "2001:db8:1:2::/64"},
		{"IPv4 in IPv6", "[::ffff:192.0.2.7]:443", "", "", "192.0.2.7/32"},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest("POST", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.value != "" {
			name := tt.header
			if name == "" {
				name = "X-Forwarded-For"
			}
			r.Header.Set(name, tt.value)
		}
		if got := clientKey(r, tt.header); got.String() != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}
