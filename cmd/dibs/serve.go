package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/httpapi/console"
	"github.com/dibs-io/dibs/live"
	"github.com/dibs-io/dibs/pace"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/room"
	"github.com/dibs-io/dibs/sqlite"
	"github.com/dibs-io/dibs/switches"
)

// Config is the configuration of one dibs node.
type Config struct {
	Addr            string
	AdminAddr       string // listen address of the admin routes, console, /metrics and pprof; empty: Addr serves them
	Data            string // directory of the embedded record
	Postgres        string // URL of the PostgreSQL record; empty: SQLite under Data
	PostgresOptions postgres.Options
	PassportSecret  string
	Passport        passport.Options     // issuer, audience and lifetime policy
	AdminToken      string               // DIBS_ADMIN_TOKEN, labelled "admin"
	AdminTokens     []httpapi.AdminToken // DIBS_ADMIN_TOKENS
	Limits          httpapi.Limits
	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
	GCPercent       int // Go's GOGC for the node, unless GOGC is set
	Room            RoomConfig
	Redis           RedisConfig
	Reconcile       ReconcileConfig
	Post            PostConfig
	Pace            PaceConfig
}

// DefaultGCPercent lets the heap grow to five times what is live before
// collecting. A node's live heap is small (tens of MB) and a spike allocates
// fast: at Go's default of 100 it collects several times a second, and each
// mark phase delays the requests that arrive during it.
const DefaultGCPercent = 400

// MinAdminTokenLen keeps admin tokens out of guessing range.
const MinAdminTokenLen = 16

// DefaultConfig is a node on loopback with its record under ./data.
func DefaultConfig() Config {
	return Config{
		Addr:            "127.0.0.1:8080",
		Data:            "data",
		Limits:          httpapi.DefaultLimits,
		Passport:        passport.Options{MaxLifetime: passport.DefaultMaxLifetime},
		ShutdownTimeout: 15 * time.Second,
		LogLevel:        "info",
		LogFormat:       "json",
		GCPercent:       DefaultGCPercent,
		PostgresOptions: postgres.Options{
			RecordConns:     postgres.DefaultRecordConns,
			BackgroundConns: postgres.DefaultBackgroundConns,
			ReadConns:       postgres.DefaultReadConns,
		},
		Room: defaultRoomConfig(),
		Post: defaultPostConfig(),
		Pace: defaultPaceConfig(),
	}
}

// Validate reports the first thing wrong with c.
func (c *Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("--addr is required")
	case c.Data == "":
		return errors.New("--data is required")
	case len(c.PassportSecret) < passport.MinSecretLen:
		return fmt.Errorf("DIBS_PASSPORT_SECRET must be set to at least %d bytes (the HMAC key passports are signed with)", passport.MinSecretLen)
	case c.Passport.MaxLifetime <= 0:
		return errors.New("--passport-max-lifetime must be positive")
	case c.AdminAddr != "" && c.AdminAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0"):
		return errors.New("--admin-addr must differ from --addr")
	case c.Limits.Claim < 1 || c.Limits.Read < 1 || c.Limits.Admin < 1 || c.Limits.Ops < 1:
		return errors.New("in-flight limits must be at least 1")
	case c.PostgresOptions.RecordConns < 1 || c.PostgresOptions.BackgroundConns < 1 || c.PostgresOptions.ReadConns < 1:
		return errors.New("--postgres-*-conns must be at least 1")
	case c.ShutdownTimeout <= 0:
		return errors.New("--shutdown-timeout must be positive")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return errors.New("--log-format must be json or text")
	}
	if err := validateAdminTokens(c.AdminToken, c.AdminTokens); err != nil {
		return err
	}
	if err := c.validateGate(); err != nil {
		return err
	}
	if err := c.Post.Validate(); err != nil {
		return err
	}
	if err := c.Pace.Validate(); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	return c.validateRoom()
}

