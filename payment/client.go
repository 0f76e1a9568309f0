package payment

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"golang.org/x/time/rate"

	"github.com/dibs-io/dibs"
)

// Config configures a Client. Zero fields take the defaults of
// DefaultConfig, except BaseURL, which is required.
type Config struct {
	// BaseURL of the gateway (or of the adapter in front of it), e.g.
	// "http://127.0.0.1:8090". Paths are appended to it.
	BaseURL string
	// APIKey, when set, is sent as "Authorization: Bearer <APIKey>".
	APIKey string
	// HTTPClient sends the requests. Default: a client whose transport keeps
	// MaxConcurrent idle connections to the gateway. Its own Timeout should
	// be zero; Timeout below bounds each attempt.
	HTTPClient *http.Client

	// Timeout bounds one attempt: the HTTP exchange, not the wait for a
	// concurrency slot or a rate token. An attempt that runs out of it has an
	// unknown outcome.
	Timeout time.Duration
	// MaxAttempts is how many times one call is sent before it gives up.
	// Retries reuse the idempotency key, so they never charge twice.
	MaxAttempts int
	// Backoff before the first retry; it doubles per retry up to MaxBackoff.
	// Each wait is drawn uniformly from [Backoff/2, Backoff] (jitter), so
	// that many callers that failed together do not come back together.
	Backoff    time.Duration
	MaxBackoff time.Duration

	// MaxConcurrent bounds the requests in flight to the gateway (bulkhead).
	MaxConcurrent int
	// QueueTimeout bounds how long a call waits for a concurrency slot and a
	// rate token; past it the call fails with ErrUnavailable, unsent.
	QueueTimeout time.Duration
	// RateLimit is the most requests per second sent to the gateway; zero
	// here means the default, a negative value means no limit.
	RateLimit float64
	// RateBurst is how many requests may go out at once after a quiet spell.
	// Default: MaxConcurrent.
	RateBurst int

	// The circuit breaker opens when, within BreakerWindow, at least
	// BreakerMinCalls attempts were made and at least BreakerFailureRate of
	// them failed (unknown outcome, 5xx, 503, 429). While open, calls fail
	// fast with ErrCircuitOpen. After BreakerOpenFor it half-opens and lets
	// BreakerProbes attempts through: all succeed and it closes, one fails
	// and it opens again.
	BreakerFailureRate float64
	BreakerMinCalls    int
	BreakerWindow      time.Duration
	BreakerOpenFor     time.Duration
	BreakerProbes      int

	// Metrics receives what the client observes. Default: nothing.
	Metrics Metrics
	// Now tells the time for measurements. Default: time.Now.
	Now func() time.Time
	// Rand draws the retry jitter; the client guards it. Default: seeded
	// from the clock.
	Rand *rand.Rand
}

// DefaultConfig is the configuration used for every zero field of a Config.
func DefaultConfig() Config {
	return Config{
		Timeout:            2 * time.Second,
		MaxAttempts:        2,
		Backoff:            100 * time.Millisecond,
		MaxBackoff:         2 * time.Second,
		MaxConcurrent:      16,
		QueueTimeout:       2 * time.Second,
		RateLimit:          100,
		BreakerFailureRate: 0.5,
		BreakerMinCalls:    10,
		BreakerWindow:      10 * time.Second,
		BreakerOpenFor:     5 * time.Second,
		BreakerProbes:      3,
	}
}

// withDefaults returns c with its zero fields filled.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	orDefault(&c.Timeout, d.Timeout)
	orDefault(&c.MaxAttempts, d.MaxAttempts)
	orDefault(&c.Backoff, d.Backoff)
	orDefault(&c.MaxBackoff, max(d.MaxBackoff, c.Backoff))
	orDefault(&c.MaxConcurrent, d.MaxConcurrent)
	orDefault(&c.QueueTimeout, d.QueueTimeout)
	orDefault(&c.RateLimit, d.RateLimit)
	orDefault(&c.RateBurst, c.MaxConcurrent)
	orDefault(&c.BreakerFailureRate, d.BreakerFailureRate)
	orDefault(&c.BreakerMinCalls, d.BreakerMinCalls)
	orDefault(&c.BreakerWindow, d.BreakerWindow)
	orDefault(&c.BreakerOpenFor, d.BreakerOpenFor)
	orDefault(&c.BreakerProbes, d.BreakerProbes)
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		seed := uint64(time.Now().UnixNano())
		c.Rand = rand.New(rand.NewPCG(seed, seed>>1))
	}
	return c
}

