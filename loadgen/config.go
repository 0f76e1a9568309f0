package loadgen

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/dibs-io/dibs"
)

// Defaults of the knobs a caller may leave at zero.
const (
	DefaultRetryFraction  = 0.2 // what dibs load uses; Config.RetryFraction 0 means no retries
	DefaultMaxRetries     = 3
	DefaultMaxInFlight    = 10_000
	DefaultMaxConns       = 1024
	DefaultRequestTimeout = 10 * time.Second
	DefaultQueueWait      = 2 * time.Minute
	DefaultPayWait        = 30 * time.Second
	DefaultSettleWait     = 60 * time.Second
	DefaultPollInterval   = 250 * time.Millisecond
	DefaultSampleInterval = 100 * time.Millisecond
	DefaultStartSlack     = 10 * time.Millisecond
	DefaultRetryDelay     = 100 * time.Millisecond
)

// Config says what load to put on which drop. The drop must exist before Run;
// CreateDrop makes one.
type Config struct {
	// Target is the base URL of a dibs server, e.g. http://127.0.0.1:8080.
	Target string
	// Targets are the base URLs of several nodes of one deployment, in
	// place of Target. Users' requests are spread over them (see Sticky);
	// a request whose node refuses the connection goes to the next one, as
	// a load balancer does with a node that is down. The setup and the
	// audit read from the first, or the next one while it does not answer.
	Targets []string
	// Sticky sends all of a user's requests to one node (the user's index
	// modulo the nodes), as a load balancer with session affinity does.
	// Without it each of a user's requests goes to the next node after the
	// one its previous request went to, as a round-robin load balancer
	// without affinity does, so a retry, a waiting-room poll or a payment
	// always reaches another node than the claim before it. dibs needs no
	// affinity; the default rehearses what happens without it.
	Sticky bool
	// DropID names the drop to claim.
	DropID string
	// Users is how many distinct users arrive, one passport each.
	Users int
	// Profile says when they arrive.
	Profile Profile

	// RetryFraction of the users claim a second time after their first
	// answer (same passport), as people who press the button twice do:
	// exactly ⌊Users × RetryFraction⌋ of them, spread evenly over the
	// arrivals.
	RetryFraction float64
	// RetryDelay is the mean pause before that second claim (default 100ms).
	RetryDelay time.Duration
	// IdempotencyKeys makes every user send an Idempotency-Key with its
	// claims; the second claim reuses the first one's key.
	IdempotencyKeys bool
	// MaxRetries bounds the retries of one request answered 429 or 503
	// (default 3; negative: none). Each waits at least its Retry-After.
	MaxRetries int

	// PassportSecret signs the users' passports (HS256), as
	// DIBS_PASSPORT_SECRET does on the server.
	PassportSecret []byte
	// AdminToken reads the drop and its winners for the audit.
	AdminToken string
	// PGSim is the base URL of the payment gateway simulator (dibs pgsim)
	// the server charges, e.g. http://127.0.0.1:8090. When set, the audit
	// of a priced purchase drop compares its ledger (GET /ledger) with the
	// paid claims.
	PGSim string

	// Regular is the steady traffic sent alongside the spike.
	Regular RegularConfig
	// RegularProcess, when set, sends the regular traffic from a process
	// of its own instead of this one (see RegularProcess).
	RegularProcess RegularProcess

	// MaxInFlight bounds the spike's requests in flight (default 10,000),
	// which bounds its connections and memory. An arrival that finds the
	// bound reached waits for a free place and counts as a missed start.
	MaxInFlight int
	// MaxConns bounds the connections to the targets (default 1,024), a
	// share of it to each of several (rounded up). Requests beyond it wait
	// inside the transport for a free connection; an arrival that waits
	// longer than StartSlack is a missed start. One connection per request
	// in flight would run a machine out of ports and file descriptors long
	// before a spike's peak.
	MaxConns int
	// StartSlack is how late a request may start before it counts as a
	// missed start (default 10ms).
	StartSlack time.Duration
	// RequestTimeout bounds one request (default 10s). A claim that times
	// out has an unknown outcome.
	RequestTimeout time.Duration
	// QueueWait bounds a user's stay in a waiting room (default 2m).
	QueueWait time.Duration
	// PayWait bounds how long a winner of a purchase drop polls its claim
	// for the outcome of its payment (default 30s).
	PayWait time.Duration
	// SettleWait bounds how long the audit waits for the drop's stock to
	// add up (winners plus remaining equal the stock) when some claims got
	// no definite answer (a timeout, a lost connection, a 5xx): the gate
	// may then hold slots the record never got, which the server's
	// reconciler gives back after its grace period (dibs: 30 s, checked
	// every 15 s). Default 60s; negative: do not wait.
	SettleWait time.Duration
	// PollInterval spaces polls of a claim, and of a waiting-room ticket
	// when the server gives no poll_after_ms (default 250ms).
	PollInterval time.Duration
	// SampleInterval spaces the reads of the drop's remaining stock that
	// draw the sell-out curve (default 100ms).
	SampleInterval time.Duration
	// SeriesStep is the width of one step of the report's time series
	// (default 100ms when the arrivals span under 30s, else 1s): a spike of
	// two seconds needs finer steps than seconds to show its shape.
	SeriesStep time.Duration

	// Shard makes this run one slice of a run spread over several
	// generators (see Shard); the zero value is the whole run.
	Shard Shard
	// StartAt is the instant of time 0 of the run (the regular traffic's
	// lead, then the first arrival), when set: shards on several machines
	// start together. Zero: at once.
	StartAt time.Time

	// UserPrefix starts every user id; the default derives from Seed, so
	// runs with different seeds never share users.
	UserPrefix string
	// Seed drives every random choice: which users retry, delays, jitter.
	Seed int64

	// Client sends the requests outside the measured load (setup, samples,
	// the audit); when set, it sends the measured load too, in place of the
	// lean client (plain http targets only) that does by default. The
	// default has a Transport tuned for many connections to a few hosts
	// (NewTransport).
	Client *http.Client
	// Progress receives a live progress line; nil keeps quiet. See
	// TerminalWriter.
	Progress io.Writer
	// Logger receives warnings (falling behind, shedding) and debug
	// details; nil discards them.
	Logger *slog.Logger
	// Now reads the clock (default time.Now). Waits use timers, so Now must
	// follow real time; tests that need fake time run in testing/synctest.
	Now func() time.Time
}

