package loadgen_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/loadgen/loadgentest"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the report screenshot into docs/img")

const chromium = "/usr/bin/chromium"

// The HTML report opens without a network in headless Chromium and draws
// all four charts.
func TestHTMLReportDrawsCharts(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium is required under CI (apt-get install -y chromium): %v", err)
		}
		t.Skip("chromium not installed (apt-get install -y chromium)")
	}
	t.Parallel()
	_, cfg := setup(t, loadgentest.Options{Delay: time.Millisecond}, "coupon", 300, 0)
	cfg.Users = 1500
	cfg.Profile = loadgen.Profile{Shape: loadgen.Spike, Duration: 1500 * time.Millisecond}
	cfg.Regular = loadgen.RegularConfig{Rate: 100, Lead: time.Second, Tail: time.Second}
	rep := MustRun(t, cfg)

	var page bytes.Buffer
	if err := rep.WriteHTML(&page); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	// Nothing may load from elsewhere: no src or href to another host.
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`).Find(page.Bytes()); m != nil {
		t.Errorf("report references a remote resource: %s", m)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx, cancel = chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()

	// Per canvas: its pixels painted at all, and those in a saturated colour
	// (the series; axes and grid are grey).
	const countPixels = `Array.from(document.querySelectorAll("canvas")).map(c => {
		const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		let painted = 0, coloured = 0;
		for (let i = 0; i < d.length; i += 4) {
			if (d[i+3] === 0) continue;
			painted++;
			if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 60) coloured++;
		}
		return [painted, coloured];
	})`
	err := chromedp.Do(ctx,
		chromedp.Navigate("file://"+file),
		chromedp.Poll[chromedp.Void](`Number(document.body.dataset.charts || 0) >= 4`, chromedp.WithPollingTimeout(20*time.Second)),
	)
	if err != nil {
		t.Fatalf("chromium: open the report: %v", err)
	}
	pixels, err := chromedp.Run(ctx, chromedp.Evaluate[[][2]int](countPixels))
	if err != nil {
		t.Fatalf("chromium: read the canvases: %v", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("chromium: screenshot: %v", err)
	}
	if len(pixels) != 4 {
		t.Fatalf("canvases = %d, want 4 charts", len(pixels))
	}
	for i, p := range pixels {
		if p[0] < 2000 || p[1] < 300 {
			t.Errorf("chart %d: %d painted pixels, %d coloured; want a drawn chart with series", i, p[0], p[1])
		}
	}
	png := filepath.Join(dir, "report.png")
	if err := os.WriteFile(png, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", png)
	if *updateScreenshot {
		if err := os.WriteFile(filepath.Join("..", "docs", "img", "load-report.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