// orDefault sets *v to def if *v is zero.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports the first thing wrong with c as an EINVALID *dibs.Error.
// Zero fields are valid: they take their defaults.
func (c Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	switch {
	case c.BaseURL == "":
		return dibs.Errorf(dibs.EINVALID, "payment gateway URL is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return dibs.Errorf(dibs.EINVALID, "payment gateway URL must be an absolute http(s) URL")
	case c.Timeout < 0, c.Backoff < 0, c.MaxBackoff < 0, c.QueueTimeout < 0,
		c.BreakerWindow < 0, c.BreakerOpenFor < 0:
		return dibs.Errorf(dibs.EINVALID, "payment durations must not be negative")
	case c.MaxBackoff != 0 && c.MaxBackoff < c.Backoff:
		return dibs.Errorf(dibs.EINVALID, "payment max backoff must be at least the backoff")
	case c.MaxAttempts < 0, c.MaxConcurrent < 0, c.RateBurst < 0, c.BreakerMinCalls < 0, c.BreakerProbes < 0:
		return dibs.Errorf(dibs.EINVALID, "payment counts must not be negative")
	case c.BreakerFailureRate < 0 || c.BreakerFailureRate > 1:
		return dibs.Errorf(dibs.EINVALID, "payment breaker failure rate must be between 0 and 1")
	}
	return nil
}

// BreakerState is the state of the client's circuit breaker.
type BreakerState string

const (
	BreakerClosed   BreakerState = "closed"    // calls go through
	BreakerOpen     BreakerState = "open"      // calls fail fast with ErrCircuitOpen
	BreakerHalfOpen BreakerState = "half-open" // a few probes go through
)

// Metrics receives what a Client observes. Implementations must be safe for
// concurrent use and must not block.
type Metrics interface {
	// Attempt reports one attempt sent (or refused before sending) to the
	// gateway. op is "charge", "lookup" or "refund"; outcome is one of
	// "paid", "declined", "refunded", "not_found", "rejected" (a 4xx),
	// "unknown", "unavailable" or "circuit_open".
	Attempt(op, outcome string, elapsed time.Duration)
	// BreakerChanged reports a transition of the circuit breaker.
	BreakerChanged(from, to BreakerState)
}

type nopMetrics struct{}

func (nopMetrics) Attempt(string, string, time.Duration)     {}
func (nopMetrics) BreakerChanged(BreakerState, BreakerState) {}

// Client calls a payment gateway that speaks the dibs protocol, protecting it
// from bursts: at most MaxConcurrent requests in flight, at most RateLimit
// per second, and a circuit breaker that stops calls while it is failing.
//
// A Client is safe for concurrent use.
type Client struct {
	cfg      Config
	base     string
	http     *http.Client
	log      *slog.Logger
	bulkhead bulkhead.Bulkhead[any]
	breaker  circuitbreaker.CircuitBreaker[any]
	limiter  *rate.Limiter

	mu   sync.Mutex // guards rand
	rand *rand.Rand
}

// New returns a Client for cfg, or an EINVALID error if cfg is invalid. A
// nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	c := &Client{
		cfg:      cfg,
		base:     strings.TrimRight(cfg.BaseURL, "/"),
		http:     cfg.HTTPClient,
		log:      logger,
		bulkhead: bulkhead.New[any](uint(cfg.MaxConcurrent)),
		limiter:  rate.NewLimiter(rate.Inf, 0),
		rand:     cfg.Rand,
	}
	if cfg.RateLimit > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.RateBurst)
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// The default keeps two idle connections per host; under a burst
		// the rest would be opened and closed per request.
		t.MaxIdleConnsPerHost = cfg.MaxConcurrent
		c.http = &http.Client{Transport: t}
	}
	c.breaker = circuitbreaker.NewBuilder[any]().
		WithFailureRateThreshold(cfg.BreakerFailureRate, uint(cfg.BreakerMinCalls), cfg.BreakerWindow).
		WithDelay(cfg.BreakerOpenFor).
		WithSuccessThreshold(uint(cfg.BreakerProbes)).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			from, to := breakerState(e.OldState), breakerState(e.NewState)
			c.log.Warn("payment gateway circuit breaker", "from", from, "to", to)
			c.cfg.Metrics.BreakerChanged(from, to)
		}).
		Build()
	return c, nil
}

