package room

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"

	"github.com/dibs-io/dibs"
)

// MinSecretLen is the shortest room secret accepted: 256 bits.
const MinSecretLen = 32

// MaxTokenLen bounds the tokens the room parses at all; real ones are about
// 50 (tickets) and 60 (admissions) bytes.
const MaxTokenLen = 128

// Token prefixes: the kind and version of a token, readable in logs.
const (
	ticketPrefix    = "t1."
	admissionPrefix = "a1."
)

const macLen = 16 // bytes of HMAC-SHA256 kept: 128 bits

var b64 = base64.RawURLEncoding.Strict() // one encoding per value: no malleable bits

// DeriveSecret derives a room secret from the passport secret, for nodes
// that are not given one of their own: HKDF-SHA256 with the fixed label
// "dibs waiting room v1". Every node of a deployment derives the same
// secret, and a room secret reveals nothing of the passport secret.
func DeriveSecret(passportSecret []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, passportSecret, nil, "dibs waiting room v1", 32)
}

// Keys signs and verifies tickets and admissions, and hashes user ids into
// the compact keys a room stores. Each use has its own key, derived from
// the room secret, so a ticket can never pass for an admission. Safe for
// concurrent use.
type Keys struct {
	ticket, admission, person *macPool
}

// macPool reuses keyed HMAC states: resetting one is much cheaper than
// keying a new one, and every status read verifies a ticket.
type macPool struct{ sync.Pool }

func newMACPool(key []byte) *macPool {
	return &macPool{sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

func (p *macPool) get() hash.Hash {
	m := p.Get().(hash.Hash)
	m.Reset()
	return m
}

// NewKeys derives the keys of the room secret.
func NewKeys(secret []byte) (*Keys, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("room secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	k := &Keys{}
	for _, sub := range []struct {
		dst   **macPool
		label string
	}{{&k.ticket, "ticket"}, {&k.admission, "admission"}, {&k.person, "person"}} {
		key, err := hkdf.Key(sha256.New, secret, nil, "dibs room "+sub.label, 32)
		if err != nil {
			return nil, fmt.Errorf("derive %s key: %w", sub.label, err)
		}
		*sub.dst = newMACPool(key)
	}
	return k, nil
}

// Person is the key a room stores for user in drop: 64 bits of a keyed
// hash. Nobody without the secret can pick a user id that collides with
// another's.
func (k *Keys) Person(dropID, userID string) uint64 {
	m := k.person.get()
	defer k.person.Put(m)
	m.Write([]byte(dropID))
	m.Write([]byte{0})
	m.Write([]byte(userID))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(m.Sum(sum[:0]))
}

// Ticket signs t for the room incarnation epoch. The token is
// "t1." base64url(number, issued unix ms) "." base64url(MAC): the drop, the
// user and the epoch are bound by the MAC, not carried.
func (k *Keys) Ticket(t dibs.Ticket, epoch uint64) string {
	var p [16]byte
	binary.BigEndian.PutUint64(p[0:], t.Number)
	binary.BigEndian.PutUint64(p[8:], uint64(t.IssuedAt.UnixMilli()))
	return seal(ticketPrefix, k.ticket, t.DropID, t.UserID, epoch, p[:])
}

// VerifyTicket returns the ticket token carries if it was signed for drop,
// user and epoch. Every failure is ENOTFOUND: a forged ticket and another
// user's look the same, and neither is there for this caller.
func (k *Keys) VerifyTicket(token, dropID, userID string, epoch uint64) (dibs.Ticket, error) {
	p, ok := open(token, ticketPrefix, k.ticket, dropID, userID, epoch, 16)
	if !ok {
		return dibs.Ticket{}, dibs.Errorf(dibs.ENOTFOUND, "No such ticket in the waiting room of drop %s; join again.", dropID)
	}
	n := binary.BigEndian.Uint64(p[0:])
	if n == 0 || n > dibs.MaxTicketNumber {
		return dibs.Ticket{}, dibs.Errorf(dibs.ENOTFOUND, "No such ticket in the waiting room of drop %s; join again.", dropID)
	}
	return dibs.Ticket{
		DropID: dropID, UserID: userID, Number: n,
		IssuedAt: time.UnixMilli(int64(binary.BigEndian.Uint64(p[8:]))).UTC(),
	}, nil
}

// Admission signs a pass for the room incarnation epoch. The token is
// "a1." base64url(number, batch, expiry unix ms) "." base64url(MAC); the
// drop, the user and the epoch are bound by the MAC.
func (k *Keys) Admission(p dibs.Pass, epoch uint64) string {
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], p.Number)
	binary.BigEndian.PutUint64(b[8:], p.Batch)
	binary.BigEndian.PutUint64(b[16:], uint64(p.Expires.UnixMilli()))
	return seal(admissionPrefix, k.admission, p.DropID, p.UserID, epoch, b[:])
}

// VerifyAdmission returns the pass token carries if it was signed for
// drop, user and epoch and has not expired at now. Errors:
// EADMISSIONREQUIRED for an empty token, EADMISSIONINVALID for anything
// else wrong.
func (k *Keys) VerifyAdmission(token, dropID, userID string, epoch uint64, now time.Time) (dibs.Pass, error) {
	if token == "" {
		return dibs.Pass{}, dibs.Errorf(dibs.EADMISSIONREQUIRED, "Drop %s admits claims from its waiting room only: join the queue and claim with the admission it gives you (Dibs-Admission header).", dropID)
	}
	b, ok := open(token, admissionPrefix, k.admission, dropID, userID, epoch, 24)
	if !ok {
		return dibs.Pass{}, dibs.Errorf(dibs.EADMISSIONINVALID, "The admission is not valid for you and drop %s.", dropID)
	}
	p := dibs.Pass{
		DropID: dropID, UserID: userID,
		Number:  binary.BigEndian.Uint64(b[0:]),
		Batch:   binary.BigEndian.Uint64(b[8:]),
		Expires: time.UnixMilli(int64(binary.BigEndian.Uint64(b[16:]))).UTC(),
	}
	if !now.Before(p.Expires) {
		return dibs.Pass{}, dibs.Errorf(dibs.EADMISSIONINVALID, "The admission expired at %s: your turn has passed.", p.Expires.Format(time.RFC3339))
	}
	return p, nil
}

// seal returns prefix base64url(payload) "." base64url(MAC).
func seal(prefix string, key *macPool, dropID, userID string, epoch uint64, payload []byte) string {
	mac := sum(key, prefix, dropID, userID, epoch, payload)
	var sb strings.Builder
	sb.Grow(len(prefix) + b64.EncodedLen(len(payload)) + 1 + b64.EncodedLen(macLen))
	sb.WriteString(prefix)
	sb.WriteString(b64.EncodeToString(payload))
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(mac))
	return sb.String()
}

