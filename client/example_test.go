package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/dibs-io/dibs/client"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/sqlite"
)

const (
	passportSecret = "an-example-secret-of-32-bytes-at-least"
	adminToken     = "an-example-admin-token"
)

// node runs a dibs API in this process, as `dibs serve` would, and returns
// its URL and how to stop it.
func node() (string, func()) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dibs-example")
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.Open(ctx, filepath.Join(dir, "dibs.db"))
	if err != nil {
		log.Fatal(err)
	}
	e := engine.New(engine.Config{Store: store, Gate: memory.NewGate()})
	if err := e.Open(ctx); err != nil {
		log.Fatal(err)
	}
	v, err := passport.NewVerifier([]byte(passportSecret), passport.Options{})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Drops: e, Claims: e, Passports: v, AdminToken: adminToken}))
	return srv.URL, func() { srv.Close(); e.Close(); store.Close(); os.RemoveAll(dir) }
}

// The main service creates a drop, signs a passport for each signed-in
// user, and claims on their behalf; losers get a typed error.
func Example() {
	url, stop := node()
	defer stop()
	ctx := context.Background()

	c, err := client.New(client.Config{BaseURL: url, AdminToken: adminToken, PassportSecret: []byte(passportSecret)})
	if err != nil {
		log.Fatal(err)
	}
	d, err := c.CreateDrop(ctx, client.NewDrop{ID: "pepero-day", Title: "Pepero Day", Kind: "coupon", Stock: 1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.ID, d.State, d.Remaining)

	for _, user := range []string{"u-1", "u-2"} {
		pass, err := c.IssuePassport(user, 15*time.Minute)
		if err != nil {
			log.Fatal(err)
		}
		cl, err := c.Claim(ctx, pass, d.ID, client.ClaimOptions{IdempotencyKey: "order-" + user})
		switch {
		case client.IsSoldOut(err):
			fmt.Println(user, "lost: sold out")
		case err != nil:
			log.Fatal(err)
		default:
			fmt.Println(user, "won slot", cl.Slot, cl.State)
		}
	}
	stats, err := c.DropStats(ctx, d.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("confirmed", stats.Confirmed, "remaining", stats.Remaining)
	// Output:
	// pepero-day open 1
	// u-1 won slot 1 confirmed
	// u-2 lost: sold out
	// confirmed 1 remaining 0
}

// The winners arrive one at a time, in slot order, however many there are.
func ExampleClient_Winners() {
	url, stop := node()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(client.Config{BaseURL: url, AdminToken: adminToken, PassportSecret: []byte(passportSecret)})
	c.CreateDrop(ctx, client.NewDrop{ID: "restock", Title: "Restock", Kind: "coupon", Stock: 3})
	for _, user := range []string{"ana", "bo"} {
		pass, _ := c.IssuePassport(user, time.Minute)
		if _, err := c.Claim(ctx, pass, "restock", client.ClaimOptions{}); err != nil {
			log.Fatal(err)
		}
	}
	err := c.Winners(ctx, "restock", func(w *client.Winner) error {
		fmt.Println(w.Slot, w.UserID, w.State)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// 1 ana confirmed
	// 2 bo confirmed
}

// Send users to the waiting-room page with their passport in the
// fragment, which never reaches a server.
func ExampleClient_WaitingRoomURL() {
	c, _ := client.New(client.Config{BaseURL: "https://dibs.example.com"})
	fmt.Println(c.WaitingRoomURL("pepero-day", "eyJhbGciOi.J9.sig"))
	// Output: https://dibs.example.com/d/pepero-day#passport=eyJhbGciOi.J9.sig
}

// Webhooks that gave up can be listed and sent again once the receiver is
// fixed.
func ExampleClient_FailedWebhooks() {
	url, stop := node()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(client.Config{BaseURL: url, AdminToken: adminToken})
	failed, err := c.FailedWebhooks(ctx, client.FailedWebhooksQuery{Limit: 50})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range failed {
		if err := c.RetryWebhook(ctx, f.ID); err != nil {
			log.Print(err)
		}
	}
	fmt.Println(len(failed), "failed")
	// Output: 0 failed
}
