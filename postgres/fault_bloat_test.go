package postgres_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/postgres/pgtest"
)

// tableStats are the claims table's figures from pg_stat_user_tables.
type tableStats struct {
	live, dead, inserts, updates, hot, autovacuums int64
	heap, total                                    int64 // bytes
}

// TestFaultPostgresBloat: hot rows and vacuum on the PostgreSQL record. A long
// event's claims recorded in group commits of 500, as the recorder does,
// each batch then moved on by the outbox pump (outbox cleared, coupon
// code set: the two state changes of a coupon claim). The claims table's
// dead tuples, HOT updates and size, and the latency of recording a
// batch, are measured after a tenth of the claims and at the end. The
// table may not grow faster than its live rows (bytes per claim at most
// 4× what they were at a tenth: autovacuum keeps up), and recording may
// not slow down by more than 3× plus 20 ms (the machine is shared).
//
// 10,000 claims here, 5,000 under -short; DIBS_BLOAT_CLAIMS=1000000 is the
// long event (docs/benchmarks.md has its figures).
func TestFaultPostgresBloat(t *testing.T) {
	t.Parallel()
	claims := 10_000
	if testing.Short() {
		claims = 5_000
	}
	if v := os.Getenv("DIBS_BLOAT_CLAIMS"); v != "" {
		var err error
		if claims, err = strconv.Atoi(v); err != nil || claims < 5000 {
			t.Fatalf("DIBS_BLOAT_CLAIMS=%q: want a number of claims, at least 5000", v)
		}
	}
	const batch = 500
	ctx := context.Background()
	url := pgtest.URL(t)
	schema := pgtest.NewSchema(t, url)
	s := pgtest.MustOpenWith(t, url, postgres.Options{Schema: schema})
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	now := time.Now().UTC()
	d := &dibs.Drop{ID: "long", Title: "a long event", Kind: dibs.KindCoupon, Stock: int64(claims), OpensAt: now}
	d.Normalize(now)
	if err := s.CreateDrop(ctx, d); err != nil {
		t.Fatal(err)
	}

	var took []time.Duration
	var first tableStats
	firstAt := claims / 10 / batch * batch
	pump := post.Pump{Now: now, NewCode: post.NewCode}
	for i := 0; i < claims; i += batch {
		cs := make([]*dibs.Claim, 0, batch)
		for j := i; j < min(i+batch, claims); j++ {
			cs = append(cs, &dibs.Claim{ID: fmt.Sprintf("c%08d", j), DropID: d.ID, UserID: fmt.Sprintf("u%d", j),
				Slot: int64(j + 1), Nth: 1, State: dibs.InitialClaimState(d.Kind), CreatedAt: now, UpdatedAt: now})
		}
		start := time.Now()
		res, err := s.RecordClaims(ctx, cs)
		took = append(took, time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
		for k, e := range res {
			if e != nil {
				t.Fatalf("record %s: %v", cs[k].ID, e)
			}
		}
		if n, err := s.PumpOutbox(ctx, len(cs), pump); err != nil || n != len(cs) {
			t.Fatalf("pump outbox: %d of %d, %v", n, len(cs), err)
		}
		if i+batch == firstAt {
			first = claimStats(t, conn, schema, int64(firstAt))
		}
	}
	last := claimStats(t, conn, schema, int64(claims))

	n := len(took) / 10
	early, late := slices.Clone(took[:n]), slices.Clone(took[len(took)-n:])
	slices.Sort(early)
	slices.Sort(late)
	p := func(d []time.Duration, q int) time.Duration { return d[min(len(d)-1, len(d)*q/100)] }
	perClaim := func(s tableStats) float64 { return float64(s.total) / float64(max(1, s.live)) }
	t.Logf("%d claims, batches of %d, each recorded then pumped (outbox cleared, coupon code set)", claims, batch)
	for _, r := range []struct {
		name string
		s    tableStats
		lat  []time.Duration
	}{{"at a tenth", first, early}, {"at the end", last, late}} {
		t.Logf("%s: %d live, %d dead tuples; %d updates, %d HOT (%.0f%%); heap %.1f MB, with indexes %.1f MB (%.0f bytes a claim); %d autovacuums; a batch recorded in p50 %v, p99 %v",
			r.name, r.s.live, r.s.dead, r.s.updates, r.s.hot, 100*float64(r.s.hot)/float64(max(1, r.s.updates)),
			float64(r.s.heap)/1e6, float64(r.s.total)/1e6, perClaim(r.s), r.s.autovacuums,
			p(r.lat, 50).Round(100*time.Microsecond), p(r.lat, 99).Round(100*time.Microsecond))
	}
	if perClaim(last) > 4*perClaim(first) {
		t.Errorf("the claims table takes %.0f bytes a claim at the end, %.0f at a tenth: it bloats", perClaim(last), perClaim(first))
	}
	if a, b := p(early, 50), p(late, 50); b > 3*a+20*time.Millisecond {
		t.Errorf("recording a batch took %v (p50) at the end, %v at first", b, a)
	}
}

// claimStats reads the claims table's statistics once they count at least
// inserts rows: other backends report theirs within a second or so.
func claimStats(t *testing.T, conn *pgx.Conn, schema string, inserts int64) tableStats {
	t.Helper()
	ctx := context.Background()
	var s tableStats
	for start := time.Now(); ; {
		if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatal(err)
		}
		err := conn.QueryRow(ctx, `SELECT n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, autovacuum_count,
				pg_relation_size(relid), pg_total_relation_size(relid)
			FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'claims'`, schema).
			Scan(&s.live, &s.dead, &s.inserts, &s.updates, &s.hot, &s.autovacuums, &s.heap, &s.total)
		if err != nil {
			t.Fatal(err)
		}
		if s.inserts >= inserts && s.updates >= 2*inserts {
			return s
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the statistics count %d inserts and %d updates after 30 s, want %d and %d", s.inserts, s.updates, inserts, 2*inserts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
