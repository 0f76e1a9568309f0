package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dibs-io/dibs/internal/headless"
	"github.com/dibs-io/dibs/internal/testenv"
)

// Console screenshots are taken at a laptop's viewport.
const viewW, viewH = 1280, 900

// browser starts a headless Chromium and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	return headless.New(t, viewW, viewH)
}

// pageDo runs browser steps, a minute at most.
func pageDo(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// pageWait polls a JavaScript condition in the page for up to a minute.
func pageWait(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(time.Minute))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v (the page reads: %s)", what, err, body)
	}
}

// screenshot saves the viewport as name: into docs/img when
// DIBS_UPDATE_SCREENSHOTS=1 (the pictures of docs/operations.md), else into
// the test's artifact directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := t.ArtifactDir()
	if os.Getenv("DIBS_UPDATE_SCREENSHOTS") == "1" {
		dir = filepath.Join("..", "..", "docs", "img")
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", file, len(png))
}

// TestConsoleOnANode signs in to the console of a real node (on its admin
// listener) in headless Chromium, watches a drop's numbers move while a
// spike of claims runs on the public listener, and turns the claims switch
// off from the page: the next claim answers 503 switched_off.
func TestConsoleOnANode(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	n, adm := startConsoleNode(t)
	const stock = 50000
	if a := send(t, "POST", adm+"/v1/admin/drops", aliceToken,
		fmt.Sprintf(`{"id":"phones","title":"Phones, launch edition","kind":"coupon","stock":%d}`, stock)); a.status != 201 {
		t.Fatalf("create a drop: %s", a)
	}

	pageDo(t, ctx, "open the console",
		chromedp.Navigate(adm+"/console"),
		chromedp.WaitVisible(chromedp.CSS(`#signin-form`)),
	)
	pageDo(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`#token`), aliceToken),
		chromedp.Click(chromedp.CSS(`#signin-form button`)),
	)
	const remaining = `Number((document.querySelector('[data-drop=phones] [data-field=remaining]')?.textContent ?? '').replace(/\D/g, '') || -1)`
	pageWait(t, ctx, "the drop's tile with its stock", remaining+` === `+strconv.Itoa(stock))
	pageWait(t, ctx, "live", `document.getElementById('conn').textContent === 'live'`)

	// The spike: claims from new users on the public listener until the
	// page has shown the remaining stock change three times.
	stop := make(chan struct{})
	var spike sync.WaitGroup
	c := newClaimer(t, "spike")
	for range 8 {
		spike.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.claim(n.url, "phones")
			}
		})
	}
	seen := map[int]bool{}
	testenv.WaitFor(t, "the remaining stock changes three times on the page during the spike", func() bool {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[int](remaining))
		if err == nil && v >= 0 && v < stock {
			seen[v] = true
		}
		return len(seen) >= 3
	})
	pageWait(t, ctx, "claims won per second above zero", `[...document.querySelectorAll('[data-drop=phones] .rates td')].some((td) => /^[1-9]/.test(td.textContent))`)
	screenshot(t, ctx, "console-spike.png")
	close(stop)
	spike.Wait()
	t.Logf("the page showed remaining %v during the spike (%d claims sent)", seen, c.n.Load())

	// Claims off, from the page.
	pageDo(t, ctx, "turn claims off",
		chromedp.Click(chromedp.CSS(`[data-switch=claims]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-yes`)),
	)
	screenshot(t, ctx, "console-switch-confirm.png")
	pageDo(t, ctx, "confirm", chromedp.Click(chromedp.CSS(`#confirm-yes`)))
	pageWait(t, ctx, "claims shown off", `document.querySelector('.switch[data-name=claims]').dataset.state === 'off'`)
	if a, retry := c.claim(n.url, "phones"); !switchedOff(a) || retry == "" {
		t.Errorf("claim after the page turned claims off: %d %q Retry-After %q, want 503 switched_off with Retry-After", a.status, a.Code, retry)
	}
	pageWait(t, ctx, "the flip in the operators' log", `document.getElementById('actions').textContent.includes('switch.flipped')`)
	pageDo(t, ctx, "show the switches", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	screenshot(t, ctx, "console-switches.png")
}
