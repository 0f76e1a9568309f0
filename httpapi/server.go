// Package httpapi serves dibs's HTTP API v1: admin and public drop
// endpoints, claims, and the operational endpoints.
//
// Every route belongs to a class (claim, read, admin, ops) with its own
// bound on requests in flight. Above the bound a request is answered 503
// with Retry-After at once: a claim spike cannot take the capacity that
// regular reads and health checks need, and nothing queues without bound.
// A request's body is read before the request takes its place, so no
// place waits on a client sending slowly.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/httpapi/openapi"
	"github.com/dibs-io/dibs/passport"
)

// Route classes.
const (
	ClassClaim = "claim"
	ClassRead  = "read"
	ClassAdmin = "admin"
	ClassOps   = "ops"
)

// Route classes of the waiting room: its joins and status reads, and its
// event streams (long-lived, so they never take the others' places).
const (
	ClassQueue  = "queue"
	ClassStream = "stream"
)

// Limits bound the requests in flight per class.
type Limits struct {
	Claim, Read, Admin, Ops int

	// Queue bounds waiting-room joins and status reads in flight, Stream
	// the open event streams; zero takes the default.
	Queue, Stream int

	// ClaimWorkers bounds the claim handlers that run at once; the other
	// claims in flight wait up to DefaultClaimWait for a turn, then are
	// shed. Zero: DefaultClaimWorkers; negative: no bound.
	ClaimWorkers int
}

// DefaultLimits suit one node on a few cores: claims are short (losers are
// answered from memory, winners wait about one group commit).
var DefaultLimits = Limits{Claim: 4096, Read: 1024, Admin: 64, Ops: 64, Queue: 4096, Stream: 10_000}

// Connection limits of the HTTP server that serves the API: a client
// sending its headers slowly is cut off after ReadHeaderTimeout, one
// sending a body slowly after ReadTimeout, and headers over MaxHeaderBytes
// are refused (431).
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 16 << 10
)

// NewHTTPServer returns an http.Server that serves h with the connection
// limits above.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// Config is what a Server needs. Drops and Claims are required.
type Config struct {
	Drops  dibs.DropService
	Claims dibs.ClaimService
	// Queue serves the waiting rooms of queued drops; without it their
	// queue endpoints answer 503.
	Queue dibs.QueueService
	// Payments takes payment requests; without it paying answers 503.
	Payments dibs.PaymentService
	// Jobs shows and retries post-processing work; without it the job
	// listings are empty and a retry answers 404.
	Jobs dibs.JobService

	Passports *passport.Verifier
	// AdminToken opens the admin routes, labelled "admin" in the action
	// log; AdminTokens are more tokens, each with its operator's label.
	// Any of them opens every admin route. An empty token opens nothing.
	AdminToken  string
	AdminTokens []AdminToken
	// Switches are the operator's kill switches; without them the switch
	// routes answer 404 and nothing is switched off.
	Switches dibs.SwitchService
	// Actions logs what operators do; without it nothing is logged and the
	// action list is empty.
	Actions dibs.ActionLog
	// Live serves the console's live view; without it /v1/admin/live
	// answers 404.
	Live dibs.LiveService
	// Console serves the operator console (/console and
	// /console/assets/...); without it those paths answer 404.
	Console http.Handler
	// SeparateAdmin keeps the admin routes, the console, /metrics and
	// /debug/pprof off the Server's own handler: Admin serves them, for a
	// listener of their own, and the public handler answers them 404.
	SeparateAdmin bool

	Limits     Limits
	Gatherer   prometheus.Gatherer   // what /metrics exposes
	Registerer prometheus.Registerer // where the server's own metrics go; none if nil
	Logger     *slog.Logger

	// Joins bounds waiting-room joins per client address.
	Joins JoinLimit
	// ClientIPHeader names the header a trusted proxy puts the client's
	// address in (e.g. X-Forwarded-For, whose last entry is taken); empty:
	// the connection's address.
	ClientIPHeader string
}

// AdminToken is an operator's admin token and the label that names the
// operator in the action log and the server's log, never the token.
type AdminToken struct {
	Label string
	Token string
}

