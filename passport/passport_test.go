package passport_test

import (
	"encoding/base64"
	"fmt"
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

// TestPolicy: the lifetime, issue time, issuer and audience rules, and
// time claims that are not numbers. Every refusal is EUNAUTHORIZED with a
// message that says which rule.
func TestPolicy(t *testing.T) {
	t.Parallel()
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	const day = 24 * time.Hour
	defaults := passport.Options{}
	policy := passport.Options{Issuer: "main", Audience: "dibs", MaxLifetime: time.Hour}

	tests := []struct {
		name   string
		opts   passport.Options
		claims jwt.MapClaims
		refuse string // a piece of the refusal's message; empty: accepted
	}{
		{"lifetime of the maximum", defaults, jwt.MapClaims{"iat": at(-time.Hour), "exp": at(day - time.Hour)}, ""},
		{"lifetime beyond the maximum", defaults, jwt.MapClaims{"iat": at(-time.Hour), "exp": at(day - time.Hour + time.Second)}, "longer than 24h0m0s"},
		{"lifetime beyond the maximum, mostly spent", defaults, jwt.MapClaims{"iat": at(-30 * day), "exp": at(time.Minute)}, "longer than"},
		{"no iat, exp within the maximum and skew", defaults, jwt.MapClaims{"exp": at(day + passport.DefaultLeeway)}, ""},
		{"no iat, exp beyond the maximum", defaults, jwt.MapClaims{"exp": at(day + passport.DefaultLeeway + time.Second)}, "longer than"},
		{"configured maximum", policy, jwt.MapClaims{"iss": "main", "aud": "dibs", "iat": at(0), "exp": at(time.Hour + time.Second)}, "longer than 1h0m0s"},
		{"iat within the skew", defaults, jwt.MapClaims{"iat": at(passport.DefaultLeeway), "exp": at(time.Hour)}, ""},
		{"iat in the future", defaults, jwt.MapClaims{"iat": at(passport.DefaultLeeway + time.Second), "exp": at(time.Hour)}, "issued in the future"},
		{"exp as a string", defaults, jwt.MapClaims{"exp": fmt.Sprint(at(time.Hour))}, "must be numbers"},
		{"exp as a string, upper case key", defaults, jwt.MapClaims{"EXP": fmt.Sprint(at(time.Hour))}, "must be numbers"},
		{"iat as a string", defaults, jwt.MapClaims{"iat": fmt.Sprint(at(0)), "exp": at(time.Hour)}, "must be numbers"},
		{"nbf as a string", defaults, jwt.MapClaims{"nbf": fmt.Sprint(at(0)), "exp": at(time.Hour)}, "must be numbers"},
		{"exp as a boolean", defaults, jwt.MapClaims{"exp": true}, "must be numbers"},
		{"exp null", defaults, jwt.MapClaims{"exp": nil}, "required claim"},
		{"exp with fractional seconds", defaults, jwt.MapClaims{"exp": float64(at(time.Hour)) + 0.5}, ""},
		{"issuer and audience", policy, jwt.MapClaims{"iss": "main", "aud": "dibs", "exp": at(time.Minute)}, ""},
		{"audience among several", policy, jwt.MapClaims{"iss": "main", "aud": []string{"shop", "dibs"}, "exp": at(time.Minute)}, ""},
		{"other issuer", policy, jwt.MapClaims{"iss": "shop", "aud": "dibs", "exp": at(time.Minute)}, "for someone else"},
		{"no issuer", policy, jwt.MapClaims{"aud": "dibs", "exp": at(time.Minute)}, "lacks a required claim"},
		{"other audience", policy, jwt.MapClaims{"iss": "main", "aud": "shop", "exp": at(time.Minute)}, "for someone else"},
		{"no audience", policy, jwt.MapClaims{"iss": "main", "exp": at(time.Minute)}, "lacks a required claim"},
		{"expired within the policy", policy, jwt.MapClaims{"iss": "main", "aud": "dibs", "exp": at(-time.Minute)}, "expired"},
		{"forged within the policy", policy, jwt.MapClaims{"iss": "main", "aud": "dibs", "exp": at(time.Minute), "forge": true}, "signature or algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := tt.opts
			opts.Now = func() time.Time { return now }
			v, err := passport.NewVerifier(secret, opts)
			if err != nil {
				t.Fatal(err)
			}
			claims := jwt.MapClaims{"sub": "alice"}
			for k, val := range tt.claims {
				claims[k] = val
			}
			key := secret
			if _, forge := claims["forge"]; forge {
				delete(claims, "forge")
				key = []byte("ffffffffffffffffffffffffffffffff")
			}
			user, err := v.Verify(sign(t, jwt.SigningMethodHS256, key, claims))
			if tt.refuse == "" {
				if err != nil || user != "alice" {
					t.Fatalf("Verify = %q, %v; want alice", user, err)
				}
				return
			}
			if dibs.ErrorCode(err) != dibs.EUNAUTHORIZED || !strings.Contains(dibs.ErrorMessage(err), tt.refuse) {
				t.Fatalf("Verify = %q, %v; want unauthorized saying %q", user, err, tt.refuse)
			}
		})
	}
}

func TestNegativeMaxLifetimeRefused(t *testing.T) {
	t.Parallel()
	if _, err := passport.NewVerifier(secret, passport.Options{MaxLifetime: -time.Hour}); err == nil {
		t.Fatal("a negative max lifetime was accepted")
	}
}

func TestIssueForRoundTrip(t *testing.T) {
	t.Parallel()
	tok, err := passport.IssueFor(secret, "erin", "main", "dibs", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v, err := passport.NewVerifier(secret, passport.Options{Issuer: "main", Audience: "dibs", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if user, err := v.Verify(tok); err != nil || user != "erin" {
		t.Fatalf("Verify(IssueFor) = %q, %v", user, err)
	}
	if _, err := verifier(t).Verify(tok); err != nil {
		t.Fatalf("a verifier without the policy refused it: %v", err)
	}
}
