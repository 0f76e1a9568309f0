package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-io/dibs/client"
)

const (
	passportSecret = "shop-test-passport-secret-0123456789"
	webhookSecret  = "shop-test-webhook-secret"
	adminToken     = "shop-test-admin-token"
)

// startDibs builds dibs and runs `dibs serve` on a free loopback port with
// a temporary data directory, sending its webhooks to hookURL, and returns
// its URL once it listens.
func startDibs(t *testing.T, hookURL string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "dibs")
	build := exec.Command("go", "build", "-o", bin, "github.com/dibs-io/dibs/cmd/dibs")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build dibs: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"),
		"--webhook-url", hookURL, "--job-retry-min", "50ms", "--job-retry-max", "500ms")
	cmd.Env = append(os.Environ(), "DIBS_PASSPORT_SECRET="+passportSecret, "DIBS_ADMIN_TOKEN="+adminToken, "DIBS_WEBHOOK_SECRET="+webhookSecret)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				addr <- line.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(2 * time.Minute): // generous: a busy machine
		t.Fatal("dibs serve did not start listening")
	}
	return ""
}

// The whole path of a winner: the shop sends the user to the waiting-room
// page with a passport, the user claims with it (as the page does), dibs
// issues the coupon and tells the shop, which ships it.
func TestShopAgainstDibs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	shopURL := "http://" + ln.Addr().String()
	dibsURL := startDibs(t, shopURL+"/hooks/dibs")

	shipped := make(chan Coupon, 4)
	shop, err := NewShop(Config{DibsURL: dibsURL, PassportSecret: passportSecret, WebhookSecret: webhookSecret,
		Shipped: func(c Coupon) { shipped <- c }})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: shop}
	go srv.Serve(ln)
	defer srv.Close()

	ctx := context.Background()
	admin, err := client.New(client.Config{BaseURL: dibsURL, AdminToken: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateDrop(ctx, client.NewDrop{ID: "launch", Title: "Launch", Kind: "coupon", Stock: 1}); err != nil {
		t.Fatal(err)
	}

	// The shop signs the user in and sends them to dibs.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, shopURL+"/drops/launch/enter", nil)
	req.Header.Set("X-Shop-User", "ana")
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil {
		t.Fatalf("enter: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if loc.Path != "/d/launch" || !strings.HasPrefix(dibsURL, loc.Scheme+"://"+loc.Host) {
		t.Fatalf("enter sends to %s, want %s/d/launch", loc, dibsURL)
	}
	page, err := http.Get(loc.String()) // the fragment stays in the browser
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("waiting-room page: %d %s", page.StatusCode, page.Header.Get("Content-Type"))
	}

	// The page claims with the passport from the fragment.
	frag, err := url.ParseQuery(loc.Fragment)
	if err != nil || frag.Get("passport") == "" {
		t.Fatalf("fragment %q has no passport", loc.Fragment)
	}
	user, _ := client.New(client.Config{BaseURL: dibsURL})
	won, err := user.Claim(ctx, frag.Get("passport"), "launch", client.ClaimOptions{})
	if err != nil || !won.Created || won.UserID != "ana" {
		t.Fatalf("claim: %+v, %v", won, err)
	}
	loser, _ := client.New(client.Config{BaseURL: dibsURL, PassportSecret: []byte(passportSecret)})
	bo, _ := loser.IssuePassport("bo", time.Minute)
	if _, err := user.Claim(ctx, bo, "launch", client.ClaimOptions{}); !client.IsSoldOut(err) {
		t.Fatalf("second claim: %v, want sold out", err)
	}

	// dibs issues the coupon and its webhook reaches the shop. Generous:
	// the job runs and the webhook is sent in the background.
	select {
	case c := <-shipped:
		if c.UserID != "ana" || c.ClaimID != won.ID || c.Code == "" {
			t.Errorf("shipped %+v, want ana's coupon of claim %s", c, won.ID)
		}
		got, err := user.GetClaim(ctx, frag.Get("passport"), won.ID)
		if err != nil || got.CouponCode != c.Code {
			t.Errorf("claim's coupon %q (%v), shipped %q", got.CouponCode, err, c.Code)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("no coupon shipped")
	}
}
