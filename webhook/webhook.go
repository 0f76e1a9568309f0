// Package webhook tells the operator's main service what happened to a claim
// after the win: a coupon was issued or a hold was paid (notify_winner), a
// payment was declined (payment_failed), a hold ran out unpaid
// (hold_expired), money the payment gateway took after the claim had ended
// was given back (payment_refunded). Each event is one signed HTTP POST.
//
// The Sender makes one attempt per Send and says whether another attempt
// could succeed; the retrying is the caller's (a durable job), so delivery is
// at least once and a receiver drops repeats by the event id. Receivers check
// the signature with Verify. docs/webhooks.md describes the protocol for the
// people on the receiving end.
//
// The package imports only the standard library, so a receiver written in Go
// can import it for Verify alone.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Header names of a delivery.
const (
	SignatureHeader = "Dibs-Signature"  // t=<unix seconds>,v1=<hex HMAC-SHA256>
	IDHeader        = "Dibs-Webhook-Id" // the event id, the receiver's dedup key
	EventHeader     = "Dibs-Event"      // the event type
)

// Event types.
const (
	TypeNotifyWinner  = "notify_winner"  // a coupon was issued or a hold was paid
	TypePaymentFailed = "payment_failed" // a payment was declined, the slot released
	TypeHoldExpired   = "hold_expired"   // a hold ran out unpaid, the slot released
	// TypePaymentRefunded: the gateway took the money after the claim
	// had ended (released or expired), and it was refunded.
	TypePaymentRefunded = "payment_refunded"
)

// Limits.
const (
	// MaxBody is the largest body Send sends, in bytes. A larger event is
	// refused with a permanent error: it would be refused every time.
	MaxBody = 64 << 10
	// MaxIDLen bounds an event's ID and Type, which travel in headers.
	MaxIDLen = 256
	// MaxRetryAfter caps DeliveryError.RetryAfter, so that a receiver
	// cannot park an event for longer by asking.
	MaxRetryAfter = time.Hour
	// DefaultTimeout bounds one request when Config.Timeout is zero.
	DefaultTimeout = 5 * time.Second
)

// UserAgent is sent with every request.
const UserAgent = "dibs-webhook/1"

// drainLimit is how much of a response body is read before closing it: a
// body read to its end lets the connection be reused, but a receiver that
// answers with megabytes is not worth reading.
const drainLimit = 4 << 10

// Event is one notification.
type Event struct {
	// ID is the idempotency key, the same on every attempt:
	// "<type>:<claim id>". It is sent in IDHeader and as "id".
	ID string
	// Type is one of the Type constants. It is sent in EventHeader and as
	// "type".
	Type string
	// Time is when the event happened (the claim's update time), not when
	// it is sent; it is sent as "created_at", in UTC.
	Time time.Time
	// Data is marshalled with encoding/json as the "data" member; nil is
	// sent as {}.
	Data any
}

