// Package redisserver runs private redis-server processes for tests that
// kill, restart, replicate or partition Redis: never the shared server the
// other tests use.
//
// Tests skip when redis-server is not installed, unless CI is set.
package redisserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/testenv"
)

// Server is one redis-server process on a loopback port.
type Server struct {
	Port int
	args []string
	cmd  *exec.Cmd
	log  *os.File
}

// Start runs redis-server on a free port with no persistence, plus args
// (e.g. "--replicaof", "127.0.0.1", "6380"), and stops it when tb ends.
func Start(tb testing.TB, args ...string) *Server {
	tb.Helper()
	bin := redisServer(tb)
	port := FreePort(tb)
	dir := tb.TempDir()
	return startProcess(tb, port, dir, append([]string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no"}, args...))
}

// startProcess runs args (redis-server and its arguments), which make it
// listen on port and log into dir, and stops it when tb ends.
func startProcess(tb testing.TB, port int, dir string, args []string) *Server {
	tb.Helper()
	s := &Server{Port: port, args: args}
	var err error
	if s.log, err = os.Create(dir + "/redis.log"); err != nil {
		tb.Fatal(err)
	}
	s.start(tb)
	tb.Cleanup(func() {
		s.stop()
		s.log.Close()
	})
	return s
}

// redisServer is the path of redis-server, or skips tb (fails it under CI).
func redisServer(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if !testenv.CI() {
			tb.Skip("redis-server is not installed")
		}
		tb.Fatal(err)
	}
	return bin
}

// FreePort returns a loopback TCP port nobody listens on now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) start(tb testing.TB) {
	tb.Helper()
	s.cmd = exec.Command(s.args[0], s.args[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if reply, err := s.Do("PING"); err == nil && reply == "+PONG" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redis-server on port %d does not answer", s.Port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	s.cmd = nil
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Kill sends SIGKILL, as a crash would, and waits for the process to go.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	s.stop()
}

// Restart starts the server again, on the same port, with the same
// arguments: empty, since it persists nothing.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.stop()
	s.start(tb)
}

// Do sends one command (arguments without spaces) and returns the first
// line of the reply, e.g. "+OK" or ":1".
func (s *Server) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// MustDo is Do that fails tb on an error reply.
func (s *Server) MustDo(tb testing.TB, args ...string) string {
	tb.Helper()
	reply, err := s.Do(args...)
	if err != nil || strings.HasPrefix(reply, "-") {
		tb.Fatalf("redis %s on port %d: %q, %v", strings.Join(args, " "), s.Port, reply, err)
	}
	return reply
}

// LogTail is the last n lines the server logged.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.log.Name())
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
