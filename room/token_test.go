package room_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/room"
)

var secret = []byte("room-secret-0123456789abcdef0123")

func mustKeys(tb testing.TB) *room.Keys {
	tb.Helper()
	k, err := room.NewKeys(secret)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

var t0 = time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)

func TestTicketRoundTrip(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	want := dibs.Ticket{DropID: "pepero", UserID: "alice", Number: 1111, IssuedAt: t0.Add(123 * time.Millisecond)}
	tok := k.Ticket(want, 42)
	if !strings.HasPrefix(tok, "t1.") || len(tok) > 64 {
		t.Fatalf("ticket %q: want a short t1. token", tok)
	}
	got, err := k.VerifyTicket(tok, "pepero", "alice", 42)
	if err != nil || got != want {
		t.Fatalf("verify: %+v, %v; want %+v", got, err, want)
	}
	for _, c := range []struct {
		name, drop, user string
		epoch            uint64
	}{
		{"another drop", "pepero2", "alice", 42},
		{"another user", "pepero", "bob", 42},
		{"another room", "pepero", "alice", 43},
		{"user and drop run together", "pepero\x00alice", "", 42},
	} {
		if _, err := k.VerifyTicket(tok, c.drop, c.user, c.epoch); dibs.ErrorCode(err) != dibs.ENOTFOUND {
			t.Errorf("%s: %v, want not_found", c.name, err)
		}
	}
}