func breakerState(s circuitbreaker.State) BreakerState {
	switch s {
	case circuitbreaker.OpenState:
		return BreakerOpen
	case circuitbreaker.HalfOpenState:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// Breaker returns the state of the circuit breaker. An open breaker whose
// delay has passed reports open until the next call probes the gateway.
func (c *Client) Breaker() BreakerState { return breakerState(c.breaker.State()) }

// Charge asks the gateway to take req.Amount under the idempotency key key
// (the claim id). It returns the gateway's record of the charge: paid,
// declined, or refunded if an earlier charge under key was refunded since.
// Charging a key again returns the first charge; it never charges twice.
//
// Errors: ErrInvalid (bad key or request), ErrConflict (key used with a
// different request), and retryable ones: ErrOutcomeUnknown (look the key up
// or charge it again) or ErrUnavailable / ErrCircuitOpen (nothing was
// charged by this call).
func (c *Client) Charge(ctx context.Context, key string, req ChargeRequest) (*Charge, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("charge %s: %w", key, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("charge %s: %w", key, err)
	}
	return c.call(ctx, call{op: "charge", key: key, method: http.MethodPost, path: "/v1/charges", body: body, mutates: true})
}

// Lookup returns the gateway's record of the charge under key, so that a
// caller who lost an answer learns it before charging again or giving up.
//
// Errors: ErrNotFound (the gateway never recorded a charge under key),
// ErrInvalid, and ErrUnavailable / ErrCircuitOpen (could not ask; retry).
func (c *Client) Lookup(ctx context.Context, key string) (*Charge, error) {
	return c.call(ctx, call{op: "lookup", key: key, method: http.MethodGet, path: "/v1/charges/" + url.PathEscape(key)})
}

// Refund gives back the money of the paid charge under key and returns the
// charge, now refunded. Refunding a refunded charge returns it unchanged.
// The request carries RefundKey(key) as its Idempotency-Key, so that a
// gateway that keys refunds of their own never refunds one charge twice.
//
// Errors: ErrNotFound (no charge under key), ErrConflict (the charge was
// declined), ErrInvalid, and the retryable ErrOutcomeUnknown, ErrUnavailable
// and ErrCircuitOpen.
func (c *Client) Refund(ctx context.Context, key string) (*Charge, error) {
	if !ValidKey(RefundKey(key)) {
		return nil, fmt.Errorf("refund: %w: bad idempotency key %q", ErrInvalid, key)
	}
	return c.call(ctx, call{op: "refund", key: key, idem: RefundKey(key), method: http.MethodPost, path: "/v1/charges/" + url.PathEscape(key) + "/refund", mutates: true})
}

// call is one logical request to the gateway about one key, sent up to
// MaxAttempts times.
type call struct {
	op      string // "charge", "lookup" or "refund"
	key     string
	idem    string // the Idempotency-Key when it is not key
	method  string
	path    string
	body    []byte
	mutates bool // a lost answer leaves the outcome unknown; the key goes in Idempotency-Key
}

// call sends cl until it gets an answer that retrying cannot change. After
// an attempt whose outcome is unknown, a charge is looked up before it is
// sent again. The retry loop is written out rather than delegated to a retry policy so that
// an unknown outcome of one attempt is never hidden by what a later attempt
// (or the caller's cancellation) reports.
func (c *Client) call(ctx context.Context, cl call) (*Charge, error) {
	if !ValidKey(cl.key) {
		return nil, fmt.Errorf("%s: %w: bad idempotency key %q", cl.op, ErrInvalid, cl.key)
	}
	var (
		err     error
		unknown bool // some attempt may have been applied
	)
	for attempt := 1; ; attempt++ {
		var ch *Charge
		if unknown && cl.op == "charge" {
			// An earlier attempt may have charged: ask before charging
			// again, and send the charge only if the gateway has none.
			ch, err = c.attempt(ctx, call{op: "lookup", key: cl.key, method: http.MethodGet, path: "/v1/charges/" + url.PathEscape(cl.key)})
			if errors.Is(err, ErrNotFound) {
				ch, err = c.attempt(ctx, cl)
			}
		} else {
			ch, err = c.attempt(ctx, cl)
		}
		if err == nil {
			return ch, nil
		}
		unknown = unknown || errors.Is(err, ErrOutcomeUnknown)
		if !Retryable(err) || errors.Is(err, ErrCircuitOpen) || attempt >= c.cfg.MaxAttempts {
			break
		}
		if !c.sleep(ctx, c.backoff(attempt)) {
			break
		}
	}
	if unknown && !errors.Is(err, ErrOutcomeUnknown) {
		err = fmt.Errorf("%w: an earlier attempt was lost, then: %w", ErrOutcomeUnknown, err)
	}
	return nil, fmt.Errorf("%s %s: %w", cl.op, cl.key, err)
}

// backoff is the wait before retry number attempt (1-based): exponential,
// capped, with jitter in its upper half.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.Backoff
	for i := 1; i < attempt && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	if d <= 0 {
		return 0
	}
	c.mu.Lock()
	j := c.rand.Int64N(int64(d)/2 + 1)
	c.mu.Unlock()
	return d/2 + time.Duration(j)
}

func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// attempt sends cl once, through the breaker, the bulkhead and the limiter.
func (c *Client) attempt(ctx context.Context, cl call) (ch *Charge, err error) {
	start := c.cfg.Now()
	outcome := "unavailable"
	defer func() { c.cfg.Metrics.Attempt(cl.op, outcome, c.cfg.Now().Sub(start)) }()

	// Fail fast while the breaker is open, before queueing for a slot or
	// spending a rate token on a request that will not be sent.
	if c.breaker.IsOpen() && c.breaker.RemainingDelay() > 0 {
		outcome = "circuit_open"
		return nil, ErrCircuitOpen
	}
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.bulkhead.ReleasePermit()
	if !c.breaker.TryAcquirePermit() {
		outcome = "circuit_open"
		return nil, ErrCircuitOpen
	}

	ch, outcome, err = c.send(ctx, cl)
	// The breaker judges the gateway, not the request: any answer the
	// gateway gave on purpose (paid, declined, 404, 409) means it works.
	switch outcome {
	case "unknown", "unavailable":
		c.breaker.RecordFailure()
	default:
		c.breaker.RecordSuccess()
	}
	if err != nil && outcome != "rejected" && outcome != "not_found" {
		c.log.DebugContext(ctx, "payment gateway attempt failed", "op", cl.op, "key", cl.key, "outcome", outcome, "err", err)
	}
	return ch, err
}

// acquire takes a bulkhead slot and a rate token within QueueTimeout.
func (c *Client) acquire(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, c.cfg.QueueTimeout)
	defer cancel()
	if err := c.bulkhead.AcquirePermit(qctx); err != nil {
		return fmt.Errorf("%w: no concurrency slot: %w", ErrUnavailable, err)
	}
	// Wait fails at once when the token would come after the deadline.
	if err := c.limiter.Wait(qctx); err != nil {
		c.bulkhead.ReleasePermit()
		return fmt.Errorf("%w: rate limited: %w", ErrUnavailable, err)
	}
	return nil
}

