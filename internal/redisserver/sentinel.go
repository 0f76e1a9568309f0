package redisserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Sentinels are redis-server --sentinel processes watching one primary
// under one master name, on loopback ports.
type Sentinels struct {
	Master  string
	Servers []*Server
	dirs    []string
}

// Failover timing of the sentinels: a primary silent for DownAfter is
// subjectively down; once a quorum agrees, one sentinel promotes a replica,
// usually within a second or two more.
const (
	DownAfter       = 1500 * time.Millisecond
	failoverTimeout = 10 * time.Second
)

// NewSentinels prepares n sentinels (quorum n/2+1) monitoring primary as
// master, each with a loopback port and a config file of its own in a
// temporary directory (sentinels rewrite it); Start runs them. Their URL is
// known before they run, so a client can be made while they are down.
func NewSentinels(tb testing.TB, master string, primary *Server, n int) *Sentinels {
	tb.Helper()
	bin := redisServer(tb)
	s := &Sentinels{Master: master}
	for range n {
		port, dir := FreePort(tb), tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
sentinel monitor %s 127.0.0.1 %d %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`, port, dir, master, primary.Port, n/2+1, master, DownAfter.Milliseconds(), master, failoverTimeout.Milliseconds(), master)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			tb.Fatal(err)
		}
		s.Servers = append(s.Servers, &Server{Port: port, args: []string{bin, conf, "--sentinel"}})
		s.dirs = append(s.dirs, dir)
	}
	return s
}

// Start runs the sentinels and stops them when tb ends. Start the
// replicas first and wait for their link, then call WaitReady.
func (s *Sentinels) Start(tb testing.TB) {
	tb.Helper()
	for i, sn := range s.Servers {
		s.Servers[i] = startProcess(tb, sn.Port, s.dirs[i], sn.args)
	}
}

// URL is the Sentinel URL dibs takes in --redis: every sentinel and the
// master name.
func (s *Sentinels) URL() string {
	var b strings.Builder
	b.WriteString("redis://" + s.Servers[0].Addr() + "?")
	for _, o := range s.Servers[1:] {
		b.WriteString("addr=" + o.Addr() + "&")
	}
	b.WriteString("master_set=" + s.Master)
	return b.String()
}

// WaitReady waits until every sentinel knows the given number of replicas
// and every other sentinel: only then can they agree on a failover. They
// find each other through hello messages every 2 s.
func (s *Sentinels) WaitReady(tb testing.TB, replicas int) {
	tb.Helper()
	for _, sn := range s.Servers {
		WaitFor(tb, 30*time.Second, "sentinel on port "+strconv.Itoa(sn.Port)+" ready", func() bool {
			m, err := sn.Query("SENTINEL", "MASTER", s.Master)
			if err != nil {
				return false
			}
			f, err := m.AsStrMap()
			return err == nil && f["num-slaves"] == strconv.Itoa(replicas) && f["num-other-sentinels"] == strconv.Itoa(len(s.Servers)-1)
		})
	}
}

// MasterAddr is the primary's host:port as the first sentinel that answers
// names it.
func (s *Sentinels) MasterAddr(tb testing.TB) string {
	tb.Helper()
	var last error
	for _, sn := range s.Servers {
		m, err := sn.Query("SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.Master)
		if err != nil {
			last = err
			continue
		}
		hp, err := m.AsStrSlice()
		if err != nil || len(hp) != 2 {
			last = fmt.Errorf("get-master-addr-by-name: %v %v", hp, err)
			continue
		}
		return hp[0] + ":" + hp[1]
	}
	tb.Fatalf("no sentinel names the master: %v", last)
	return ""
}
