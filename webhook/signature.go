package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Limits on what Verify reads, so that a hostile header costs little.
const (
	maxHeaderLen  = 4 << 10
	maxSignatures = 8
)

// Errors of Verify. A receiver answers any of them with 400 or 401 and
// drops the request.
var (
	// ErrMalformedHeader: the signature header is missing, too long, or not
	// of the form t=<unix seconds>,v1=<hex>[,v1=<hex>...].
	ErrMalformedHeader = errors.New("webhook: malformed signature header")
	// ErrNoMatch: no v1 signature in the header is the body's under the
	// secret: the body was changed, or the secret is not the sender's.
	ErrNoMatch = errors.New("webhook: no signature matches")
	// ErrTimestamp: the signature is genuine but its timestamp is further
	// from now than the tolerance, as a replayed request's would be.
	ErrTimestamp = errors.New("webhook: signature timestamp outside tolerance")
	// ErrNoSecret: Verify was given an empty secret, with which anyone can
	// sign.
	ErrNoSecret = errors.New("webhook: empty secret")
)

// Sign returns the SignatureHeader value for body sent at timestamp:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func Sign(secret []byte, timestamp time.Time, body []byte) string {
	t := strconv.FormatInt(timestamp.Unix(), 10)
	return "t=" + t + ",v1=" + signature(secret, t, body)
}

// signature is the hex HMAC-SHA256 of "<t>.<body>".
func signature(secret []byte, t string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(t))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks that header (the SignatureHeader value) signs body under
// secret, and that its timestamp is within tolerance of now, in either
// direction; a tolerance of 0 or less means DefaultTolerance. body must be
// the request body exactly as received, before any decoding.
//
// The header may carry several v1 signatures (the sender signs with an old
// and a new secret during a rotation); one matching is enough. Elements
// other than t and v1 are ignored, so later schemes can be added beside v1.
// Comparisons take constant time.
//
// Errors: ErrNoSecret, ErrMalformedHeader, ErrNoMatch, ErrTimestamp.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return ErrNoSecret
	}
	ts, sigs, ok := parseHeader(header)
	if !ok {
		return ErrMalformedHeader
	}
	want, _ := hex.DecodeString(signature(secret, strconv.FormatInt(ts, 10), body))
	matched := false
	for _, s := range sigs {
		got, err := hex.DecodeString(s)
		// Every candidate is compared, so the time taken does not say
		// which one matched.
		if err == nil && hmac.Equal(got, want) {
			matched = true
		}
	}
	if !matched {
		return ErrNoMatch
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	// Sub saturates instead of overflowing, so a timestamp centuries
	// away is simply far.
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrTimestamp
	}
	return nil
}

// parseHeader splits "t=<digits>,v1=<sig>,..." into the timestamp and the
// v1 values. ok is false unless there is exactly one t, a canonical
// non-negative decimal, and at least one v1.
func parseHeader(header string) (ts int64, sigs []string, ok bool) {
	if header == "" || len(header) > maxHeaderLen {
		return 0, nil, false
	}
	seenT := false
	for part := range strings.SplitSeq(header, ",") {
		key, value, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return 0, nil, false
		}
		switch key {
		case "t":
			if seenT || !canonicalDigits(value) {
				return 0, nil, false
			}
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return 0, nil, false
			}
			ts, seenT = n, true
		case "v1":
			if len(sigs) == maxSignatures {
				return 0, nil, false
			}
			sigs = append(sigs, value)
		}
	}
	return ts, sigs, seenT && len(sigs) > 0
}

// canonicalDigits reports whether s is a decimal number as Sign writes it:
// digits only, no sign, no leading zero.
func canonicalDigits(s string) bool {
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