func (c *Config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "listen address of the admin API, the console, /metrics and /debug/pprof (then not served on --addr); empty: --addr serves them")
	fs.StringVar(&c.Data, "data", c.Data, "directory of the embedded record (SQLite)")
	fs.StringVar(&c.Postgres, "postgres", c.Postgres, "PostgreSQL URL of the record, instead of SQLite under --data")
	fs.IntVar(&c.PostgresOptions.RecordConns, "postgres-record-conns", c.PostgresOptions.RecordConns, "PostgreSQL connections that record claims, one group commit each")
	fs.IntVar(&c.PostgresOptions.BackgroundConns, "postgres-background-conns", c.PostgresOptions.BackgroundConns, "PostgreSQL connections for background work")
	fs.IntVar(&c.PostgresOptions.ReadConns, "postgres-read-conns", c.PostgresOptions.ReadConns, "PostgreSQL connections for reads and admin writes")
	fs.StringVar(&c.Passport.Issuer, "passport-issuer", c.Passport.Issuer, "if set, passports must carry this iss")
	fs.StringVar(&c.Passport.Audience, "passport-audience", c.Passport.Audience, "if set, passports must carry this aud (among others)")
	fs.DurationVar(&c.Passport.MaxLifetime, "passport-max-lifetime", c.Passport.MaxLifetime, "longest lifetime of a passport accepted (exp - iat, or exp - now without iat)")
	fs.IntVar(&c.Limits.Claim, "claim-inflight", c.Limits.Claim, "claim requests in flight before shedding with 503")
	fs.IntVar(&c.Limits.ClaimWorkers, "claim-workers", c.Limits.ClaimWorkers, "claim handlers running at once; the other claims in flight wait in line (0: two per core; -1: no bound)")
	fs.IntVar(&c.Limits.Read, "read-inflight", c.Limits.Read, "public read requests in flight before shedding")
	fs.IntVar(&c.Limits.Admin, "admin-inflight", c.Limits.Admin, "admin requests in flight before shedding")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long a graceful shutdown waits for requests in flight")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json or text")
	fs.IntVar(&c.GCPercent, "gc-percent", c.GCPercent, "garbage collection target, as GOGC (a set GOGC wins): higher collects less often, fewer pauses in a spike's tail")
	c.roomFlags(fs)
	c.gateFlags(fs)
	c.Post.flags(fs)
	c.Pace.flags(fs)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("dibs serve", flag.ContinueOnError)
	cfg.flags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	cfg.PassportSecret = os.Getenv("DIBS_PASSPORT_SECRET")
	cfg.AdminToken = os.Getenv("DIBS_ADMIN_TOKEN")
	tokens, err := parseAdminTokens(os.Getenv("DIBS_ADMIN_TOKENS"))
	if err != nil {
		return usageError{err}
	}
	cfg.AdminTokens = tokens
	cfg.Room.Secret = os.Getenv("DIBS_ROOM_SECRET")
	cfg.Post.WebhookSecret = os.Getenv("DIBS_WEBHOOK_SECRET")
	cfg.Post.PaymentKey = os.Getenv("DIBS_PAYMENT_KEY")
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}

	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(cfg.GCPercent)
	}
	m := NewMain(cfg, newLogger(stderr, cfg.LogLevel, cfg.LogFormat))
	if err := m.Run(ctx); err != nil {
		m.log.Error("start failed", "err", err)
		return errors.Join(err, m.Close())
	}
	return serve(ctx, m)
}

