package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/postgres/pgtest"
)

// TestPostgresCrashMidSpike is a PostgreSQL crash mid-spike at the level
// of a node: a
// `dibs serve` node (in-memory gate) keeps its record on a PostgreSQL
// server of this test's own, and takes a spike from the load generator.
// Once a fifth of the stock is won, PostgreSQL is stopped the way a crash
// stops it (pg_ctl stop -m immediate), left down a second and started
// again (crash recovery). Throughout, /healthz answers 200; /readyz answers
// 503 while PostgreSQL is down and 200 again after. The node reconnects by
// itself: most of the stock is won after the restart. Every acknowledged winner
// is in the export, never more than the stock; claims cut off by the crash
// hold their slots until the reconciler returns them (--reconcile-grace
// 3 s), late users take them, and the drop ends with exactly its stock,
// each winner with one coupon.
func TestPostgresCrashMidSpike(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	t.Parallel()
	const stock = 1000
	pg := pgtest.NewServer(t)
	n := startNode(t, t.TempDir(), "--postgres", pg.URL(),
		"--postgres-record-conns", "2", "--postgres-background-conns", "1", "--postgres-read-conns", "2",
		"--reconcile-interval", "1s", "--reconcile-grace", "3s")
	createDrop(t, n.url, fmt.Sprintf(`{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":%d}`, stock))

	// The watcher reads /healthz and /readyz every 20 ms until the end.
	type probe struct {
		at              time.Time
		healthz, readyz int
	}
	var (
		probesMu sync.Mutex
		probes   []probe
	)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		c := &http.Client{Timeout: 3 * time.Second}
		for watchCtx.Err() == nil {
			p := probe{at: time.Now(), healthz: status(c, n.url+"/healthz"), readyz: status(c, n.url+"/readyz")}
			probesMu.Lock()
			probes = append(probes, p)
			probesMu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	readyz := func(since time.Time, want int) bool {
		probesMu.Lock()
		defer probesMu.Unlock()
		for _, p := range probes {
			if p.at.After(since) && p.readyz == want {
				return true
			}
		}
		return false
	}

	// A steady stream of users for six seconds: the crash and the restart
	// fall in the middle of it.
	cfg := loadgen.Config{
		Target: n.url, DropID: "pepero", Users: 4800,
		Profile:        loadgen.Profile{Shape: loadgen.Constant, Rate: 800},
		RetryFraction:  0.2,
		PassportSecret: []byte(e2eSecret), AdminToken: e2eAdmin, Seed: 11,
		Logger: slog.New(slog.NewTextHandler(tLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	type outcome struct {
		rep *loadgen.Report
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		rep, err := loadgen.Run(context.Background(), cfg)
		done <- outcome{rep, err}
	}()

	left := remaining(t, n.url, "pepero")
	for ; left > stock*4/5; left = remaining(t, n.url, "pepero") {
		time.Sleep(5 * time.Millisecond)
	}
	// At most this many winners are in the record when it goes down: the
	// gate counts each before its commit.
	claimedAtCrash := stock - int(left)
	crashed := time.Now()
	pg.Crash()
	for !readyz(crashed, http.StatusServiceUnavailable) {
		if time.Since(crashed) > 10*time.Second {
			t.Fatal("/readyz did not report PostgreSQL down within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // an outage, not a blip
	restarting := time.Now()
	pg.Start()
	restarted := time.Now()
	for !readyz(restarted, http.StatusOK) {
		if time.Since(restarted) > 20*time.Second {
			t.Fatal("/readyz not 200 within 20 s of PostgreSQL's restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	back := time.Now()
	t.Logf("PostgreSQL crashed with %d slots claimed, down %v, crash recovery %v, node ready %v after; %d winners then",
		claimedAtCrash, restarting.Sub(crashed).Round(time.Millisecond), restarted.Sub(restarting).Round(time.Millisecond),
		back.Sub(restarted).Round(time.Millisecond), len(exportWinners(t, n.url, "pepero")))

	out := <-done
	if out.err != nil {
		t.Fatalf("load: %v", out.err)
	}
	rep := out.rep
	for _, name := range []string{loadgen.AuditWithinStock, loadgen.AuditUniqueSlots, loadgen.AuditPerUserLimit,
		loadgen.AuditAckedPresent, loadgen.AuditIdempotent, loadgen.AuditServerErrors, loadgen.AuditFinalStates} {
		if c := checkOf(t, rep, name); c.Status != loadgen.CheckPass {
			t.Errorf("%s %s: %s", c.Name, c.Status, c.Detail)
		}
	}
	t.Logf("spike: %s", oneLine(rep))
	if rep.Totals.Shed == 0 {
		t.Errorf("no claim was answered 503 while PostgreSQL was down")
	}
	acked := exportWinners(t, n.url, "pepero") // holds every acknowledged winner (checked above)
	// Nothing commits while PostgreSQL is down, so the winners beyond those
	// claimed at the crash (and a few in the instant before it) committed
	// after the restart, on connections the node opened by itself. They may
	// have committed before /readyz said so: the users the outage sent away
	// come back after their Retry-After, all at once.
	if len(acked) < claimedAtCrash+stock/10 {
		t.Errorf("%d winners at the end of the spike, %d slots claimed when PostgreSQL crashed: the node did not take claims again", len(acked), claimedAtCrash)
	}

	// Late users, once the slots the crash cut off are back, take the rest.
	start := time.Now()
	for len(exportWinners(t, n.url, "pepero"))+int(remaining(t, n.url, "pepero")) != stock {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("held slots with no record not returned after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	late := cfg
	late.Seed, late.Users = 12, 2*int(remaining(t, n.url, "pepero"))+100
	late.Profile = loadgen.Profile{Shape: loadgen.Spike, Duration: 500 * time.Millisecond}
	if rep := runLoad(t, late); !rep.Audit.OK { // among its checks: exactly the stock won
		t.Fatalf("audit after the late users failed:\n%s", summaryOf(rep))
	}
	final := exportWinners(t, n.url, "pepero")
	for id, w := range acked {
		if final[id] != w {
			t.Fatalf("acknowledged claim %+v is %+v at the end", w, final[id])
		}
	}
	if len(final) != stock {
		t.Fatalf("%d winners at the end, want %d", len(final), stock)
	}

	// One coupon per winner, once the outbox has drained.
	start = time.Now()
	for {
		codes, missing := coupons(t, n.url, "pepero")
		if missing == 0 {
			if len(codes) != stock {
				t.Fatalf("%d distinct coupon codes for %d winners", len(codes), stock)
			}
			t.Logf("every winner has its coupon %v after the late users", time.Since(start).Round(100*time.Millisecond))
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("%d winners without a coupon 60 s after the spike", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}

	stopWatch()
	<-watched
	probesMu.Lock()
	defer probesMu.Unlock()
	var notReady int
	for _, p := range probes {
		if p.healthz != http.StatusOK {
			t.Errorf("/healthz answered %d at %v (PostgreSQL crashed at 0)", p.healthz, p.at.Sub(crashed).Round(time.Millisecond))
		}
		if p.readyz != http.StatusOK {
			notReady++
			if p.at.Before(crashed) || p.at.After(back) {
				t.Errorf("/readyz answered %d at %v, outside the outage (0 to %v)", p.readyz, p.at.Sub(crashed).Round(time.Millisecond), back.Sub(crashed).Round(time.Millisecond))
			}
		}
	}
	t.Logf("%d probes of /healthz and /readyz, %d of them not ready", len(probes), notReady)
}

// status is the status of a GET, 0 if there was no answer.
func status(c *http.Client, url string) int {
	res, err := c.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// remaining reads a drop's remaining stock from a node's gate (the public
// drop read, which needs no record).
func remaining(t *testing.T, url, drop string) int64 {
	t.Helper()
	res, err := http.Get(url + "/v1/drops/" + drop)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var v struct{ Remaining int64 }
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.Remaining
}

// coupons reads the winners' coupon codes: the distinct codes, and how
// many winners have none yet.
func coupons(t *testing.T, url, drop string) (map[string]bool, int) {
	t.Helper()
	res := admin(t, "GET", url+"/v1/admin/drops/"+drop+"/winners")
	defer res.Body.Close()
	codes, missing := map[string]bool{}, 0
	dec := json.NewDecoder(res.Body)
	for {
		var w struct {
			CouponCode string `json:"coupon_code"`
		}
		if err := dec.Decode(&w); err == io.EOF {
			return codes, missing
		} else if err != nil {
			t.Fatal(err)
		}
		if w.CouponCode == "" {
			missing++
		} else {
			codes[w.CouponCode] = true
		}
	}
}
