// Package passport verifies the event passports users present: JWTs signed
// with HS256 by the main service, verified here locally with a shared secret,
// so the event never calls the main service per request.
package passport

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dibs-io/dibs"
)

// MinSecretLen is the shortest accepted secret: 256 bits, the size of the
// HS256 hash (RFC 7518 §3.2).
const MinSecretLen = 32

// DefaultLeeway tolerates clock skew between the main service and dibs.
const DefaultLeeway = 30 * time.Second

// DefaultMaxLifetime is the longest a passport may be valid for: a stolen
// passport is good for no longer than that.
const DefaultMaxLifetime = 24 * time.Hour

// MaxTokenLen bounds the passports dibs will parse at all.
const MaxTokenLen = 4096

// Verifier checks passports. Safe for concurrent use.
type Verifier struct {
	secret  []byte
	parser  *jwt.Parser
	leeway  time.Duration
	maxLife time.Duration
	now     func() time.Time
	cache   *cache // nil: no cache
}

// Options tune a Verifier. The zero value checks signature, algorithm,
// expiry and issue time with DefaultLeeway, and lifetimes against
// DefaultMaxLifetime.
type Options struct {
	Leeway   time.Duration // clock skew tolerated on exp, nbf and iat
	Issuer   string        // if set, iss must match
	Audience string        // if set, aud must contain it
	// MaxLifetime is the longest accepted lifetime: exp - iat, or, when
	// iat is absent, exp - now with Leeway of slack. DefaultMaxLifetime if
	// zero; negative is refused.
	MaxLifetime time.Duration
	Now         func() time.Time
	// CacheSize bounds the verified passports remembered (DefaultCacheSize
	// if zero; negative: no cache).
	CacheSize int
}

// NewVerifier returns a verifier for passports signed with secret.
func NewVerifier(secret []byte, o Options) (*Verifier, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("passport secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	if o.Leeway == 0 {
		o.Leeway = DefaultLeeway
	}
	if o.MaxLifetime < 0 {
		return nil, fmt.Errorf("passport max lifetime %s is negative", o.MaxLifetime)
	}
	if o.MaxLifetime == 0 {
		o.MaxLifetime = DefaultMaxLifetime
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), // never "none", never RS/HS confusion
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), // an iat in the future (beyond the leeway) is refused
		jwt.WithLeeway(o.Leeway),
		jwt.WithStrictDecoding(), // one encoding per token: no malleable signature bits
	}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	opts = append(opts, jwt.WithTimeFunc(o.Now))
	v := &Verifier{secret: secret, parser: jwt.NewParser(opts...), leeway: o.Leeway, maxLife: o.MaxLifetime, now: o.Now}
	switch {
	case o.CacheSize == 0:
		v.cache = newCache(DefaultCacheSize)
	case o.CacheSize > 0:
		v.cache = newCache(o.CacheSize)
	}
	return v, nil
}

// Verify returns the user id (sub) of a valid passport. Every failure is an
// EUNAUTHORIZED error whose message says what is wrong.
func (v *Verifier) Verify(token string) (string, error) {
	if token == "" {
		return "", dibs.Errorf(dibs.EUNAUTHORIZED, "A passport is required: Authorization: Bearer <passport>.")
	}
	if len(token) > MaxTokenLen {
		return "", dibs.Errorf(dibs.EUNAUTHORIZED, "The passport is longer than %d bytes.", MaxTokenLen)
	}
	if v.cache != nil {
		if user, ok := v.cache.get(token, v.now()); ok {
			return user, nil
		}
	}
	var claims strictClaims
	_, err := v.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return v.secret, nil })
	if err != nil {
		return "", dibs.WrapError(dibs.EUNAUTHORIZED, reason(err), err)
	}
	if !dibs.ValidUserID(claims.Subject) {
		return "", dibs.Errorf(dibs.EUNAUTHORIZED, "The passport's sub must be 1 to %d printable bytes.", dibs.MaxUserIDLen)
	}
	if v.tooLong(&claims.RegisteredClaims) {
		return "", dibs.Errorf(dibs.EUNAUTHORIZED, "The passport is valid for longer than %s.", v.maxLife)
	}
	if v.cache != nil {
		v.cache.put(token, claims.Subject, claims.ExpiresAt.Add(v.leeway))
	}
	return claims.Subject, nil
}

// tooLong reports whether the passport lives longer than the maximum:
// from iat to exp, or, without iat, from now to exp (the clocks may differ
// by the leeway). A cached passport is not measured again: its remaining
// life only shrinks.
func (v *Verifier) tooLong(c *jwt.RegisteredClaims) bool {
	if c.IssuedAt != nil {
		return c.ExpiresAt.Sub(c.IssuedAt.Time) > v.maxLife
	}
	return c.ExpiresAt.Sub(v.now()) > v.maxLife+v.leeway
}

// errNotNumericDate: a time claim is not a JSON number.
var errNotNumericDate = errors.New("exp, iat and nbf must be JSON numbers")

// strictClaims are the registered claims of a passport, with exp, iat and
// nbf required to be JSON numbers (a NumericDate, RFC 7519 §2): the JWT
// library, through encoding/json, would also take a string holding one.
type strictClaims struct {
	jwt.RegisteredClaims
}

func (c *strictClaims) UnmarshalJSON(b []byte) error {
	// The same keys as RegisteredClaims's, matched as encoding/json
	// matches them (case-insensitively, the last duplicate winning).
	var times struct {
		Exp json.RawMessage `json:"exp"`
		Iat json.RawMessage `json:"iat"`
		Nbf json.RawMessage `json:"nbf"`
	}
	if err := json.Unmarshal(b, &times); err != nil {
		return err
	}
	for _, raw := range []json.RawMessage{times.Exp, times.Iat, times.Nbf} {
		if len(raw) > 0 && !numberOrNull(raw) {
			return errNotNumericDate
		}
	}
	return json.Unmarshal(b, &c.RegisteredClaims)
}

// numberOrNull reports whether raw, a valid JSON value, is a number or null
// (an absent claim).
func numberOrNull(raw json.RawMessage) bool {
	return raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9' || string(raw) == "null"
}

func reason(err error) string {
	switch {
	case errors.Is(err, errNotNumericDate):
		return "The passport's exp, iat and nbf must be numbers (seconds since 1970)."
	case errors.Is(err, jwt.ErrTokenExpired):
		return "The passport has expired."
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "The passport lacks a required claim (exp, and iss or aud where required)."
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "The passport's signature or algorithm is not accepted."
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "The passport is not valid yet."
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "The passport was issued in the future (iat); check the issuer's clock."
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "The passport was issued for someone else."
	}
	return "The passport is malformed."
}

// Issue signs a passport for user valid for ttl. The main service does
// this in production; dibs uses it for the demo, tests and rehearsals.
func Issue(secret []byte, user string, now time.Time, ttl time.Duration) (string, error) {
	return IssueFor(secret, user, "", "", now, ttl)
}

// IssueFor is Issue with an issuer and an audience, for a node that
// requires them (Options.Issuer, Options.Audience); each is left out if
// empty.
func IssueFor(secret []byte, user, issuer, audience string, now time.Time, ttl time.Duration) (string, error) {
	claims := jwt.RegisteredClaims{
		Subject:   user,
		Issuer:    issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