// RegularConfig is the steady traffic of a regular service: drop reads and
// reads of known claims, sent at a constant rate before, during and after the
// spike and measured apart from it.
type RegularConfig struct {
	// Rate is requests per second; zero sends no regular traffic.
	Rate float64
	// ClaimReadFraction of the requests read a claim the spike won, with its
	// owner's passport, once one is known (default 0.5); the rest read the
	// drop.
	ClaimReadFraction float64
	// Lead and Tail are how long regular traffic runs before the first
	// arrival and after the last user finished (default 1s each), so the
	// report shows it with and without the spike.
	Lead, Tail time.Duration
	// MaxInFlight bounds regular requests in flight (default 256), apart
	// from the spike's bound.
	MaxInFlight int
}

// Shard is one of Count slices of a run's users: user i belongs to shard
// i mod Count. Every shard computes the same schedule from the same seed and
// users, and sends its own users' arrivals at their times; the regular
// traffic comes from shard 0 alone. A shard does not audit: Merge audits the
// union of the shards' results (Report.WriteShard).
type Shard struct {
	Index, Count int
}

func (s Shard) on() bool { return s.Count > 0 }

// owns reports whether user i is this shard's.
func (s Shard) owns(i int) bool { return !s.on() || i%s.Count == s.Index }

// String is I/N.
func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Validate reports the first thing wrong with c.
func (c *Config) Validate() error {
	if c.Shard.Count < 0 || c.Shard.Index < 0 || (c.Shard.Count > 0 && c.Shard.Index >= c.Shard.Count) {
		return fmt.Errorf("shard %s: want I/N with 0 <= I < N", c.Shard)
	}
	if c.Shard.on() && c.Users < c.Shard.Count {
		return fmt.Errorf("shard %s: fewer users (%d) than shards", c.Shard, c.Users)
	}
	if c.Target != "" && len(c.Targets) > 0 {
		return errors.New("set target or targets, not both")
	}
	for _, t := range c.targets() {
		if u, err := url.Parse(t); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("target must be an http or https URL: %q", t)
		}
	}
	if c.PGSim != "" {
		if u, err := url.Parse(c.PGSim); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("pgsim must be an http or https URL: %q", c.PGSim)
		}
	}
	switch {
	case !dibs.ValidDropID(c.DropID):
		return fmt.Errorf("drop id must match [a-z0-9-]{1,64}")
	case c.Users < 1:
		return fmt.Errorf("users must be at least 1")
	case !fraction(c.RetryFraction):
		return fmt.Errorf("retry fraction must be between 0 and 1")
	case len(c.PassportSecret) == 0:
		return errors.New("passport secret is required")
	case c.AdminToken == "":
		return errors.New("admin token is required (the audit reads the winners)")
	case c.MaxInFlight < 0 || c.Regular.MaxInFlight < 0 || c.MaxConns < 0:
		return errors.New("max in flight and max conns must not be negative")
	case c.Regular.Rate < 0 || math.IsNaN(c.Regular.Rate) || math.IsInf(c.Regular.Rate, 0):
		return errors.New("regular rate must be a positive number")
	case !fraction(c.Regular.ClaimReadFraction):
		return errors.New("regular claim-read fraction must be between 0 and 1")
	case c.RetryDelay < 0 || c.StartSlack < 0 || c.RequestTimeout < 0 || c.QueueWait < 0 ||
		c.PayWait < 0 || c.PollInterval < 0 || c.SampleInterval < 0 || c.SeriesStep < 0 ||
		c.Regular.Lead < 0 || c.Regular.Tail < 0:
		return errors.New("durations must not be negative")
	}
	if err := c.Profile.Validate(); err != nil {
		return err
	}
	return nil
}