// open returns the payload of a token sealed with key for drop, user and
// epoch, if it is exactly size bytes and the MAC matches.
func open(token, prefix string, key *macPool, dropID, userID string, epoch uint64, size int) ([]byte, bool) {
	if len(token) > MaxTokenLen {
		return nil, false
	}
	rest, ok := strings.CutPrefix(token, prefix)
	if !ok {
		return nil, false
	}
	enc, encMAC, ok := strings.Cut(rest, ".")
	if !ok || len(enc) != b64.EncodedLen(size) || len(encMAC) != b64.EncodedLen(macLen) {
		return nil, false
	}
	payload := make([]byte, size)
	if n, err := b64.Decode(payload, []byte(enc)); err != nil || n != size {
		return nil, false
	}
	var mac [macLen]byte
	if n, err := b64.Decode(mac[:], []byte(encMAC)); err != nil || n != macLen {
		return nil, false
	}
	if !hmac.Equal(mac[:], sum(key, prefix, dropID, userID, epoch, payload)) {
		return nil, false
	}
	return payload, true
}

// sum is the truncated HMAC over everything a token binds. Lengths are
// fixed or delimited, so no two inputs share an encoding.
func sum(key *macPool, prefix, dropID, userID string, epoch uint64, payload []byte) []byte {
	m := key.get()
	defer key.Put(m)
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], epoch)
	m.Write([]byte(prefix))
	m.Write(e[:])
	m.Write([]byte(dropID))
	m.Write([]byte{0})
	m.Write([]byte(userID))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(nil)[:macLen]
}
