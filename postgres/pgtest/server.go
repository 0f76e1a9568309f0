package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/dibs-io/dibs/internal/testenv"
)

// Server is a PostgreSQL server of a test's own, in a temporary directory:
// for tests that crash, restart or reconfigure the server, which they must
// never do to the shared test database.
type Server struct {
	tb   testing.TB
	bin  string   // directory of initdb and pg_ctl
	dir  string   // holds data/, the log and the socket
	as   []string // command prefix that runs as the postgres user, when root
	port int
}

// NewServer initialises a fresh server and starts it; when tb ends it is
// stopped and its files removed. tb is skipped when the PostgreSQL server
// binaries (initdb, pg_ctl) are not installed, unless CI is set: then it
// fails. As root, the server runs as the postgres user (PostgreSQL refuses
// to run as root).
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	bin := serverBinaries()
	if bin == "" {
		if testenv.CI() {
			tb.Fatal("PostgreSQL server binaries (initdb, pg_ctl) not found")
		}
		tb.Skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
	}
	dir, err := os.MkdirTemp("", "dibs-pgtest-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{tb: tb, bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root needs a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
		s.as = []string{"runuser", "-u", "postgres", "--"}
	}
	s.port = freePort(tb)
	s.run("initdb", "-D", s.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	conf := fmt.Sprintf("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"+
		"max_connections = 40\nshared_buffers = 16MB\nfsync = on\nsynchronous_commit = on\n", s.port, dir)
	f, err := os.OpenFile(filepath.Join(s.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	s.Start()
	tb.Cleanup(func() { s.pgctl("-m", "immediate", "stop") })
	return s
}

// URL is the server's postgres database, as the superuser postgres.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Start starts the server and waits until it takes connections, after
// crash recovery if it was stopped with Crash.
func (s *Server) Start() {
	s.tb.Helper()
	if out, err := s.pgctl("-l", filepath.Join(s.dir, "log"), "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		s.tb.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Crash stops the server the way a crash does (pg_ctl stop -m immediate):
// no checkpoint, connections cut, the next start replays the WAL.
func (s *Server) Crash() {
	s.tb.Helper()
	if out, err := s.pgctl("-m", "immediate", "stop"); err != nil {
		s.tb.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) pgctl(args ...string) ([]byte, error) {
	return s.command("pg_ctl", append([]string{"-D", s.data(), "-w"}, args...)...).CombinedOutput()
}

func (s *Server) run(name string, args ...string) {
	s.tb.Helper()
	if out, err := s.command(name, args...).CombinedOutput(); err != nil {
		s.tb.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	argv := append(slices.Clone(s.as), append([]string{filepath.Join(s.bin, name)}, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.dir
	cmd.Stdin = bytes.NewReader(nil)
	return cmd
}

// serverBinaries is the directory that holds initdb and pg_ctl: on the
// PATH, or where Debian and Ubuntu install them; "" if none.
func serverBinaries() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if dir := filepath.Dir(p); fileExists(filepath.Join(dir, "pg_ctl")) {
			return dir
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, dir := range dirs {
		if fileExists(filepath.Join(dir, "initdb")) && fileExists(filepath.Join(dir, "pg_ctl")) {
			return dir
		}
	}
	return ""
}

func versionOf(bindir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return v
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
