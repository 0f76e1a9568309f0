package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/passport"
)

// TestFaultDiskFull is a full disk (ENOSPC): the node's SQLite record
// is on a 16 MB tmpfs, and a file fills what is left of it. Claims go on
// while SQLite still has room in the space its files hold, then answer 503
// with Retry-After; drop reads and /healthz keep answering 200; when the
// file is removed, claims win again. Killed and restarted, the node's
// record holds every claim that was ever answered 201 or 200: nothing was
// told "won" that was not durable.
//
// It mounts the tmpfs, which needs root: it skips where mounting is
// refused, and fails under CI.
func TestFaultDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end disk test")
	}
	t.Parallel()
	data := filepath.Join(t.TempDir(), "record")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", data).CombinedOutput(); err != nil {
		if testenv.CI() {
			t.Fatalf("mount a tmpfs for the record: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", data).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", data, err, out)
		}
	})
	n := startNode(t, data)
	createDrop(t, n.url, `{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":1000000}`)

	client := &http.Client{Timeout: 10 * time.Second}
	acked := map[string]winner{}
	users := 0
	claim := func() (int, string) {
		t.Helper()
		users++
		user := fmt.Sprintf("u%d", users)
		tok, err := passport.Issue([]byte(e2eSecret), user, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		a, err := claimAt(context.Background(), client, n.url, "pepero", tok)
		if err != nil {
			t.Fatalf("claim of %s: %v", user, err)
		}
		switch a.status {
		case http.StatusCreated, http.StatusOK:
			acked[a.ClaimID] = winner{a.ClaimID, a.UserID, a.Slot}
		case http.StatusServiceUnavailable:
		default:
			t.Fatalf("claim of %s answered %d %s", user, a.status, a.Code)
		}
		return a.status, a.Code
	}
	for range 20 {
		if status, code := claim(); status != http.StatusCreated {
			t.Fatalf("claim before the disk filled: %d %s", status, code)
		}
	}

	filler := fill(t, data)
	// SQLite reuses the room its WAL already holds: a few hundred claims
	// may still fit, and are durable. Then it needs a page it cannot get.
	var first503 int
	for first503 = 0; first503 < 5000; first503++ {
		if status, _ := claim(); status == http.StatusServiceUnavailable {
			break
		}
	}
	if first503 == 5000 {
		t.Fatalf("5000 claims won on a full disk; want 503 once SQLite needs space")
	}
	full := 0
	for range 20 {
		if status, _ := claim(); status == http.StatusServiceUnavailable {
			full++
		}
	}
	if full < 15 {
		t.Errorf("%d of 20 claims on the full disk answered 503, want nearly all", full)
	}
	if code := status(client, n.url+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz on a full disk = %d, want 200", code)
	}
	if code := status(client, n.url+"/v1/drops/pepero"); code != http.StatusOK {
		t.Errorf("drop read on a full disk = %d, want 200", code)
	}
	if a := retryAfter(t, client, n.url); a == "" {
		t.Error("a claim answered 503 on a full disk without Retry-After")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// Claims win again as soon as SQLite finds room; a starved machine
	// gets 30 s to show it.
	start := time.Now()
	for {
		if status, _ := claim(); status == http.StatusCreated {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("claims did not win again within 30 s of the disk getting room")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resumed := time.Since(start)

	n.kill()
	n = startNode(t, data)
	got := exportWinners(t, n.url, "pepero")
	seen := map[string]bool{}
	for _, w := range got {
		if seen[w.UserID] {
			t.Fatalf("user %s holds two claims", w.UserID)
		}
		seen[w.UserID] = true
	}
	for id, a := range acked {
		if got[id] != a {
			t.Fatalf("acknowledged claim %+v is %+v in the record after a restart", a, got[id])
		}
	}
	t.Logf("%d claims won on the full disk before the first 503, %d of 20 then 503; claims won again %v after the space came back; %d acknowledged, all in the record",
		first503, full, resumed.Round(time.Millisecond), len(acked))
}

// fill writes a file in dir until the file system has no room left, and
// returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	small := make([]byte, 512) // the last scraps
	for {
		if _, err := f.Write(small); err != nil {
			break
		}
	}
	return path
}

// retryAfter sends one claim and returns its Retry-After header if it was
// answered 503, "" otherwise.
func retryAfter(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	tok, err := passport.Issue([]byte(e2eSecret), "retry-after", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", url+"/v1/drops/pepero/claims", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		return ""
	}
	return res.Header.Get("Retry-After")
}