// Server is the HTTP API. It is an http.Handler.
type Server struct {
	drops     dibs.DropService
	claims    dibs.ClaimService
	queue     dibs.QueueService
	payments  dibs.PaymentService
	jobs      dibs.JobService
	switches  dibs.SwitchService
	actions   dibs.ActionLog
	live      dibs.LiveService
	console   http.Handler
	passports *passport.Verifier
	admins    []adminHash
	log       *slog.Logger
	mux       *http.ServeMux
	adminMux  *http.ServeMux // the admin listener's routes; mux when they are not separate
	metrics   *httpMetrics

	claimRoute http.Handler // POST /v1/drops/{id}/claims, served before the mux looks
	claimRun   *runLimit
	routes     []string // the patterns of the mux, in the order registered
	joins      *joinLimiter
	ipHeader   string
	streams    *streamCount
	closing    chan struct{} // closed by CloseStreams
	closeOnce  sync.Once
}

// New returns the API over cfg's services.
func New(cfg Config) *Server {
	s := &Server{
		drops:     cfg.Drops,
		claims:    cfg.Claims,
		queue:     cfg.Queue,
		payments:  cfg.Payments,
		jobs:      cfg.Jobs,
		switches:  cfg.Switches,
		actions:   cfg.Actions,
		live:      cfg.Live,
		console:   cfg.Console,
		passports: cfg.Passports,
		admins:    adminHashes(cfg.AdminToken, cfg.AdminTokens),
		log:       cfg.Logger,
		mux:       http.NewServeMux(),
		metrics:   newHTTPMetrics(cfg.Registerer),
		joins:     newJoinLimiter(cfg.Joins),
		ipHeader:  cfg.ClientIPHeader,
		closing:   make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.adminMux = s.mux
	if cfg.SeparateAdmin {
		s.adminMux = http.NewServeMux()
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.Limits.Queue == 0 {
		cfg.Limits.Queue = DefaultLimits.Queue
	}
	if cfg.Limits.Stream == 0 {
		cfg.Limits.Stream = DefaultLimits.Stream
	}
	s.streams = newStreamCount(cfg.Limits.Stream)
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}

	workers := cfg.Limits.ClaimWorkers
	if workers == 0 {
		workers = DefaultClaimWorkers()
	}
	s.claimRun = newRunLimit(workers, DefaultClaimWait, s.metrics.shed.WithLabelValues(ClassClaim))
	claim := s.class(ClassClaim, cfg.Limits.Claim)
	read := s.class(ClassRead, cfg.Limits.Read)
	admin := s.class(ClassAdmin, cfg.Limits.Admin)
	ops := s.class(ClassOps, cfg.Limits.Ops)
	queue := s.class(ClassQueue, cfg.Limits.Queue)
	stream := s.class(ClassStream, cfg.Limits.Stream)
	adminOnly := func(h handlerFunc) http.Handler { return admin(s.handle(s.requireAdmin(h))) }

	s.adminRoute("POST "+createDropPath, adminOnly(s.createDrop))
	s.adminRoute("GET /v1/admin/drops", adminOnly(s.listDrops))
	s.adminRoute("GET /v1/admin/drops/{id}", adminOnly(s.dropStats))
	s.adminRoute("PATCH /v1/admin/drops/{id}", adminOnly(s.patchDrop))
	s.adminRoute("GET /v1/admin/drops/{id}/winners", adminOnly(s.winners))
	s.adminRoute("POST /v1/admin/drops/{id}/pause", adminOnly(s.setStatus(dibs.StatusPaused)))
	s.adminRoute("POST /v1/admin/drops/{id}/resume", adminOnly(s.setStatus(dibs.StatusActive)))
	s.adminRoute("POST /v1/admin/drops/{id}/close", adminOnly(s.setStatus(dibs.StatusClosed)))
	s.adminRoute("GET /v1/admin/drops/{id}/jobs", adminOnly(s.jobCounts))
	s.adminRoute("GET /v1/admin/webhooks/failed", adminOnly(s.failedWebhooks))
	s.adminRoute("POST /v1/admin/webhooks/failed/{job}/retry", adminOnly(s.retryWebhook))
	s.adminRoute("GET /v1/admin/switches", adminOnly(s.getSwitches))
	s.adminRoute("PATCH /v1/admin/switches", adminOnly(s.patchSwitches))
	s.adminRoute("GET /v1/admin/actions", adminOnly(s.listActions))
	s.adminRoute("GET /v1/admin/live", stream(s.handle(s.requireAdmin(s.liveEvents))))
	s.adminRoute("GET /console", admin(http.HandlerFunc(s.serveConsole)))
	s.adminRoute("GET /console/assets/", admin(http.HandlerFunc(s.serveConsole)))
	s.adminRoute("GET /metrics", ops(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	s.adminRoute("GET /debug/pprof/", ops(s.handle(s.requireAdmin(servePprof))))

	s.route("GET /v1/drops/{id}", read(s.handle(s.publicDrop)))
	s.claimRoute = claim(timed(s.handle(s.createClaim)))
	s.route("POST /v1/drops/{id}/claims", s.claimRoute)
	s.route("GET /v1/claims/{id}", read(s.handle(s.getClaim)))
	s.route("POST /v1/claims/{id}/pay", claim(s.handle(s.pay)))

	s.route("POST /v1/drops/{id}/queue", queue(s.handle(s.joinQueue)))
	s.route("GET /v1/drops/{id}/queue", read(s.handle(s.queueInfo)))
	s.route("GET /v1/drops/{id}/queue/{ticket}", queue(s.handle(s.queueStatus)))
	s.route("GET /v1/drops/{id}/queue/{ticket}/events", stream(s.handle(s.queueEvents)))
	s.route("GET /d/{id}", read(s.handle(s.page)))
	s.route("GET /assets/", read(assets()))

	s.route("GET /healthz", ops(http.HandlerFunc(s.healthz)))
	s.route("GET /readyz", ops(http.HandlerFunc(s.readyz)))
	s.route("GET /openapi.json", read(openapi.Handler()))
	s.mux.Handle("/", read(s.handle(s.notFoundIn(s.mux))))
	if s.adminMux != s.mux {
		s.adminMux.Handle("/", admin(s.handle(s.notFoundIn(s.adminMux))))
	}
	return s
}

// ServeHTTP implements http.Handler. A claim, the request a spike is made
// of, goes to its handler without the mux's pattern matching; anything
// else that the mux would clean or redirect first does not look like one.
//
// Before either, the request's body is read (readFirst), and a request
// with more than one Authorization header is refused: which of them
// counts would be anyone's guess.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.checkFirst(w, r) {
		return
	}
	if r.Method == http.MethodPost {
		if id, ok := claimsPath(r.URL.Path); ok {
			r.SetPathValue("id", id)
			s.claimRoute.ServeHTTP(w, r)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// checkFirst refuses a request with more than one Authorization header
// (which of them counts would be anyone's guess) and reads its body
// (readFirst). It answers and returns false if the request is refused.
func (s *Server) checkFirst(w http.ResponseWriter, r *http.Request) bool {
	if len(r.Header["Authorization"]) > 1 {
		writeProblem(w, http.StatusBadRequest, dibs.EINVALID, "Send one Authorization header, not several.")
		return false
	}
	return s.readFirst(w, r)
}

// Admin returns the handler of the admin listener: the admin routes, the
// console, /metrics and /debug/pprof, with the same route-class limits
// as the rest. Without Config.SeparateAdmin it is the Server itself,
// which serves everything.
func (s *Server) Admin() http.Handler {
	if s.adminMux == s.mux {
		return s
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.checkFirst(w, r) {
			s.adminMux.ServeHTTP(w, r)
		}
	})
}

// claimsPath returns the {id} of a path /v1/drops/{id}/claims whose id is
// a valid drop id (then the mux has nothing to clean in it).
func claimsPath(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v1/drops/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/claims")
	return id, ok && dibs.ValidDropID(id)
}

// route registers h for pattern with the mux.
func (s *Server) route(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.routes = append(s.routes, pattern)
}

// adminRoute registers h for pattern with the admin listener's mux.
func (s *Server) adminRoute(pattern string, h http.Handler) {
	s.adminMux.Handle(pattern, h)
	s.routes = append(s.routes, pattern)
}

// Routes returns the patterns the API serves, on both listeners ("METHOD /path/{param}"), in
// the order they were registered; requests no pattern matches are
// answered 404 or 405.
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

// handlerFunc is a handler that returns its failure instead of answering
// it; handle answers it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle serves h and answers the error it returns with problem+json
// (writeError). A client that is gone is told nothing, and its request's
// cancellation is not logged as a failure.
func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil && r.Context().Err() == nil {
			writeError(w, r, s.log, err)
		}
	})
}

