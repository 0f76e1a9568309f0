package passport_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/passport"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	now    = time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)
)

func verifier(tb testing.TB) *passport.Verifier {
	tb.Helper()
	v, err := passport.NewVerifier(secret, passport.Options{Now: func() time.Time { return now }})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func sign(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	t.Parallel()
	v := verifier(t)
	exp := now.Add(time.Hour).Unix()
	valid := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": exp})
	parts := strings.Split(valid, ".")
	otherPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","exp":` + jwt.NewNumericDate(now.Add(time.Hour)).String() + `}`))

	tests := []struct {
		name, token, user string
	}{
		{"valid", valid, "alice"},
		{"within leeway", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "bob", "exp": now.Add(-10 * time.Second).Unix()}), "bob"},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Minute).Unix()}), ""},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"}), ""},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": exp, "nbf": now.Add(time.Hour).Unix()}), ""},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": exp}), ""},
		{"alg HS512", sign(t, jwt.SigningMethodHS512, secret, jwt.MapClaims{"sub": "alice", "exp": exp}), ""},
		{"other secret", sign(t, jwt.SigningMethodHS256, []byte("ffffffffffffffffffffffffffffffff"), jwt.MapClaims{"sub": "alice", "exp": exp}), ""},
		{"payload swapped", parts[0] + "." + otherPayload + "." + parts[2], ""},
		{"signature dropped", parts[0] + "." + parts[1] + ".", ""},
		{"empty sub", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "", "exp": exp}), ""},
		{"control char sub", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a\nb", "exp": exp}), ""},
		{"long sub", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": strings.Repeat("a", dibs.MaxUserIDLen+1), "exp": exp}), ""},
		{"empty", "", ""},
		{"garbage", "not.a.jwt", ""},
		{"huge", strings.Repeat("a", passport.MaxTokenLen+1), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := v.Verify(tt.token)
			if tt.user != "" {
				if err != nil || user != tt.user {
					t.Fatalf("Verify = %q, %v; want %q", user, err, tt.user)
				}
				return
			}
			if err == nil || dibs.ErrorCode(err) != dibs.EUNAUTHORIZED {
				t.Fatalf("Verify = %q, %v; want unauthorized", user, err)
			}
		})
	}
}

func TestShortSecretRefused(t *testing.T) {
	t.Parallel()
	if _, err := passport.NewVerifier([]byte("short"), passport.Options{}); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
}

func TestIssueRoundTrip(t *testing.T) {
	t.Parallel()
	tok, err := passport.Issue(secret, "carol", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if user, err := verifier(t).Verify(tok); err != nil || user != "carol" {
		t.Fatalf("Verify(Issue) = %q, %v", user, err)
	}
}

// FuzzVerify: no input panics, and no change to a valid passport is
// accepted as some other passport.
func FuzzVerify(f *testing.F) {
	valid, err := passport.Issue(secret, "alice", now, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, 0, byte(0))
	f.Add(valid, len(valid)-1, byte('A'))
	f.Add("eyJhbGciOiJub25lIn0.e30.", 3, byte('x'))
	v := verifier(f)
	f.Fuzz(func(t *testing.T, token string, pos int, b byte) {
		v.Verify(token) // must not panic
		if len(valid) == 0 {
			return
		}
		mutated := []byte(valid)
		pos = ((pos % len(mutated)) + len(mutated)) % len(mutated)
		mutated[pos] = b
		if string(mutated) == valid {
			return
		}
		if user, err := v.Verify(string(mutated)); err == nil {
			t.Fatalf("mutated passport %q accepted as %q", mutated, user)
		}
	})
}

// TestCacheHonoursExpiry: a remembered passport stops working when it
// expires, as an unremembered one would.
func TestCacheHonoursExpiry(t *testing.T) {
	t.Parallel()
	clock := now
	v, err := passport.NewVerifier(secret, passport.Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := passport.Issue(secret, "dave", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // verify, then hit the cache
		if user, err := v.Verify(tok); err != nil || user != "dave" {
			t.Fatalf("Verify = %q, %v", user, err)
		}
	}
	clock = now.Add(time.Minute + passport.DefaultLeeway + time.Second)
	if _, err := v.Verify(tok); dibs.ErrorCode(err) != dibs.EUNAUTHORIZED {
		t.Fatalf("expired passport from the cache: %v, want unauthorized", err)
	}
}
