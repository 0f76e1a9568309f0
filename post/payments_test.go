package post_test

import (
	"context"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

// payStore is a record of one drop and its claims for Payments. Its
// RequestPayment is the stores' conditional update; before, if set, runs
// between the rule's read and that update.
type payStore struct {
	post.Store // nil: Payments must call nothing else
	drop       dibs.Drop
	claims     map[string]*dibs.Claim
	before     func()
	requests   int // updates that changed a claim
}

func (s *payStore) FindDrop(ctx context.Context, id string) (*dibs.Drop, error) {
	if id != s.drop.ID {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	d := s.drop
	return &d, nil
}

func (s *payStore) FindClaim(ctx context.Context, id string) (*dibs.Claim, error) {
	c, ok := s.claims[id]
	if !ok {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	}
	cp := *c
	return &cp, nil
}

func (s *payStore) RequestPayment(ctx context.Context, id string, now time.Time) (*dibs.Claim, bool, error) {
	if s.before != nil {
		s.before()
	}
	c, ok := s.claims[id]
	if !ok {
		return nil, false, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	}
	changed := c.State == dibs.ClaimHeld && c.PayRequestedAt.IsZero() && now.Before(c.HoldExpiresAt)
	if changed {
		c.PayRequestedAt, c.UpdatedAt = now, now
		s.requests++
	}
	cp := *c
	return &cp, changed, nil
}

var (
	payEpoch    = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	payDeadline = payEpoch.Add(10 * time.Minute)
)

func newPayStore(price int64) *payStore {
	s := &payStore{drop: dibs.Drop{ID: "d", Kind: dibs.KindPurchase, Price: price}, claims: map[string]*dibs.Claim{}}
	for _, c := range []dibs.Claim{
		{ID: "held", UserID: "alice", State: dibs.ClaimHeld},
		{ID: "asked", UserID: "bob", State: dibs.ClaimHeld, PayRequestedAt: payEpoch},
		{ID: "released", UserID: "carol", State: dibs.ClaimReleased},
		{ID: "paid", UserID: "dave", State: dibs.ClaimPaid, PayRequestedAt: payEpoch},
	} {
		c.DropID, c.HoldExpiresAt = "d", payDeadline
		s.claims[c.ID] = &c
	}
	return s
}

func TestPaymentsRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		claim, user   string
		price         int64
		gateway       bool
		now           time.Time
		code          string // "" for success
		wantRequested bool   // a new request was recorded
	}{
		{"held in time", "held", "alice", 5000, true, payDeadline.Add(-time.Microsecond), "", true},
		{"free drop without a gateway", "held", "alice", 0, false, payEpoch, "", true},
		{"someone else's claim", "held", "mallory", 5000, true, payEpoch, dibs.ENOTFOUND, false},
		{"unknown claim", "nope", "alice", 5000, true, payEpoch, dibs.ENOTFOUND, false},
		{"priced drop without a gateway", "held", "alice", 5000, false, payEpoch, dibs.EUNAVAILABLE, false},
		{"someone else's claim without a gateway", "held", "mallory", 5000, false, payEpoch, dibs.ENOTFOUND, false},
		{"at the deadline", "held", "alice", 5000, true, payDeadline, dibs.ECONFLICT, false},
		{"after the deadline", "held", "alice", 5000, true, payDeadline.Add(time.Hour), dibs.ECONFLICT, false},
		{"released", "released", "carol", 5000, true, payEpoch, dibs.ECONFLICT, false},
		{"asked before, after the deadline", "asked", "bob", 5000, true, payDeadline.Add(time.Hour), "", false},
		{"paid", "paid", "dave", 5000, true, payEpoch, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newPayStore(tc.price)
			p := &post.Payments{Store: s, Gateway: tc.gateway, Now: func() time.Time { return tc.now }}
			c, err := p.RequestPayment(context.Background(), tc.claim, tc.user)
			if got := dibs.ErrorCode(err); got != tc.code {
				t.Fatalf("error %v (code %q), want code %q", err, got, tc.code)
			}
			if got := s.requests == 1; got != tc.wantRequested {
				t.Fatalf("recorded a request: %t, want %t", got, tc.wantRequested)
			}
			if err == nil && (c.ID != tc.claim || c.PayRequestedAt.IsZero()) {
				t.Fatalf("claim %+v, want %s with its payment asked for", c, tc.claim)
			}
			if tc.wantRequested && !c.PayRequestedAt.Equal(tc.now) {
				t.Fatalf("payment asked for at %s, want %s", c.PayRequestedAt, tc.now)
			}
		})
	}
}

// A claim that changes between the rule's read and the update is judged
// as the update found it: a request that came first stands, an end
// refuses this one.
func TestPaymentsRace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(c *dibs.Claim)
		code   string
	}{
		{"asked meanwhile", func(c *dibs.Claim) { c.PayRequestedAt = payEpoch }, ""},
		{"expired meanwhile", func(c *dibs.Claim) { c.State = dibs.ClaimExpired }, dibs.ECONFLICT},
		{"hold cut short meanwhile", func(c *dibs.Claim) { c.HoldExpiresAt = payEpoch }, dibs.ECONFLICT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newPayStore(5000)
			s.before = func() { tc.change(s.claims["held"]) }
			p := &post.Payments{Store: s, Gateway: true, Now: func() time.Time { return payEpoch.Add(time.Minute) }}
			_, err := p.RequestPayment(context.Background(), "held", "alice")
			if got := dibs.ErrorCode(err); got != tc.code {
				t.Fatalf("error %v (code %q), want code %q", err, got, tc.code)
			}
			if s.requests != 0 {
				t.Fatalf("the update changed the claim %d times, want 0", s.requests)
			}
		})
	}
}