func TestAdmission(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	p := dibs.Pass{DropID: "iphone", UserID: "alice", Number: 7, Batch: 3, Expires: t0.Add(30 * time.Second)}
	tok := k.Admission(p, 9)
	got, err := k.VerifyAdmission(tok, "iphone", "alice", 9, t0)
	if err != nil || got != p {
		t.Fatalf("verify: %+v, %v; want %+v", got, err, p)
	}
	if got.ClaimKey() != "admission-7" {
		t.Fatalf("claim key %q", got.ClaimKey())
	}
	ticket := k.Ticket(dibs.Ticket{DropID: "iphone", UserID: "alice", Number: 7, IssuedAt: t0}, 9)
	other, err := room.NewKeys([]byte("another-secret-0123456789abcdef0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, token, drop, user string
		epoch                   uint64
		now                     time.Time
		code                    string
	}{
		{"none", "", "iphone", "alice", 9, t0, dibs.EADMISSIONREQUIRED},
		{"expired", tok, "iphone", "alice", 9, p.Expires, dibs.EADMISSIONINVALID},
		{"another user's", tok, "iphone", "bob", 9, t0, dibs.EADMISSIONINVALID},
		{"another drop's", tok, "ipad", "alice", 9, t0, dibs.EADMISSIONINVALID},
		{"another room's", tok, "iphone", "alice", 10, t0, dibs.EADMISSIONINVALID},
		{"a ticket", ticket, "iphone", "alice", 9, t0, dibs.EADMISSIONINVALID},
		{"another secret's", other.Admission(p, 9), "iphone", "alice", 9, t0, dibs.EADMISSIONINVALID},
		{"too long", tok + strings.Repeat("A", 200), "iphone", "alice", 9, t0, dibs.EADMISSIONINVALID},
	} {
		if _, err := k.VerifyAdmission(c.token, c.drop, c.user, c.epoch, c.now); dibs.ErrorCode(err) != c.code {
			t.Errorf("%s: %v, want %s", c.name, err, c.code)
		}
	}
}

// TestTamperedTokens changes every character of valid tokens to every
// other one of the alphabet and a few besides: none may verify.
func TestTamperedTokens(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	ticket := k.Ticket(dibs.Ticket{DropID: "d", UserID: "u", Number: 5, IssuedAt: t0}, 1)
	adm := k.Admission(dibs.Pass{DropID: "d", UserID: "u", Number: 5, Batch: 1, Expires: t0.Add(time.Hour)}, 1)
	chars := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00"
	for _, tok := range []string{ticket, adm} {
		for i := range len(tok) {
			for _, c := range []byte(chars) {
				if tok[i] == c {
					continue
				}
				bad := []byte(tok)
				bad[i] = c
				if _, err := k.VerifyTicket(string(bad), "d", "u", 1); err == nil {
					t.Fatalf("tampered ticket %q verified", bad)
				}
				if _, err := k.VerifyAdmission(string(bad), "d", "u", 1, t0); err == nil {
					t.Fatalf("tampered admission %q verified", bad)
				}
			}
		}
		for i := range len(tok) { // truncated and extended
			if _, err := k.VerifyAdmission(tok[:i], "d", "u", 1, t0); err == nil {
				t.Fatalf("truncated token %q verified", tok[:i])
			}
		}
		if _, err := k.VerifyAdmission(tok+"A", "d", "u", 1, t0); err == nil {
			t.Fatal("extended token verified")
		}
	}
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	if _, err := room.NewKeys(secret[:31]); err == nil {
		t.Fatal("a 31-byte secret was accepted")
	}
	a, err := room.DeriveSecret([]byte("passport-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := room.DeriveSecret([]byte("passport-secret-0123456789abcdef"))
	c, _ := room.DeriveSecret([]byte("passport-secret-0123456789abcdeF"))
	if len(a) != 32 || !bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Contains(a, []byte("passport")) {
		t.Fatalf("derived secrets %x %x %x: want 32 bytes, stable, distinct per passport secret", a, b, c)
	}
	k := mustKeys(t)
	if k.Person("d", "alice") == k.Person("d", "bob") || k.Person("d", "alice") == k.Person("e", "alice") {
		t.Fatal("person keys collide across users or drops")
	}
}

// fuzzKeys are the keys and the one ticket and admission the fuzz targets
// attack.
func fuzzKeys(f *testing.F) (*room.Keys, string, string) {
	k := mustKeys(f)
	ticket := k.Ticket(dibs.Ticket{DropID: "d", UserID: "u", Number: 5, IssuedAt: t0}, 1)
	adm := k.Admission(dibs.Pass{DropID: "d", UserID: "u", Number: 5, Batch: 2, Expires: t0.Add(time.Hour)}, 1)
	return k, ticket, adm
}

// FuzzVerifyTicket: no input panics, and the only token that verifies is
// the one that was signed.
func FuzzVerifyTicket(f *testing.F) {
	k, ticket, adm := fuzzKeys(f)
	for _, s := range []string{ticket, adm, "", "t1.", "t1..", "t1." + strings.Repeat("A", 22) + "." + strings.Repeat("A", 22), ticket[:len(ticket)-1] + "B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := k.VerifyTicket(s, "d", "u", 1); err == nil && s != ticket {
			t.Fatalf("a ticket that was never signed verified: %q", s)
		}
	})
}

// FuzzVerifyAdmission: no input panics, and the only token that verifies
// is the one that was signed.
func FuzzVerifyAdmission(f *testing.F) {
	k, ticket, adm := fuzzKeys(f)
	for _, s := range []string{adm, ticket, "", "a1.", "a1..", "a1." + strings.Repeat("A", 32) + "." + strings.Repeat("A", 22), adm[:len(adm)-1] + "B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := k.VerifyAdmission(s, "d", "u", 1, t0); err == nil && s != adm {
			t.Fatalf("an admission that was never signed verified: %q", s)
		}
	})
}

// FuzzTamperAdmission flips bytes of a valid admission at fuzzed places:
// a changed token never verifies.
func FuzzTamperAdmission(f *testing.F) {
	k, _, adm := fuzzKeys(f)
	f.Add(uint8(3), uint8(1), uint8(40), uint8(0x20))
	f.Fuzz(func(t *testing.T, i, x, j, y uint8) {
		b := []byte(adm)
		b[int(i)%len(b)] ^= x
		b[int(j)%len(b)] ^= y
		if _, err := k.VerifyAdmission(string(b), "d", "u", 1, t0); err == nil && string(b) != adm {
			t.Fatalf("tampered admission %q verified", b)
		}
	})
}
