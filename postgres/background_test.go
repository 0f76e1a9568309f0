package postgres_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/postgres/pgtest"
	"github.com/dibs-io/dibs/storetest"
)

// poolLog is a pgx tracer that keeps, for every statement, the pool whose
// connection sent it (its application_name, dibs-<pool>).
type poolLog struct {
	mu  sync.Mutex
	ran []poolQuery
}

type poolQuery struct{ pool, sql string }

func (l *poolLog) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ran = append(l.ran, poolQuery{c.Config().RuntimeParams["application_name"], strings.Join(strings.Fields(d.SQL), " ")})
	return ctx
}

func (l *poolLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// take returns the statements sent since the last take.
func (l *poolLog) take() []poolQuery {
	l.mu.Lock()
	defer l.mu.Unlock()
	ran := l.ran
	l.ran = nil
	return ran
}

// TestBackgroundWorkReadsOnBackgroundPool: an engine whose background
// store is BackgroundReads loads its drops, rebuilds its gate, refreshes
// and reconciles with reads on the background pool alone; the read pool,
// which claims and /readyz need, sees none of them. And those reads are
// planned for their arguments there as on the read pool: no statement of
// theirs is kept prepared on a background connection.
func TestBackgroundWorkReadsOnBackgroundPool(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := &poolLog{}
	s := pgtest.MustOpenWith(t, pgtest.URL(t), postgres.Options{Tracer: log, BackgroundConns: 1})
	d := storetest.MustCreateDrop(t, s, 10, 1)
	storetest.MustRecord(t, s, storetest.NewClaim(d, "a", 1, 1))

	log.take()
	e := engine.New(engine.Config{Store: s, Background: s.BackgroundReads(), Gate: memory.NewGate()})
	t.Cleanup(func() { e.Close() })
	if err := e.Open(ctx); err != nil { // lists drops, rebuilds the gate from the record
		t.Fatal(err)
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	ran := log.take()
	// A claim the gate lacks: the reconciler finds the drop, scans its
	// claims, looks this one up and restores it.
	storetest.MustRecord(t, s, storetest.NewClaim(d, "b", 2, 1))
	log.take() // the write is not background work
	r := engine.NewReconciler(e, engine.ReconcilerConfig{Interval: 10 * time.Millisecond})
	res, err := r.Reconcile(ctx, d.ID)
	if err != nil || res.Restored != 1 {
		t.Fatalf("reconcile = %+v, %v; want one claim restored", res, err)
	}
	// The periodic pass counts the drop's claims first.
	r.Start(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(ran, func(q poolQuery) bool { return strings.Contains(q.sql, "count(*) FROM claims") }) {
		if time.Now().After(deadline) {
			t.Fatal("the reconciler never counted the drop's claims")
		}
		time.Sleep(10 * time.Millisecond)
		ran = append(ran, log.take()...)
	}
	r.Stop()
	e.Close()
	ran = append(ran, log.take()...)

	want := map[string]bool{"FROM drops ORDER BY": false, "FROM drops WHERE id": false,
		"FROM claims WHERE id": false, "FROM claims WHERE drop_id = $1 AND state IN": false, "count(*) FROM claims": false}
	for _, q := range ran {
		if q.pool != "dibs-background" {
			t.Errorf("background work sent on %s: %s", q.pool, q.sql)
		}
		for k := range want {
			if strings.Contains(q.sql, k) {
				want[k] = true
			}
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no background read %q seen", k)
		}
	}

	for range 10 { // past the five runs after which a cached plan may go generic
		if _, err := s.BackgroundReads().FindClaim(ctx, "nobody"); err == nil {
			t.Fatal("found a claim that does not exist")
		}
	}
	conn, err := s.Background().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var kept int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements
		WHERE statement LIKE '%FROM claims%' OR statement LIKE '%FROM drops%'`, pgx.QueryExecModeSimpleProtocol).Scan(&kept)
	if err != nil || kept != 0 {
		t.Fatalf("%d statements of the store kept prepared on a background connection (%v), want none", kept, err)
	}
}
