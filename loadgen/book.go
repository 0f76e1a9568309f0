package loadgen

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/dibs-io/dibs"
)

// book keeps what the server told the users, as evidence for the audit: the
// claims it acknowledged, which users it answered for sure, which claims
// ended without an answer. It is safe for concurrent use; its size grows with
// the users (a byte each) and the wins, not with the requests.
type book struct {
	mu        sync.Mutex
	users     []uint8        // userDecided | userUnknown
	acked     map[string]ack // claim id → what the client was told
	known     []knownClaim   // the same claims, for regular reads
	ackClash  []string       // one claim id acknowledged with two different bodies
	soldOutAt time.Time      // first evidence the drop sold out
	end       time.Time      // the last user finished

	seconds      int64    // second claims whose first claim had won
	secondBroken int64    // of those, answered with anything but the same claim
	brokenSample []string // a few of them, for the report

	// Evidence of an undersell (see AuditEqualStock): when each claim that
	// won or may have won was sent, when the users saw holds released or
	// expired, and the sold-out answers to claims sent after the first of
	// those.
	mayHaveWon   []time.Time
	releasesSeen []time.Time
	lateRefusals []span

	queue      map[queueOutcome]int64
	payments   map[string]int64 // payment outcomes seen by state
	unsettled  int64            // payments still pending after PayWait
	serverErrs map[int]int64    // 5xx other than 503 with Retry-After; 429 without it
}

const (
	userDecided uint8 = 1 << iota // a claim got a definite answer (won, sold out, limit)
	userUnknown                   // a claim got no answer or a 5xx: it may have won
)

type ack struct {
	user    int32
	slot    int64
	state   string // the last state seen
	settled bool   // released or expired: no longer expected among the winners
}

// span is when a claim was sent and when its answer came.
type span struct{ sent, done time.Time }

type knownClaim struct {
	id   string
	user int
}

type queueOutcome string

const (
	queueAdmitted queueOutcome = "admitted"
	queueEnded    queueOutcome = "sold_out_or_closed"
	queueGaveUp   queueOutcome = "gave_up"
	queueRefused  queueOutcome = "refused"
)

const maxSamples = 5 // examples kept per broken check

func newBook(users int) *book {
	return &book{
		users:      make([]uint8, users),
		acked:      make(map[string]ack),
		queue:      make(map[queueOutcome]int64),
		payments:   make(map[string]int64),
		serverErrs: make(map[int]int64),
	}
}

// claimAnswer books the answer to a claim of user sent at sent; c is the
// claim when the answer was a win (201) or the user's earlier win (200).
func (b *book) claimAnswer(user int, sent time.Time, res result, c *claimBody) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case c != nil:
		b.users[user] |= userDecided
		a := ack{user: int32(user), slot: c.Slot, state: c.State}
		if prev, ok := b.acked[c.ClaimID]; !ok {
			b.acked[c.ClaimID] = a
			b.known = append(b.known, knownClaim{c.ClaimID, user})
			b.mayHaveWon = append(b.mayHaveWon, sent)
		} else if prev.user != a.user || prev.slot != a.slot {
			b.ackClash = appendSample(b.ackClash, fmt.Sprintf("claim %s acknowledged with user %d slot %d, then user %d slot %d", c.ClaimID, prev.user, prev.slot, a.user, a.slot))
		}
	case res.status == http.StatusGone || res.status == http.StatusConflict:
		b.users[user] |= userDecided
		if res.code == dibs.ESOLDOUT && len(b.releasesSeen) > 0 && !sent.Before(b.releasesSeen[0]) {
			b.lateRefusals = append(b.lateRefusals, span{sent, res.done})
		}
	case res.unknown():
		b.users[user] |= userUnknown
		b.mayHaveWon = append(b.mayHaveWon, sent)
	}
}

// maybeWon books a claim attempt of user, sent at or after sent, whose
// outcome is unknown although the claim was retried.
func (b *book) maybeWon(user int, sent time.Time) {
	b.mu.Lock()
	b.users[user] |= userUnknown
	b.mayHaveWon = append(b.mayHaveWon, sent)
	b.mu.Unlock()
}

// secondClaim books a user's second claim. When the first one won and the
// server must recognise the user (per-user limit 1, or the same
// Idempotency-Key), the second must get the same claim back.
func (b *book) secondClaim(first, second claimOutcome, mustMatch bool) {
	if first.claim == nil || !mustMatch || second.res.unknown() || second.res.shed() || second.res.code == codeCanceled {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seconds++
	if second.res.status == http.StatusOK && second.claim != nil && second.claim.ClaimID == first.claim.ClaimID {
		return
	}
	b.secondBroken++
	got := label(second.res.status, second.res.code)
	if second.claim != nil {
		got += " claim " + second.claim.ClaimID
	}
	b.brokenSample = appendSample(b.brokenSample, fmt.Sprintf("won %s, second claim got %s", first.claim.ClaimID, got))
}

func appendSample(s []string, v string) []string {
	if len(s) < maxSamples {
		s = append(s, v)
	}
	return s
}

// soldOut notes evidence at t that the drop sold out; the earliest counts.
func (b *book) soldOut(t time.Time) {
	b.mu.Lock()
	if b.soldOutAt.IsZero() || t.Before(b.soldOutAt) {
		b.soldOutAt = t
	}
	b.mu.Unlock()
}

func (b *book) setEnd(t time.Time) {
	b.mu.Lock()
	b.end = t
	b.mu.Unlock()
}

func (b *book) queueEnded(o queueOutcome) {
	b.mu.Lock()
	b.queue[o]++
	b.mu.Unlock()
}

// settled books the outcome of a won claim's payment, seen at t.
func (b *book) settled(claimID, state string, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.payments[state]++
	if state != string(dibs.ClaimPaid) {
		b.releasesSeen = append(b.releasesSeen, t)
		if t.Before(b.releasesSeen[0]) {
			n := len(b.releasesSeen) - 1
			b.releasesSeen[0], b.releasesSeen[n] = t, b.releasesSeen[0]
		}
	}
	if a, ok := b.acked[claimID]; ok {
		a.state = state
		a.settled = state != "paid"
		b.acked[claimID] = a
	}
}

func (b *book) payUnsettled() {
	b.mu.Lock()
	b.unsettled++
	b.mu.Unlock()
}

// serverError books an answer that breaks the shedding contract: a 5xx
// other than 503 with Retry-After, or a 429 without Retry-After.
func (b *book) serverError(res result) {
	bad := res.status >= 500 && (res.status != http.StatusServiceUnavailable || !res.hasRetry) ||
		res.status == http.StatusTooManyRequests && !res.hasRetry
	if !bad {
		return
	}
	b.mu.Lock()
	b.serverErrs[res.status]++
	b.mu.Unlock()
}

// randomClaim picks a claim the server acknowledged, for a regular read.
func (b *book) randomClaim(rng *rand.Rand) (knownClaim, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.known) == 0 {
		return knownClaim{}, false
	}
	return b.known[rng.IntN(len(b.known))], true
}
