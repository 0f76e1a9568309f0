package postgres_test

// Tests that crash or reconfigure PostgreSQL run their own throwaway
// server (pgtest.NewServer), never the shared test database.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/postgres/pgtest"
	"github.com/dibs-io/dibs/storetest"
)

// B5: PostgreSQL crashes (pg_ctl stop -m immediate) in the middle of a
// spike of group commits and comes back. Every claim whose batch was
// acknowledged is in the record, the record never holds more than the
// stock, failures read as EUNAVAILABLE, and the store takes writes again
// by itself once the server is back.
func TestCrashKeepsAcknowledgedClaims(t *testing.T) {
	t.Parallel()
	const (
		stock   = 3000
		writers = 8
		batch   = 32
		crashes = 2
	)
	srv := pgtest.NewServer(t)
	s := pgtest.MustOpenWith(t, srv.URL(), postgres.Options{RecordConns: 4})
	d := storetest.MustCreateDrop(t, s, stock, 1)

	var (
		mu      sync.Mutex
		acked   []*dibs.Claim
		failed  = map[string]int{} // dibs code of each failed batch
		unknown int                // batches whose outcome could not be told
		oks     atomic.Int64       // acknowledged batches, for progress
		users   atomic.Int64
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for ctx.Err() == nil {
				// Slots collide across writers and some lie beyond the
				// stock: the record must refuse those, crash or not.
				claims := make([]*dibs.Claim, batch)
				for i := range claims {
					claims[i] = storetest.NewClaim(d, fmt.Sprintf("u%d", users.Add(1)), rand.Int64N(stock+stock/10)+1, 1)
				}
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := s.RecordClaims(cctx, claims)
				cancel()
				mu.Lock()
				if err != nil {
					failed[dibs.ErrorCode(err)]++
					if errors.Is(err, dibs.ErrOutcomeUnknown) {
						unknown++
					}
				} else {
					for i, r := range res {
						if r == nil {
							acked = append(acked, claims[i])
						}
					}
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				} else {
					oks.Add(1)
				}
			}
		})
	}
	// waitForCommits waits until n more batches are acknowledged.
	waitForCommits := func(n int64, what string) {
		t.Helper()
		want := oks.Load() + n
		deadline := time.Now().Add(30 * time.Second)
		for oks.Load() < want {
			if time.Now().After(deadline) {
				stop()
				wg.Wait()
				t.Fatalf("%s: no commits for 30 s (failures %v)", what, failed)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	waitForCommits(20, "before the first crash")
	for i := range crashes {
		srv.Crash()
		time.Sleep(100 * time.Millisecond)
		srv.Start()
		waitForCommits(20, fmt.Sprintf("after crash %d", i+1))
	}
	stop()
	wg.Wait()

	active := map[string]int64{}
	err := s.ScanActiveClaims(context.Background(), d.ID, func(c *dibs.Claim) error {
		active[c.ID] = c.Slot
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range acked {
		if active[c.ID] != c.Slot {
			t.Errorf("acknowledged claim %s (slot %d) is not in the record", c.ID, c.Slot)
		}
	}
	if len(active) > stock {
		t.Errorf("record holds %d active claims, stock %d", len(active), stock)
	}
	for code, n := range failed {
		if code != dibs.EUNAVAILABLE {
			t.Errorf("%d batches failed with %q, want only %q", n, code, dibs.EUNAVAILABLE)
		}
	}
	t.Logf("%d crashes: %d claims acknowledged, %d active of %d; failed batches %v (%d of unknown outcome)",
		crashes, len(acked), len(active), stock, failed, unknown)
}

// A primary that turns read-only under the store's feet (a failover
// demoted it; here default_transaction_read_only is switched on for every
// session by a reload) makes the store answer EUNAVAILABLE, never
// EINTERNAL; once the server takes writes again, the store does too,
// without a restart.
func TestServerTurnedReadOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pgtest.NewServer(t)
	s := pgtest.MustOpenWith(t, srv.URL(), postgres.Options{})
	d := storetest.MustCreateDrop(t, s, 100, 1)
	var slot int64
	next := func() []*dibs.Claim {
		slot++
		return []*dibs.Claim{storetest.NewClaim(d, fmt.Sprint("u", slot), slot, 1)}
	}
	storetest.MustRecord(t, s, next()...)

	pgtest.Exec(t, srv.URL(), `ALTER SYSTEM SET default_transaction_read_only = on`)
	pgtest.Exec(t, srv.URL(), `SELECT pg_reload_conf()`)
	// The reload reaches sessions a moment later; then every write fails.
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err = s.RecordClaims(ctx, next()); err != nil {
			break
		}
	}
	if dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("record on a server turned read-only = %v, want unavailable", err)
	}
	t.Logf("turned read-only: %v", err)
	for i := range 3 {
		_, err := s.RecordClaims(ctx, next())
		if dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
			t.Fatalf("record while read-only = %v, want unavailable", err)
		}
		if i == 0 {
			t.Logf("still read-only: %v", err)
		}
		if err := s.Ping(ctx); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
			t.Fatalf("ping while read-only = %v, want unavailable", err)
		}
	}

	pgtest.Exec(t, srv.URL(), `ALTER SYSTEM RESET default_transaction_read_only`)
	pgtest.Exec(t, srv.URL(), `SELECT pg_reload_conf()`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := s.RecordClaims(ctx, next())
		if err == nil {
			break
		}
		if dibs.ErrorCode(err) != dibs.EUNAVAILABLE || time.Now().After(deadline) {
			t.Fatalf("record after the server takes writes again = %v", err)
		}
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping after the server takes writes again: %v", err)
	}
}