// serve waits until ctx ends (a signal) or m's server stops on its own (its
// listener failed), then shuts m down. A node that no longer serves does
// not linger: it exits with the cause, so that its supervisor restarts it.
func serve(ctx context.Context, m *Main) error {
	select {
	case <-ctx.Done():
		m.log.Info("shutting down")
		return m.Close()
	case <-m.Stopped():
		m.log.Error("stopped serving; shutting down", "err", m.ServeErr())
		return m.Close() // its error holds ServeErr's
	}
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Main is a running dibs node: the one place where the gate, the record,
// the engine and the HTTP server are chosen and wired. End-to-end tests and
// the demo run it in-process on port 0.
type Main struct {
	cfg        Config
	log        *slog.Logger
	store      record
	gate       *gateService
	engine     *engine.Engine
	room       *room.Service
	roomLeader *room.Leader
	runner     atomic.Pointer[post.Runner]
	gauge      *payment.Gauge // the payment client's; nil without a gateway
	pacer      *pace.Pacer    // steers the auto-paced waiting rooms this node leads
	switches   *switches.Service
	actions    dibs.ActionLog
	live       *live.Service
	srv        *http.Server
	ln         net.Listener
	adminSrv   *http.Server // with --admin-addr
	adminLn    net.Listener

	listen   func(network, addr string) (net.Listener, error) // net.Listen unless a test sets it
	stopped  chan struct{}                                    // closed when the first Serve returns
	stopOnce sync.Once
	serving  sync.WaitGroup // the Serve calls
	serveErr error          // why, once stopped is closed
}

// NewMain returns a node that Run starts.
func NewMain(cfg Config, log *slog.Logger) *Main {
	return &Main{cfg: cfg, log: log}
}

// Run opens the record, rebuilds the gate from it, and starts serving. It
// returns once the listener is up; Close stops everything.
func (m *Main) Run(ctx context.Context) error {
	store, rec, err := openStore(ctx, m.cfg)
	if err != nil {
		return err
	}
	m.store = store

	verifier, err := passport.NewVerifier([]byte(m.cfg.PassportSecret), m.cfg.Passport)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s, ok := store.(interface{ Collector() prometheus.Collector }); ok {
		reg.MustRegister(s.Collector())
	}

	if m.gate, err = openGate(m.cfg.Redis, m.cfg.Reconcile, reg, m.log); err != nil {
		return err
	}
	if m.cfg.Post.PaymentGateway != "" {
		m.gauge = payment.NewGauge(nil)
		if err := m.gauge.Register(reg); err != nil {
			return err
		}
	}
	m.pacer = pace.NewPacer(paceHealth{cfg: m.cfg.Pace, jobs: m.jobs, gauge: m.gauge}, engineRates{m}, 0)
	if m.room, err = openRoom(m.cfg, m.gate.client, m.pacer, m.log); err != nil {
		return err
	}
	m.engine = engine.New(engine.Config{
		Store: store, Background: backgroundOf(store), Gate: m.gate.gate, Recorder: rec, Logger: m.log,
		Admissions: m.room,
	})
	if err := m.engine.Register(reg); err != nil {
		return err
	}
	if err := m.room.Register(reg); err != nil {
		return err
	}
	start := time.Now()
	// The engine outlives ctx: Close stops it once requests in flight
	// have their answers.
	if err := m.engine.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	m.log.Info("record loaded", "drops", len(m.engine.Drops()), "took", time.Since(start).Round(time.Millisecond))
	if err := m.startRoom(ctx); err != nil {
		return fmt.Errorf("start waiting rooms: %w", err)
	}
	m.gate.start(m.engine)
	if m.switches, m.actions, err = openSwitches(store, m.gate.client, m.cfg.Redis.Prefix, reg, m.log); err != nil {
		return err
	}
	if err := m.switches.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start switches: %w", err)
	}
	m.cfg.Post.Switches = m.switches
	runner, err := openPost(m.cfg.Post, store, m.engine, m.gauge, m.cfg.ShutdownTimeout, reg, m.log)
	if err != nil {
		return err
	}
	if err := runner.Start(ctx); err != nil {
		return fmt.Errorf("start jobs: %w", err)
	}
	m.runner.Store(runner)
	payments, jobs := postServices(m.cfg.Post, store, runner)
	go m.kickPostOnCommit(m.engine.Committed())
	if m.live, err = m.openLive(reg, jobs); err != nil {
		return err
	}
	if err := m.live.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start live snapshot: %w", err)
	}

	api := httpapi.New(httpapi.Config{
		Drops: m.engine, Claims: m.engine, Queue: m.room, Payments: payments, Jobs: jobs,
		Switches: m.switches, Actions: m.actions, Live: m.live, Console: console.Handler(),
		Passports: verifier, AdminToken: m.cfg.AdminToken, AdminTokens: m.cfg.AdminTokens,
		SeparateAdmin: m.cfg.AdminAddr != "",
		Limits:        m.cfg.Limits,
		Gatherer:      reg, Registerer: reg, Logger: m.log,
		Joins: m.cfg.Room.Joins, ClientIPHeader: m.cfg.Room.ClientIPHeader,
	})
	listen := m.listen
	if listen == nil {
		listen = net.Listen
	}
	if m.ln, err = listen("tcp", m.cfg.Addr); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if m.cfg.AdminAddr != "" {
		if m.adminLn, err = listen("tcp", m.cfg.AdminAddr); err != nil {
			m.ln.Close()
			m.ln = nil
			return fmt.Errorf("listen admin: %w", err)
		}
	}
	m.stopped = make(chan struct{})
	m.srv = m.serveOn(api, m.ln, "serve", api)
	if m.adminLn != nil {
		m.adminSrv = m.serveOn(api.Admin(), m.adminLn, "serve admin", api)
	}
	labels := []string{}
	if m.cfg.AdminToken != "" {
		labels = append(labels, "admin")
	}
	for _, t := range m.cfg.AdminTokens {
		labels = append(labels, t.Label)
	}
	m.log.Info("listening", "addr", m.ln.Addr().String(), "admin_addr", m.adminAddr(), "admin_tokens", labels,
		"data", m.cfg.Data, "version", versionString())
	return nil
}

// serveOn serves h on ln in an http.Server of its own until Close; the
// first Serve to return closes m.stopped, with the cause if it failed.
func (m *Main) serveOn(h http.Handler, ln net.Listener, name string, api *httpapi.Server) *http.Server {
	srv := httpapi.NewHTTPServer(h) // its connection limits are tested in httpapi
	srv.ErrorLog = slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)
	srv.RegisterOnShutdown(api.CloseStreams)
	m.serving.Add(1)
	go func() {
		defer m.serving.Done()
		err := srv.Serve(ln)
		m.stopOnce.Do(func() {
			if !errors.Is(err, http.ErrServerClosed) {
				m.serveErr = fmt.Errorf("%s: %w", name, err)
			}
			close(m.stopped)
		})
	}()
	return srv
}

