// Package headless starts the headless Chromium that the page tests drive.
package headless

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/dibs-io/dibs/internal/testenv"
)

// Path returns the path of a headless-capable Chromium ($DIBS_CHROMIUM
// first), or skips the test; under CI a missing browser fails it.
func Path(tb testing.TB) string {
	tb.Helper()
	for _, p := range []string{os.Getenv("DIBS_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if testenv.CI() {
		tb.Fatal("Chromium is not installed (set DIBS_CHROMIUM to its path)")
	}
	tb.Skip("Chromium is not installed")
	return ""
}

// New starts a headless Chromium with a fresh profile, a w×h viewport and
// none of its background network traffic (the machine may have no
// network), and returns a tab's context; the test's cleanup stops it.
func New(tb testing.TB, w, h int) context.Context {
	tb.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Path(tb)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(w, h),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(w), int64(h))); err != nil {
		tb.Fatalf("start Chromium: %v", err)
	}
	return ctx
}