// body is the JSON a receiver gets.
type body struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt string          `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

// Config configures a Sender.
type Config struct {
	// URL is the receiver's endpoint, an absolute http or https URL.
	URL string
	// Secret is the HMAC key every request is signed with
	// (DIBS_WEBHOOK_SECRET). Required.
	Secret []byte
	// PreviousSecret, while a secret is being rotated, signs every request
	// a second time, so that a receiver still holding the old secret
	// verifies it too. Optional.
	PreviousSecret []byte
	// Timeout bounds one request, answer included. Default DefaultTimeout.
	Timeout time.Duration
	// Client sends the requests. Default: a client of its own. Redirects
	// are never followed, whichever client it is: a redirect would resend
	// the event somewhere nobody configured, or turn the POST into a GET.
	Client *http.Client
	// Now tells the time of the signature. Default time.Now.
	Now func() time.Time
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return errors.New("webhook URL is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errors.New("webhook URL must be an absolute http(s) URL")
	case len(c.Secret) == 0:
		return errors.New("webhook secret is required")
	case c.Timeout < 0:
		return errors.New("webhook timeout must not be negative")
	}
	return nil
}

// Sender posts events to one receiver. It is safe for concurrent use.
type Sender struct {
	url      string
	secret   []byte
	previous []byte
	timeout  time.Duration
	client   *http.Client
	now      func() time.Time
}

// New returns a Sender for cfg, or an error if cfg is invalid.
func New(cfg Config) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sender{
		url:      cfg.URL,
		secret:   bytes.Clone(cfg.Secret),
		previous: bytes.Clone(cfg.PreviousSecret),
		timeout:  cfg.Timeout,
		now:      cfg.Now,
	}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	var client http.Client
	if cfg.Client != nil {
		client = *cfg.Client
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// The default keeps two idle connections per host; the webhook
		// workers send more at once than that to one receiver.
		t.MaxIdleConnsPerHost = 16
		client.Transport = t
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s.client = &client
	return s, nil
}

// DeliveryError is why a Send failed.
type DeliveryError struct {
	// Status is the receiver's HTTP status, 0 if there was no answer.
	Status int
	// Permanent says that sending the same event again cannot succeed: the
	// receiver refused it (most 4xx), answered with a redirect, or the
	// event cannot be sent at all. Anything else is worth retrying.
	Permanent bool
	// RetryAfter is how long the receiver asked to be left alone (a
	// Retry-After header on 429 or 503), at most MaxRetryAfter; 0 if it did
	// not ask.
	RetryAfter time.Duration
	// Err says what happened.
	Err error
}

func (e *DeliveryError) Error() string {
	kind := "retryable"
	if e.Permanent {
		kind = "permanent"
	}
	if e.Status != 0 {
		return fmt.Sprintf("webhook delivery failed (%s, status %d): %v", kind, e.Status, e.Err)
	}
	return fmt.Sprintf("webhook delivery failed (%s): %v", kind, e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// Permanent reports whether err is a *DeliveryError that retrying cannot
// fix. Any other non-nil error is taken to be retryable.
func Permanent(err error) bool {
	var de *DeliveryError
	return errors.As(err, &de) && de.Permanent
}

// Send posts e to the receiver once and returns nil if it answered 2xx.
// Otherwise the error is a *DeliveryError:
//
//   - retryable: 408, 425, 429, any 5xx, a timeout, a connection that
//     failed or was cut, the caller's ctx ending;
//   - permanent: every other 4xx, a 3xx (redirects are not followed), an
//     event that cannot be sent (empty or unprintable ID or Type, zero
//     Time, Data that does not marshal, a body over MaxBody).
//
// On 429 and 503 RetryAfter holds what the Retry-After header asked for.
func (s *Sender) Send(ctx context.Context, e Event) error {
	payload, err := encode(e)
	if err != nil {
		return &DeliveryError{Permanent: true, Err: fmt.Errorf("event %q: %w", e.ID, err)}
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(payload))
	if err != nil {
		return &DeliveryError{Permanent: true, Err: fmt.Errorf("event %q: %w", e.ID, err)}
	}
	now := s.now()
	sig := Sign(s.secret, now, payload)
	if len(s.previous) > 0 {
		sig += ",v1=" + signature(s.previous, strconv.FormatInt(now.Unix(), 10), payload)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set(SignatureHeader, sig)
	req.Header.Set(IDHeader, e.ID)
	req.Header.Set(EventHeader, e.Type)

	resp, err := s.client.Do(req)
	if err != nil {
		return &DeliveryError{Err: fmt.Errorf("event %q: %w", e.ID, err)}
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	resp.Body.Close()

	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	de := &DeliveryError{Status: code, Permanent: permanentStatus(code)}
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		de.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), now)
	}
	msg := fmt.Sprintf("event %q: receiver answered %s", e.ID, resp.Status)
	if loc := resp.Header.Get("Location"); code >= 300 && code < 400 && loc != "" {
		msg += ", redirecting to " + strconv.Quote(loc)
	}
	if text := strings.TrimSpace(string(head)); text != "" {
		msg += ": " + strconv.Quote(text)
	}
	de.Err = errors.New(msg)
	return de
}

// permanentStatus reports whether a non-2xx answer would be given again.
// 408 (the request was too slow), 425 (too early) and 429 (too many) are
// about the moment, not the event; 5xx is the receiver's own trouble.
func permanentStatus(code int) bool {
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests:
		return false
	case code >= 300 && code < 500:
		return true
	}
	return false
}

// retryAfter reads a Retry-After header: delay seconds or an HTTP date. A
// value it cannot read, or a moment already past, is 0.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		d = MaxRetryAfter
		if n < uint64(MaxRetryAfter/time.Second) {
			d = time.Duration(n) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// encode returns e's body, or why e cannot be sent.
func encode(e Event) ([]byte, error) {
	switch {
	case !headerToken(e.ID):
		return nil, fmt.Errorf("id must be 1..%d bytes of visible ASCII, no spaces", MaxIDLen)
	case !headerToken(e.Type):
		return nil, fmt.Errorf("type must be 1..%d bytes of visible ASCII, no spaces", MaxIDLen)
	case e.Time.IsZero():
		return nil, errors.New("time is required")
	}
	data := json.RawMessage("{}")
	if e.Data != nil {
		var err error
		if data, err = json.Marshal(e.Data); err != nil {
			return nil, fmt.Errorf("marshal data: %w", err)
		}
	}
	b, err := json.Marshal(body{
		ID:        e.ID,
		Type:      e.Type,
		CreatedAt: e.Time.UTC().Format(time.RFC3339Nano),
		Data:      data,
	})
	if err != nil {
		return nil, fmt.Errorf("marshal body: %w", err)
	}
	if len(b) > MaxBody {
		return nil, fmt.Errorf("body of %d bytes is over the %d-byte limit", len(b), MaxBody)
	}
	return b, nil
}

// headerToken reports whether s can go in a header unchanged: 1..MaxIDLen
// bytes of visible ASCII.
func headerToken(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
