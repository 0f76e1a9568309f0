// Package client is a Go client of dibs's HTTP API v1, for the main service
// of a team that runs drops: it signs passports, creates and steers drops,
// claims and pays on a user's behalf, follows the waiting room, streams the
// winners and retries failed webhooks. httpapi/openapi/openapi.yaml is the contract it
// speaks; webhook.Handler receives what dibs sends back.
//
// Every answer that is not a success is an *Error carrying the problem's
// stable code (HasCode, IsSoldOut, ...). Requests are retried only when
// that is safe: reads, requests the API states are idempotent, and claims,
// which always carry an Idempotency-Key. They are retried on 429 and 503
// after Retry-After, and on transport errors, with bounded backoff and
// never past ctx.
//
// A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dibs-io/dibs/passport"
)

// Retry defaults.
const (
	DefaultMaxRetries = 3
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	// MaxRetryAfter caps how long one retry waits for a Retry-After.
	MaxRetryAfter = 30 * time.Second
)

// Config configures a Client.
type Config struct {
	// BaseURL is the node or load balancer, e.g. "https://dibs.example.com".
	BaseURL string
	// AdminToken is DIBS_ADMIN_TOKEN, for the admin methods.
	AdminToken string
	// PassportSecret is DIBS_PASSPORT_SECRET, for IssuePassport.
	PassportSecret []byte
	// HTTPClient sends the requests; default http.DefaultClient. Its
	// Timeout bounds each attempt, ctx the whole call.
	HTTPClient *http.Client
	// MaxRetries bounds the retries of one call; 0 means
	// DefaultMaxRetries, negative none.
	MaxRetries int
	// MinBackoff and MaxBackoff bound the wait between attempts (doubling
	// from the first, with jitter) when the server gave no Retry-After.
	MinBackoff, MaxBackoff time.Duration
	// Now tells the time of passports and Retry-After dates; default
	// time.Now.
	Now func() time.Time
}

// Client calls one dibs deployment.
type Client struct {
	base       string
	admin      string
	secret     []byte
	hc         *http.Client
	maxRetries int
	minBackoff time.Duration
	maxBackoff time.Duration
	now        func() time.Time
	sleep      func(ctx context.Context, d time.Duration) error
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: BaseURL must be an absolute http(s) URL, got %q", cfg.BaseURL)
	}
	c := &Client{
		base:       strings.TrimSuffix(cfg.BaseURL, "/"),
		admin:      cfg.AdminToken,
		secret:     bytes.Clone(cfg.PassportSecret),
		hc:         cfg.HTTPClient,
		maxRetries: cfg.MaxRetries,
		minBackoff: cfg.MinBackoff,
		maxBackoff: cfg.MaxBackoff,
		now:        cfg.Now,
		sleep:      sleepCtx,
	}
	if c.hc == nil {
		c.hc = http.DefaultClient
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = DefaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.minBackoff <= 0 {
		c.minBackoff = DefaultMinBackoff
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = DefaultMaxBackoff
	}
	c.maxBackoff = max(c.maxBackoff, c.minBackoff)
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// IssuePassport signs a passport for user, valid for ttl, with
// Config.PassportSecret: what the main service hands a signed-in user
// before a drop. It calls nothing.
func (c *Client) IssuePassport(user string, ttl time.Duration) (string, error) {
	if len(c.secret) < passport.MinSecretLen {
		return "", fmt.Errorf("client: PassportSecret must be at least %d bytes", passport.MinSecretLen)
	}
	return passport.Issue(c.secret, user, c.now(), ttl)
}

// WaitingRoomURL is the page to send a user to for drop id, their passport
// in the URL's fragment, which browsers never send to a server.
func (c *Client) WaitingRoomURL(dropID, pass string) string {
	u := c.base + "/d/" + url.PathEscape(dropID)
	if pass != "" {
		u += "#passport=" + url.QueryEscape(pass)
	}
	return u
}

// call is one API call.
type call struct {
	method, path string
	auth         string // bearer token
	header       http.Header
	body         any  // marshalled as JSON if non-nil
	retry        bool // safe to send again
	accept       string
}

// do sends c and decodes a 2xx JSON answer into out (if non-nil). It
// returns the status.
func (c *Client) do(ctx context.Context, cl call, out any) (int, error) {
	resp, err := c.send(ctx, cl)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("client: %s %s: decode answer: %w", cl.method, cl.path, err)
		}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, nil
}

// send sends c, retrying what may be retried, and returns a 2xx response
// whose body the caller closes, or an error.
func (c *Client) send(ctx context.Context, cl call) (*http.Response, error) {
	var body []byte
	if cl.body != nil {
		var err error
		if body, err = json.Marshal(cl.body); err != nil {
			return nil, fmt.Errorf("client: %s %s: %w", cl.method, cl.path, err)
		}
	}
	for attempt := 0; ; attempt++ {
		resp, err := c.once(ctx, cl, body)
		if err == nil && resp.StatusCode < 300 {
			return resp, nil
		}
		var wait time.Duration
		if err == nil {
			e := readError(resp, c.now())
			err, wait = e, e.RetryAfter
		}
		if ctx.Err() != nil || !cl.retry || attempt >= c.maxRetries || !Temporary(err) {
			return nil, err
		}
		if wait == 0 {
			wait = c.backoff(attempt)
		}
		if err := c.sleep(ctx, min(wait, MaxRetryAfter)); err != nil {
			return nil, err
		}
	}
}

func (c *Client) once(ctx context.Context, cl call, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, c.base+cl.path, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.accept != "" {
		req.Header.Set("Accept", cl.accept)
	}
	if cl.auth != "" {
		req.Header.Set("Authorization", "Bearer "+cl.auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", cl.method, cl.path, err)
	}
	return resp, nil
}

// backoff is the wait before retry attempt+1: doubling from minBackoff,
// at most maxBackoff, with jitter down to half of it.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.maxBackoff
	if attempt < 30 {
		d = min(c.minBackoff<<attempt, c.maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// newKey returns a random Idempotency-Key.
func newKey() string { return crand.Text() }

var errNoAdmin = errors.New("client: AdminToken is required for admin calls")

func (c *Client) adminCall(method, path string, retry bool) (call, error) {
	if c.admin == "" {
		return call{}, errNoAdmin
	}
	return call{method: method, path: path, auth: c.admin, retry: retry}, nil
}