// adminAddr is the address the admin listener serves on; empty without
// one.
func (m *Main) adminAddr() string {
	if m.adminLn == nil {
		return ""
	}
	return m.adminLn.Addr().String()
}

// record is a system of record with post-processing and the operators'
// switches and log: both stores are.
type record interface {
	dibs.Store
	post.Store
	dibs.AdminStore
}

// jobs is post-processing's job service once it runs; nil before.
func (m *Main) jobs() dibs.JobService {
	if r := m.runner.Load(); r != nil {
		return r
	}
	return nil
}

// openStore opens the record, PostgreSQL when --postgres is set, else the
// SQLite file under --data, with the recorder settings that suit it.
// SQLite serialises writers: one commit at a time. PostgreSQL commits in
// parallel: one committer per recording connection (docs/benchmarks.md).
func openStore(ctx context.Context, cfg Config) (record, engine.RecorderConfig, error) {
	if cfg.Postgres != "" {
		s, err := postgres.Open(ctx, cfg.Postgres, cfg.PostgresOptions)
		if err != nil {
			return nil, engine.RecorderConfig{}, err
		}
		return s, engine.RecorderConfig{Committers: cfg.PostgresOptions.RecordConns}, nil
	}
	if err := os.MkdirAll(cfg.Data, 0o750); err != nil {
		return nil, engine.RecorderConfig{}, fmt.Errorf("data directory: %w", err)
	}
	s, err := sqlite.Open(ctx, filepath.Join(cfg.Data, "dibs.db"))
	if err != nil {
		return nil, engine.RecorderConfig{}, err
	}
	return s, engine.RecorderConfig{Committers: 1}, nil
}

// backgroundOf is the store the engine's background work (loading and
// refreshing drops, gate rebuilds, the reconciler) reads through: on
// PostgreSQL the record's background pool, so that a long rebuild holds
// none of the read connections claims and /readyz need; nil (the store
// itself) on SQLite, which has no pool per workload.
func backgroundOf(store record) dibs.Store {
	if pg, ok := store.(*postgres.Store); ok {
		return pg.BackgroundReads()
	}
	return nil
}

// kickPostOnCommit wakes the outbox pump after group commits, until the
// engine stops.
func (m *Main) kickPostOnCommit(committed <-chan struct{}) {
	for range committed {
		if r := m.runner.Load(); r != nil {
			r.Kick()
		}
	}
}

// Stopped is closed when one of the node's HTTP servers (the public one,
// the admin one with --admin-addr) stops serving: after Close, or on its
// own when its listener fails (ServeErr says why). Run must have
// succeeded.
func (m *Main) Stopped() <-chan struct{} { return m.stopped }

// ServeErr is why the HTTP server stopped on its own, once Stopped is
// closed; nil if Close stopped it.
func (m *Main) ServeErr() error { return m.serveErr }

// URL is the base URL the node serves on.
func (m *Main) URL() string { return "http://" + m.ln.Addr().String() }

// AdminURL is the base URL of the admin routes, the console, /metrics and
// pprof: the admin listener's with --admin-addr, else URL.
func (m *Main) AdminURL() string {
	if m.adminLn == nil {
		return m.URL()
	}
	return "http://" + m.adminLn.Addr().String()
}

// Close shuts down gracefully: stop accepting, let requests in flight finish
// (their claims commit), drain the recorder, close the record. Safe to call
// on a node that failed to start.
func (m *Main) Close() error {
	var errs []error
	if m.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ShutdownTimeout)
		defer cancel()
		for _, srv := range []*http.Server{m.srv, m.adminSrv} {
			if srv == nil {
				continue
			}
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
		}
		m.serving.Wait()
		if m.serveErr != nil {
			errs = append(errs, m.serveErr)
		}
		m.srv, m.adminSrv = nil, nil
	}
	if m.live != nil {
		errs = append(errs, m.live.Stop())
		m.live = nil
	}
	if m.roomLeader != nil {
		errs = append(errs, m.roomLeader.Stop())
		m.roomLeader = nil
	}
	m.room = nil
	if r := m.runner.Swap(nil); r != nil { // its jobs release slots through the engine
		if err := r.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop jobs: %w", err))
		}
	}
	if m.switches != nil {
		errs = append(errs, m.switches.Stop())
		m.switches = nil
	}
	if m.gate != nil {
		m.gate.stopWork() // reconciler and refresh, before the engine they use
	}
	if m.engine != nil {
		errs = append(errs, m.engine.Stop())
		m.engine = nil
	}
	if m.gate != nil {
		m.gate.close() // after the engine: its last commits confirm holds
		m.gate = nil
	}
	if m.store != nil {
		errs = append(errs, m.store.Close())
		m.store = nil
	}
	return errors.Join(errs...)
}
