// Command shop is the main service of a team that runs its drops on dibs,
// cut to what touches dibs: it signs a passport for a signed-in user and
// sends them to the drop's waiting-room page, and it ships the coupon a
// winner gets when dibs's webhook says so.
//
//	DIBS_URL=http://127.0.0.1:8080 \
//	DIBS_PUBLIC_URL=https://dibs.example.com \
//	DIBS_PASSPORT_SECRET=... DIBS_WEBHOOK_SECRET=... \
//	go run ./examples/shop --addr 127.0.0.1:8081
//
// and start dibs with --webhook-url http://127.0.0.1:8081/hooks/dibs and
// the same two secrets. docs/integration.md walks through it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/dibs-io/dibs/client"
	"github.com/dibs-io/dibs/webhook"
)

// Config is what the shop needs to talk to dibs.
type Config struct {
	// DibsURL is where the shop's server calls dibs (the admin API).
	DibsURL string
	// PublicURL is the dibs address users' browsers reach; DibsURL if empty.
	PublicURL      string
	PassportSecret string
	WebhookSecret  string
	// PassportTTL is how long a passport lasts: the wait in line and the
	// claim must fit in it.
	PassportTTL time.Duration
	// Shipped, if set, is called after each coupon is shipped.
	Shipped func(Coupon)
	Logger  *slog.Logger
}

// Coupon is a coupon a winner was sent.
type Coupon struct {
	UserID, DropID, ClaimID, Code string
}

// Shop is the main service's dibs-facing part.
type Shop struct {
	cfg    Config
	public *client.Client
	mux    *http.ServeMux

	mu      sync.Mutex
	coupons map[string][]Coupon // by user; a real shop has a table
}

// NewShop returns the shop's handler.
func NewShop(cfg Config) (*Shop, error) {
	if cfg.PublicURL == "" {
		cfg.PublicURL = cfg.DibsURL
	}
	if cfg.PassportTTL == 0 {
		cfg.PassportTTL = 30 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	public, err := client.New(client.Config{BaseURL: cfg.PublicURL, PassportSecret: []byte(cfg.PassportSecret)})
	if err != nil {
		return nil, err
	}
	s := &Shop{cfg: cfg, public: public, mux: http.NewServeMux(), coupons: make(map[string][]Coupon)}
	hooks, err := webhook.NewHandler(webhook.HandlerConfig{Secret: []byte(cfg.WebhookSecret), Logger: cfg.Logger}, s.onEvent)
	if err != nil {
		return nil, err
	}
	s.mux.HandleFunc("GET /drops/{id}/enter", s.enter)
	s.mux.HandleFunc("GET /coupons", s.myCoupons)
	s.mux.Handle("POST /hooks/dibs", hooks)
	return s, nil
}

func (s *Shop) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// currentUser stands in for the shop's own sign-in: a real shop reads its
// session cookie. Here the user id comes in a header its proxy sets.
func currentUser(r *http.Request) string { return r.Header.Get("X-Shop-User") }

// enter signs a passport for the signed-in user and sends them to the
// drop's waiting-room page, the passport in the URL's fragment, which the
// browser keeps to itself: it never reaches a server's logs.
func (s *Shop) enter(w http.ResponseWriter, r *http.Request) {
	user := currentUser(r)
	if user == "" {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	pass, err := s.public.IssuePassport(user, s.cfg.PassportTTL)
	if err != nil {
		s.cfg.Logger.Error("issue passport", "err", err)
		http.Error(w, "try again", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, s.public.WaitingRoomURL(r.PathValue("id"), pass), http.StatusSeeOther)
}

// onEvent is called once per new webhook event. Returning an error makes
// dibs send the event again later.
func (s *Shop) onEvent(ctx context.Context, e webhook.Event) error {
	d := e.Data.(webhook.ClaimData)
	switch e.Type {
	case webhook.TypeNotifyWinner:
		if d.CouponCode == "" {
			return nil // a paid purchase: the order system takes it from here
		}
		c := Coupon{UserID: d.UserID, DropID: d.DropID, ClaimID: d.ClaimID, Code: d.CouponCode}
		s.mu.Lock()
		s.coupons[d.UserID] = append(s.coupons[d.UserID], c)
		s.mu.Unlock()
		s.cfg.Logger.Info("coupon shipped", "user", d.UserID, "drop", d.DropID, "code", d.CouponCode)
		if s.cfg.Shipped != nil {
			s.cfg.Shipped(c)
		}
	case webhook.TypePaymentFailed, webhook.TypeHoldExpired:
		s.cfg.Logger.Info("slot lost", "user", d.UserID, "drop", d.DropID, "why", e.Type)
	default:
		s.cfg.Logger.Info("webhook ignored", "type", e.Type) // a newer dibs: ignore what we do not know
	}
	return nil
}

// myCoupons lists the signed-in user's coupons.
func (s *Shop) myCoupons(w http.ResponseWriter, r *http.Request) {
	user := currentUser(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.coupons[user] {
		fmt.Fprintf(w, "%s\t%s\n", c.DropID, c.Code)
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("shop", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8081", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	shop, err := NewShop(Config{
		DibsURL: os.Getenv("DIBS_URL"), PublicURL: os.Getenv("DIBS_PUBLIC_URL"),
		PassportSecret: os.Getenv("DIBS_PASSPORT_SECRET"), WebhookSecret: os.Getenv("DIBS_WEBHOOK_SECRET"),
		Logger: log,
	})
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: *addr, Handler: shop, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Info("listening", "addr", *addr)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