// maxAnswer bounds the answer body read from the gateway.
const maxAnswer = 1 << 20

// send does one HTTP exchange and turns its result into a charge or an
// error, with the outcome label used for metrics and the breaker.
func (c *Client) send(ctx context.Context, cl call) (*Charge, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, c.base+cl.path, body)
	if err != nil {
		return nil, "rejected", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	req.Header.Set("Accept", "application/json")
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.mutates {
		req.Header.Set("Idempotency-Key", cmp.Or(cl.idem, cl.key))
	}
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return c.lost(cl, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return c.lost(cl, fmt.Errorf("read answer: %w", err))
	}

	if resp.StatusCode == http.StatusOK {
		var ch Charge
		if err := json.Unmarshal(data, &ch); err != nil || ch.Status == "" {
			// A 200 we cannot read tells us nothing about the outcome.
			return c.lost(cl, fmt.Errorf("bad answer: %.200q", data))
		}
		return &ch, string(ch.Status), nil
	}

	var p Problem
	_ = json.Unmarshal(data, &p)
	perr := fmt.Errorf("gateway answered %d %s: %s", resp.StatusCode, p.Code, p.Detail)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, "not_found", fmt.Errorf("%w: %w", ErrNotFound, perr)
	case resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusUnprocessableEntity:
		return nil, "rejected", fmt.Errorf("%w: %w", ErrConflict, perr)
	case resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusServiceUnavailable && (p.Code == dibs.EOVERLOADED || p.Code == dibs.EUNAVAILABLE):
		// The protocol promises these refusals come before any processing.
		return nil, "unavailable", fmt.Errorf("%w: %w", ErrUnavailable, perr)
	case resp.StatusCode >= 500:
		return c.lost(cl, perr)
	default:
		return nil, "rejected", fmt.Errorf("%w: %w", ErrInvalid, perr)
	}
}

// lost classifies an exchange that ended without a usable answer. A request
// that never left (connection refused) or that changes nothing (a lookup)
// is merely unavailable; a write may have been applied.
func (c *Client) lost(cl call, err error) (*Charge, string, error) {
	var op *net.OpError
	if !cl.mutates || (errors.As(err, &op) && op.Op == "dial") {
		return nil, "unavailable", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil, "unknown", fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
}
