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
	"syscall"
	"testing"
	"time"
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
