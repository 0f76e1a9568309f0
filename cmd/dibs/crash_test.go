package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-io/dibs/passport"
)

const (
	e2eSecret = "0123456789abcdef0123456789abcdef"
	e2eAdmin  = "admin-token-0123456789"
)

// binary is the dibs binary built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dibs-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dibs")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build dibs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a `dibs serve` subprocess.
type node struct {
	cmd *exec.Cmd
	url string
}

// startNode runs dibs serve on a free loopback port over data and waits
// until it listens.
func startNode(t *testing.T, data string, extra ...string) *node {
	t.Helper()
	return startNodeEnv(t, data, nil, extra...)
}

// startNodeEnv is startNode with more environment variables.
func startNodeEnv(t *testing.T, data string, env []string, extra ...string) *node {
	t.Helper()
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", data}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "DIBS_PASSPORT_SECRET="+e2eSecret, "DIBS_ADMIN_TOKEN="+e2eAdmin)
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &node{cmd: cmd}
	t.Cleanup(func() { n.kill() })
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
		n.url = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("dibs serve did not start listening")
	}
	return n
}

// kill ends the node with SIGKILL: no shutdown, no flush.
func (n *node) kill() {
	if n.cmd.ProcessState == nil {
		n.cmd.Process.Signal(syscall.SIGKILL)
		n.cmd.Wait()
	}
}

type claimAnswer struct {
	status  int
	ClaimID string `json:"claim_id"`
	UserID  string `json:"user_id"`
	Slot    int64  `json:"slot"`
	Code    string `json:"code"`
}

func claimAt(ctx context.Context, c *http.Client, url, drop, token string) (claimAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/v1/drops/"+drop+"/claims", nil)
	if err != nil {
		return claimAnswer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := c.Do(req)
	if err != nil {
		return claimAnswer{}, err
	}
	defer res.Body.Close()
	var a claimAnswer
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil {
		return claimAnswer{}, err
	}
	a.status = res.StatusCode
	return a, nil
}

func admin(t *testing.T, method, url string) *http.Response {
	t.Helper()
	var body io.Reader
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eAdmin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func createDrop(t *testing.T, url, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/admin/drops", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e2eAdmin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("create drop: %d %s", res.StatusCode, b)
	}
}

type winner struct {
	ClaimID string `json:"claim_id"`
	UserID  string `json:"user_id"`
	Slot    int64  `json:"slot"`
}

func exportWinners(t *testing.T, url, drop string) map[string]winner {
	t.Helper()
	res := admin(t, "GET", url+"/v1/admin/drops/"+drop+"/winners")
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("winners: %s", res.Status)
	}
	out := map[string]winner{}
	dec := json.NewDecoder(res.Body)
	for {
		var w winner
		if err := dec.Decode(&w); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		out[w.ClaimID] = w
	}
}

// TestKill9KeepsAcknowledgedWinners is TESTPLAN B1 on the embedded default:
// a claim spike runs while the node is killed with SIGKILL and restarted
// over the same record, again and again. Every claim acknowledged with 201
// or 200 survives with its user and slot; the drop ends with exactly its
// stock of winners; a winner's retry gets the same claim and a newcomer
// gets 410 sold_out.
func TestKill9KeepsAcknowledgedWinners(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	const stock, users = 1111, 6000
	kills, every := 8, 150*time.Millisecond
	if v := os.Getenv("DIBS_SOAK_KILLS"); v != "" { // make soak: TESTPLAN B1's 300 kills
		fmt.Sscan(v, &kills)
		every = 2 * time.Second
	}
	data := t.TempDir()
	n := startNode(t, data)
	createDrop(t, n.url, fmt.Sprintf(`{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":%d}`, stock))

	secret := []byte(e2eSecret)
	tokens := make([]string, users+1)
	for i := range tokens {
		tok, err := passport.Issue(secret, fmt.Sprintf("u%d", i), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok
	}

	var (
		mu     sync.Mutex
		url    = n.url
		acked  = map[string]winner{} // claim id → what the client was told
		next   atomic.Int64
		failed atomic.Value
	)
	getURL := func() string { mu.Lock(); defer mu.Unlock(); return url }
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Few workers and a pause between claims: the spike lasts long enough
	// for every kill to land in the middle of it.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) % users
				for try := 0; try < 1+i%5/4; try++ { // a fifth of the users press twice
					a, err := claimAt(ctx, client, getURL(), "pepero", tokens[i])
					if err != nil {
						time.Sleep(5 * time.Millisecond) // the node is down; this answer is unknown
						continue
					}
					time.Sleep(time.Millisecond)
					switch a.status {
					case http.StatusCreated, http.StatusOK:
						mu.Lock()
						if prev, seen := acked[a.ClaimID]; seen && prev != (winner{a.ClaimID, a.UserID, a.Slot}) {
							failed.Store(fmt.Errorf("claim %s acknowledged as %+v and as %+v", a.ClaimID, prev, a))
						}
						acked[a.ClaimID] = winner{a.ClaimID, a.UserID, a.Slot}
						mu.Unlock()
					case http.StatusGone, http.StatusServiceUnavailable:
					default:
						failed.Store(fmt.Errorf("claim answered %d %s", a.status, a.Code))
					}
				}
			}
		})
	}

	for k := range kills {
		time.Sleep(every)
		n.kill()
		n = startNode(t, data)
		mu.Lock()
		url = n.url
		t.Logf("kill %d: restarted at %s with %d claims acknowledged so far", k+1, n.url, len(acked))
		mu.Unlock()
	}
	// Let the spike sell the drop out on the last node, then stop it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		res := admin(t, "GET", n.url+"/v1/drops/pepero")
		var v struct{ Remaining int64 }
		json.NewDecoder(res.Body).Decode(&v)
		res.Body.Close()
		if v.Remaining == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drop did not sell out; %d remaining", v.Remaining)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}

	// One more kill after the spike: the record alone must tell the story.
	n.kill()
	n = startNode(t, data)
	got := exportWinners(t, n.url, "pepero")
	if len(got) != stock {
		t.Fatalf("export holds %d winners, want %d", len(got), stock)
	}
	users_, slots := map[string]bool{}, map[int64]bool{}
	for _, w := range got {
		if users_[w.UserID] || slots[w.Slot] || w.Slot < 1 || w.Slot > stock {
			t.Fatalf("winner %+v repeats a user or slot, or is outside 1..%d", w, stock)
		}
		users_[w.UserID], slots[w.Slot] = true, true
	}
	for id, a := range acked {
		if got[id] != a {
			t.Fatalf("acknowledged claim %+v is %+v in the record", a, got[id])
		}
	}
	t.Logf("%d kills; %d claims acknowledged, all in the record of %d winners", kills+1, len(acked), len(got))

	for _, a := range acked {
		i := 0
		fmt.Sscanf(a.UserID, "u%d", &i)
		again, err := claimAt(context.Background(), client, n.url, "pepero", tokens[i])
		if err != nil || again.status != http.StatusOK || again.ClaimID != a.ClaimID || again.Slot != a.Slot {
			t.Fatalf("winner %s retry after restart = %+v %v, want 200 %s", a.UserID, again, err, a.ClaimID)
		}
		break
	}
	late, err := claimAt(context.Background(), client, n.url, "pepero", tokens[users])
	if err != nil || late.status != http.StatusGone || late.Code != "sold_out" {
		t.Fatalf("newcomer after restart = %+v %v, want 410 sold_out", late, err)
	}
}