// CloseStreams ends every event stream, so that a graceful shutdown need
// not wait for them (http.Server.RegisterOnShutdown). Safe to call twice.
func (s *Server) CloseStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

// notFoundIn answers requests no route of mux matches with problem+json:
// 405 with Allow when the path exists under other methods, 404 otherwise.
func (s *Server) notFoundIn(mux *http.ServeMux) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeProblem(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, "Method "+r.Method+" is not allowed here.")
			return nil
		}
		writeProblem(w, http.StatusNotFound, dibs.ENOTFOUND, "No such resource.")
		return nil
	}
}

// class bounds a route class to limit requests in flight and measures it.
func (s *Server) class(name string, limit int) func(http.Handler) http.Handler {
	sem := make(chan struct{}, limit)
	m := s.metrics.forClass(name)
	shedDetail := "The server is at capacity for " + name + " requests; retry shortly."
	if name == ClassStream {
		shedDetail = "The server's event streams are all in use; poll GET /v1/drops/{id}/queue/{ticket} instead, as poll_after_ms says."
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case sem <- struct{}{}:
			default:
				m.shed.Inc()
				writeProblem(w, http.StatusServiceUnavailable, dibs.EOVERLOADED, shedDetail)
				return
			}
			m.inflight.Inc()
			start := time.Now()
			defer func() {
				m.duration.Observe(time.Since(start).Seconds())
				m.inflight.Dec()
				<-sem
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// adminHash is an admin token's hash with its label.
type adminHash struct {
	label string
	hash  [sha256.Size]byte
}

// adminHashes hashes token (labelled "admin") and tokens, leaving out
// empty ones: an empty token would open the admin routes to requests
// that bear none.
func adminHashes(token string, tokens []AdminToken) []adminHash {
	var out []adminHash
	if token != "" {
		out = append(out, adminHash{"admin", sha256.Sum256([]byte(token))})
	}
	for _, t := range tokens {
		if t.Token != "" {
			out = append(out, adminHash{t.Label, sha256.Sum256([]byte(t.Token))})
		}
	}
	return out
}

type adminLabelKey struct{}

// adminLabel is the label of the admin token the request bore.
func adminLabel(r *http.Request) string {
	l, _ := r.Context().Value(adminLabelKey{}).(string)
	return l
}

// requireAdmin lets through requests bearing an admin token, with the
// token's label in their context (adminLabel). The bearer is compared
// with every token, in constant time (hashes first, so neither length
// leaks, and no early exit, so which token matched does not leak). No
// admin answer may be cached: the winners export holds user ids and
// coupon codes.
func (s *Server) requireAdmin(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header()["Cache-Control"] = noStore
		got := sha256.Sum256([]byte(bearer(r)))
		found := -1
		for i := range s.admins {
			eq := subtle.ConstantTimeCompare(got[:], s.admins[i].hash[:])
			found = subtle.ConstantTimeSelect(eq, i, found)
		}
		if found < 0 {
			return dibs.Errorf(dibs.EUNAUTHORIZED, "A valid admin token is required.")
		}
		r = r.WithContext(context.WithValue(r.Context(), adminLabelKey{}, s.admins[found].label))
		return next(w, r)
	}
}

// user returns the user id of the request's passport.
func (s *Server) user(r *http.Request) (string, error) {
	return s.passports.Verify(bearer(r))
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// pathDropID returns the {id} of the request's path if it is a valid drop id.
func pathDropID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !dibs.ValidDropID(id) {
		return "", dibs.Errorf(dibs.EINVALID, "Drop ids match [a-z0-9-]{1,64}.")
	}
	return id, nil
}

type httpMetrics struct {
	inflight *prometheus.GaugeVec
	shed     *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

type classMetrics struct {
	inflight prometheus.Gauge
	shed     prometheus.Counter
	duration prometheus.Observer
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dibs_http_inflight_requests", Help: "Requests in flight by route class.",
		}, []string{"class"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dibs_http_shed_total", Help: "Requests answered 503 at once because their class was at its limit.",
		}, []string{"class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dibs_http_request_duration_seconds", Help: "Request duration by route class.",
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 10, 18),
		}, []string{"class"}),
	}
	if reg != nil {
		reg.MustRegister(m.inflight, m.shed, m.duration)
	}
	return m
}

func (m *httpMetrics) forClass(name string) classMetrics {
	return classMetrics{
		inflight: m.inflight.WithLabelValues(name),
		shed:     m.shed.WithLabelValues(name),
		duration: m.duration.WithLabelValues(name),
	}
}
