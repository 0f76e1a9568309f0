package httpapi_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/headless"
)

var updateImages = flag.Bool("update-images", false, "write the page's screenshots to docs/img")

// browser starts a headless Chromium and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	return headless.New(t, 390, 844)
}

// see opens url (unless it is empty: the page as it is), waits for the
// page to show view, and checks the text of the given elements.
func see(t *testing.T, ctx context.Context, url, view, name string, want map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var steps []chromedp.Action[chromedp.Void]
	if url != "" {
		steps = append(steps, chromedp.Navigate(url))
	}
	steps = append(steps, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`body[data-view=%q] [data-for=%q]`, view, view))))
	if err := chromedp.Do(ctx, steps...); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.view + ": " + document.body.innerText`))
		t.Fatalf("%s: the page did not show %q: %v (it shows %s)", name, view, err, body)
	}
	for sel, text := range want {
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil || !strings.Contains(got, text) {
			t.Errorf("%s: %s reads %q (%v), want %q in it", name, sel, got, err, text)
		}
	}
	if hash, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash`)); hash != "" {
		t.Errorf("%s: the passport stayed in the address bar (%q)", name, hash)
	}
}

// shoot is see, then saves a screenshot as room-<name>.png in the test's
// directory (and in docs/img with -update-images, for docs/waiting-room.md).
func shoot(t *testing.T, ctx context.Context, url, view, name string, want map[string]string) {
	t.Helper()
	see(t, ctx, url, view, name, want)
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	file := "room-" + name + ".png"
	if err := os.WriteFile(filepath.Join(t.TempDir(), file), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if *updateImages {
		if err := os.WriteFile(filepath.Join("..", "docs", "img", file), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s: %d bytes", file, len(png))
}

// TestPageInChromium drives the waiting room page in headless Chromium
// through its states: the countdown, waiting in line, admitted (the page
// claims by itself; the claim is held in its commit long enough to see
// it) and won, the winner reloading the page after the admission expired,
// sold out, and the passport form.
func TestPageInChromium(t *testing.T) {
	if raceEnabled {
		t.Skip("Chromium and the race detector together are too slow for the page's timers")
	}
	const ttl = 4 * time.Second // time for the page to claim on a busy machine
	b := setupRoom(t, roomSetup{ttl: ttl})
	ctx := browser(t)
	opens := time.Now().Add(150 * time.Minute).UTC().Format(time.RFC3339)
	b.mustCreateDrop(t, `{"id":"soon","title":"Pepero Day coupons","kind":"coupon","stock":1111,"opens_at":"`+opens+`","admission":{"mode":"queue","rate":100}}`)
	b.mustCreateDrop(t, `{"id":"line","title":"iPhone at noon","kind":"purchase","stock":1000,"admission":{"mode":"queue","rate":2}}`)
	b.mustCreateDrop(t, `{"id":"win","title":"iPhone at noon","kind":"purchase","stock":1000,"admission":{"mode":"queue","rate":50}}`)
	b.mustCreateDrop(t, `{"id":"gone","title":"iPhone at noon","kind":"coupon","stock":1,"admission":{"mode":"queue","rate":50}}`)
	b.mustCreateDrop(t, `{"id":"far","title":"iPhone at noon","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":1}}`)
	page := func(drop, user string) string { return b.srv.URL + "/d/" + drop + "#passport=" + pass(t, user) }

	// Ahead in line: 240 people who joined first.
	line, err := b.engine.Drop("line")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 240 {
		if _, err := b.room.Join(context.Background(), line, fmt.Sprintf("early%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Ahead in "far": more people than its stock.
	far, _ := b.engine.Drop("far")
	for i := range 20 {
		if _, err := b.room.Join(context.Background(), far, fmt.Sprintf("early%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The only slot of "gone" goes to someone else.
	gone, _ := b.engine.Drop("gone")
	j, err := b.room.Join(context.Background(), gone, "first")
	if err != nil {
		t.Fatal(err)
	}
	adm := b.waitAdmitted(t, "gone", pass(t, "first"), j.Ticket)
	if r := b.do(t, "POST", "/v1/drops/gone/claims", pass(t, "first"), "", "Dibs-Admission", adm.body["admission"].(string)); r.status != 201 {
		t.Fatalf("the first claim: %d %s", r.status, r.raw)
	}
	for r := b.do(t, "GET", "/v1/drops/gone/queue", "", ""); r.body["sold_out"] != true; r = b.do(t, "GET", "/v1/drops/gone/queue", "", "") {
		time.Sleep(10 * time.Millisecond)
	}

	shoot(t, ctx, page("soon", "alice"), "countdown", "countdown", map[string]string{"#title": "Pepero Day coupons", "#clock": "02:"})
	shoot(t, ctx, page("line", "alice"), "waiting", "waiting", map[string]string{"#position": "#2", "#eta": "m "})
	see(t, ctx, page("far", "alice"), "waiting", "past the stock", map[string]string{"#eta": "–", "#eta-note": "only if some come back"})
	// The claim waits in its commit until the turn has been seen (it
	// passed the admission check already), then wins.
	block := make(chan struct{})
	b.store.mu.Lock()
	b.store.block, b.store.entered = block, make(chan struct{}, 1)
	b.store.mu.Unlock()
	shoot(t, ctx, page("win", "alice"), "admitted", "admitted", map[string]string{"[data-for=admitted] h2": "your turn"})
	b.store.mu.Lock()
	b.store.block = nil
	b.store.mu.Unlock()
	close(block)
	shoot(t, ctx, "", "won", "won", map[string]string{"#slot": "#1", "#won-detail": "pay before"})
	wonAt := time.Now()

	// Reloaded once the admission has expired, the page shows the win, not
	// a passed turn; without the claim it kept (another browser), it still
	// says the slot is theirs.
	time.Sleep(time.Until(wonAt.Add(ttl + 200*time.Millisecond)))
	see(t, ctx, b.srv.URL+"/d/win", "won", "reload", map[string]string{"#slot": "#1", "#won-detail": "Claim "})
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`localStorage.clear()`)); err != nil {
		t.Fatal(err)
	}
	see(t, ctx, b.srv.URL+"/d/win", "won", "another browser", map[string]string{"#won-detail": "yours"})
	shoot(t, ctx, page("gone", "alice"), string(dibs.QueueSoldOut), "sold-out", map[string]string{"[data-for=sold_out] h2": "Sold out"})
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`sessionStorage.clear()`)); err != nil {
		t.Fatal(err)
	}
	shoot(t, ctx, b.srv.URL+"/d/win", "passport", "passport", map[string]string{"[data-for=passport] button": "Join"})
}