func fraction(f float64) bool { return f >= 0 && f <= 1 }

// targets is Targets, or Target alone; never empty, so Validate rejects an
// unset target as a bad URL.
func (c *Config) targets() []string {
	if len(c.Targets) > 0 {
		return c.Targets
	}
	return []string{c.Target}
}

// withDefaults returns c with every zero knob set to its default.
func (c Config) withDefaults() Config {
	c.Profile = c.Profile.withDefaults()
	setDefault(&c.RetryDelay, DefaultRetryDelay)
	setDefault(&c.MaxRetries, DefaultMaxRetries)
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	setDefault(&c.MaxInFlight, DefaultMaxInFlight)
	setDefault(&c.MaxConns, DefaultMaxConns)
	setDefault(&c.StartSlack, DefaultStartSlack)
	setDefault(&c.RequestTimeout, DefaultRequestTimeout)
	setDefault(&c.QueueWait, DefaultQueueWait)
	setDefault(&c.PayWait, DefaultPayWait)
	setDefault(&c.SettleWait, DefaultSettleWait)
	setDefault(&c.PollInterval, DefaultPollInterval)
	setDefault(&c.SampleInterval, DefaultSampleInterval)
	if c.SeriesStep == 0 {
		c.SeriesStep = time.Second
		if newSchedule(c.Profile, c.Users).span() < 30*time.Second {
			c.SeriesStep = 100 * time.Millisecond
		}
	}
	if c.UserPrefix == "" {
		c.UserPrefix = fmt.Sprintf("load-%d-", c.Seed)
	}
	if c.Regular.Rate > 0 {
		setDefault(&c.Regular.ClaimReadFraction, 0.5)
		setDefault(&c.Regular.Lead, time.Second)
		setDefault(&c.Regular.Tail, time.Second)
		setDefault(&c.Regular.MaxInFlight, 256)
	}
	if c.Client == nil {
		n := len(c.targets())
		c.Client = &http.Client{Transport: newTransport((c.MaxConns+n-1)/n, c.MaxConns)}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// NewTransport returns a Transport for up to maxConns connections to one
// host, all kept open when idle (the default keeps 2, so a spike would open
// and close connections until it ran out of ports). It skips compression and
// HTTP/2 and bounds the handshake.
func NewTransport(maxConns int) *http.Transport { return newTransport(maxConns, maxConns) }

// newTransport is NewTransport for several hosts: up to perHost connections
// to each, and up to idle kept open in all.
func newTransport(perHost, idle int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          max(idle, perHost),
		MaxIdleConnsPerHost:   perHost,
		MaxConnsPerHost:       perHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}
