package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/postgres/pgtest"
	"github.com/dibs-io/dibs/storetest"
)

func TestStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) dibs.Store { return pgtest.MustOpen(t) })
	storetest.RunAdmin(t, func(t *testing.T) dibs.AdminStore { return pgtest.MustOpen(t) })
}

// The store as background work sees it is a store like any other.
func TestBackgroundReadsConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) dibs.Store { return pgtest.MustOpen(t).BackgroundReads() })
}

func TestPostConformance(t *testing.T) {
	t.Parallel()
	storetest.RunPost(t, func(t *testing.T) storetest.PostStore { return pgtest.MustOpen(t) },
		func(s storetest.PostStore) post.JobClientFunc {
			return func(cfg *river.Config) (post.JobClient, error) {
				return postgres.NewJobClient(s.(*postgres.Store), cfg)
			}
		})
}

// River names its schema unquoted: a name PostgreSQL would fold or refuse
// is refused before anything is created.
func TestOpenRefusesSchemaRiverCannotName(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	for _, schema := range []string{"Dibs", "dibs-test", "1dibs", `dibs"x`} {
		s, err := postgres.Open(context.Background(), dbURL, postgres.Options{Schema: schema})
		if err == nil {
			s.Close()
			t.Errorf("Open with schema %q succeeded", schema)
		}
	}
}

// mustConnect opens a connection of the test's own whose search_path is
// schema, closed when t ends.
func mustConnect(t *testing.T, rawURL, schema string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if schema != "" {
		cfg.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// withParam returns rawURL with one more query parameter.
func withParam(t *testing.T, rawURL, key, value string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func randomName(prefix string) string { return prefix + strings.ToLower(rand.Text()[:12]) }

// Nodes that start at once share one schema: every Open succeeds and the
// migrations run once.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	schema := pgtest.NewSchema(t, dbURL)
	const nodes = 8
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			s, err := postgres.Open(context.Background(), dbURL, postgres.Options{Schema: schema, RecordConns: 1, BackgroundConns: 1, ReadConns: 1})
			if err != nil {
				errs[i] = err
				return
			}
			t.Cleanup(func() { s.Close() })
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var runs int
	err := mustConnect(t, dbURL, schema).QueryRow(context.Background(),
		`SELECT count(*) FROM dibs_migrations WHERE version_id = 1`).Scan(&runs)
	if err != nil {
		t.Fatal(err)
	}
	if runs != 1 {
		t.Fatalf("migration 1 recorded %d times, want 1", runs)
	}
}

// However many callers there are, a node holds at most the sum of its
// pools' sizes on the server, and one more for the job client's LISTEN
// (River takes that session out of the background pool for as long as it
// runs, so the pool may open another).
func TestConnectionsStayWithinPools(t *testing.T) {
	t.Parallel()
	app := randomName("dibs-budget-")
	dbURL := withParam(t, pgtest.URL(t), "application_name", app)
	opts := postgres.Options{Schema: pgtest.NewSchema(t, pgtest.URL(t)), RecordConns: 2, BackgroundConns: 1, ReadConns: 2}
	s := pgtest.MustOpenWith(t, dbURL, opts)
	d := storetest.MustCreateDrop(t, s, 100_000, 1)

	watch := mustConnect(t, pgtest.URL(t), "")
	startJobClient(t, s)
	for deadline := time.Now().Add(10 * time.Second); ; {
		var listening int
		err := watch.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app).Scan(&listening)
		if err != nil {
			t.Fatal(err)
		}
		if listening > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job client never listened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var most atomic.Int64
	done := make(chan struct{})
	watched := make(chan error, 1)
	go func() {
		for {
			var n int64
			err := watch.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
			if err != nil {
				watched <- err
				return
			}
			if n > most.Load() {
				most.Store(n)
			}
			select {
			case <-done:
				watched <- nil
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	bg := s.BackgroundReads()
	var slot atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for w := range 64 {
		wg.Go(func() {
			for range 10 {
				c := storetest.NewClaim(d, fmt.Sprintf("u%d-%d", w, slot.Load()), slot.Add(1), 1)
				if _, err := s.RecordClaims(context.Background(), []*dibs.Claim{c}); err != nil {
					failed.Store(&err)
				}
				if _, err := s.FindClaim(context.Background(), c.ID); err != nil {
					failed.Store(&err)
				}
				// Background work at the same time, on its own pool.
				if _, err := bg.FindClaim(context.Background(), c.ID); err != nil {
					failed.Store(&err)
				}
				if _, err := bg.CountClaims(context.Background(), d.ID); err != nil {
					failed.Store(&err)
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if err := <-watched; err != nil {
		t.Fatal(err)
	}
	if err := failed.Load(); err != nil {
		t.Fatal(*err)
	}
	budget := int64(opts.RecordConns + opts.BackgroundConns + opts.ReadConns + 1)
	if most.Load() > budget {
		t.Fatalf("%d connections on the server, budget %d", most.Load(), budget)
	}
	t.Logf("at most %d connections for 64 callers and a job client (budget %d)", most.Load(), budget)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())
	want := `
# HELP dibs_postgres_pool_max_connections The bound of a pool.
# TYPE dibs_postgres_pool_max_connections gauge
dibs_postgres_pool_max_connections{pool="background"} 1
dibs_postgres_pool_max_connections{pool="read"} 2
dibs_postgres_pool_max_connections{pool="record"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dibs_postgres_pool_max_connections"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Fatalf("gathered %d metrics: %v", n, err)
	}
}

// startJobClient starts a job client on s, as a node does, and stops it
// when t ends, before the store closes.
func startJobClient(t *testing.T, s *postgres.Store) {
	t.Helper()
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(context.Context, *river.Job[post.NotifyWinnerArgs]) error { return nil }))
	client, err := postgres.NewJobClient(s, &river.Config{
		Logger:  slog.New(slog.DiscardHandler),
		Queues:  map[string]river.QueueConfig{post.QueueWebhook: {MaxWorkers: 1}},
		Workers: workers,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.Stop(ctx); err != nil {
			t.Errorf("stop job client: %v", err)
		}
	})
}

// queryLog is a pgx tracer that keeps every statement the store sends.
type queryLog struct {
	mu      sync.Mutex
	queries []pgx.TraceQueryStartData
}

func (l *queryLog) add(sql string, args []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queries = append(l.queries, pgx.TraceQueryStartData{SQL: sql, Args: args})
}

func (l *queryLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.add(d.SQL, d.Args)
	return ctx
}
func (l *queryLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (l *queryLog) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (l *queryLog) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	l.add(d.SQL, d.Args)
}
func (l *queryLog) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// Every query the store sends to its tables is planned on an index: with
// sequential scans priced out, no plan falls back to one.
func TestQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	schema := pgtest.NewSchema(t, dbURL)
	log := &queryLog{}
	s := pgtest.MustOpenWith(t, dbURL, postgres.Options{Schema: schema, Tracer: log})

	d := storetest.MustCreateDrop(t, s, 10, 1)
	c := storetest.NewClaim(d, "a", 1, 1)
	storetest.MustRecord(t, s, c)
	storetest.MustRecord(t, s, c) // a retry: the look-up of skipped claims
	steps := []error{
		s.SetDropStatus(ctx, d.ID, dibs.StatusPaused, time.Now()),
		s.ScanActiveClaims(ctx, d.ID, func(*dibs.Claim) error { return nil }),
	}
	_, err := s.FindDrop(ctx, d.ID)
	steps = append(steps, err)
	_, err = s.ListDrops(ctx)
	steps = append(steps, err)
	_, err = s.FindClaim(ctx, c.ID)
	steps = append(steps, err)
	_, err = s.CountClaims(ctx, d.ID)
	steps = append(steps, err)
	// Post-processing: the pump, each transition, the job counts.
	p := storetest.MustCreatePurchaseDrop(t, s, 10, 1)
	paid, expired := storetest.NewHold(p, "a", 1, 1), storetest.NewHold(p, "b", 2, 1)
	storetest.MustRecordAll(t, s, paid, expired)
	_, err = s.PumpOutbox(ctx, 10, post.Pump{Now: time.Now(), NewCode: post.NewCode, Notify: true}) // c gets its coupon
	steps = append(steps, err)
	_, _, err = s.RequestPayment(ctx, paid.ID, paid.CreatedAt)
	steps = append(steps, err)
	_, _, err = s.SettlePayment(ctx, paid.ID, true, time.Now())
	steps = append(steps, err)
	_, _, err = s.ExpireHold(ctx, expired.ID, time.Now())
	steps = append(steps, err)
	_, err = s.JobCounts(ctx, d.ID)
	steps = append(steps, err)
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}

	conn := mustConnect(t, dbURL, schema)
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	// The trigger claims_within_drop runs this look-up for every row.
	log.add(`SELECT 1 FROM drops WHERE id = $1 AND $2 <= stock AND $3 <= per_user_limit`, []any{d.ID, int64(1), int32(1)})
	seen := map[string]bool{}
	for _, q := range log.queries {
		sql := strings.Join(strings.Fields(q.SQL), " ")
		if seen[sql] || !(strings.HasPrefix(sql, "SELECT") || strings.HasPrefix(sql, "UPDATE")) ||
			!(strings.Contains(sql, " claims") || strings.Contains(sql, " drops") || strings.Contains(sql, "river_job WHERE args @>")) {
			continue
		}
		seen[sql] = true
		var plan []struct{ Plan planNode }
		if err := conn.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+q.SQL, q.Args...).Scan(&plan); err != nil {
			t.Fatalf("explain %s: %v", sql, err)
		}
		var indexes, seqScans []string
		plan[0].Plan.walk(func(n planNode) {
			if n.IndexName != "" {
				indexes = append(indexes, n.IndexName)
			}
			if n.NodeType == "Seq Scan" {
				seqScans = append(seqScans, n.RelationName)
			}
		})
		if len(seqScans) > 0 || len(indexes) == 0 {
			t.Errorf("%s\n  scans %v sequentially, uses indexes %v", sql, seqScans, indexes)
			continue
		}
		t.Logf("%s\n  uses %v", sql, indexes)
	}
	if len(seen) < 14 {
		t.Fatalf("checked %d queries, want every kind the store sends (14)", len(seen))
	}
}

type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	IndexName    string     `json:"Index Name"`
	Plans        []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, p := range n.Plans {
		p.walk(fn)
	}
}

// slowCommit makes every COMMIT that inserted claims in schema wait in a
// deferred trigger, so that a test can act while the commit is under way.
func slowCommit(t *testing.T, dbURL, schema string) {
	t.Helper()
	q := pgx.Identifier{schema}.Sanitize()
	pgtest.Exec(t, dbURL, `CREATE FUNCTION `+q+`.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(20); RETURN NULL; END $$`)
	pgtest.Exec(t, dbURL, `CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON `+q+`.claims
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION `+q+`.slow_commit()`)
}

// cutOff terminates, from a connection of its own, the first session of
// application app seen running a statement LIKE pattern, and reports on
// the channel whether it did within five seconds.
func cutOff(t *testing.T, dbURL, app, pattern string) <-chan error {
	t.Helper()
	watch := mustConnect(t, dbURL, "")
	killed := make(chan error, 1)
	go func() {
		for range 500 {
			var n int
			// Only a backend inside pg_sleep: cut earlier, the statement would
			// not yet have done what the test waits for (taken the sequence's
			// first value), and the retry would sleep instead.
			err := watch.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE application_name = $1 AND query LIKE $2 AND state = 'active' AND wait_event = 'PgSleep'`, app, pattern).Scan(&n)
			if err != nil || n > 0 {
				killed <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		killed <- fmt.Errorf("no %q to cut off", pattern)
	}()
	return killed
}

// A connection cut while COMMIT runs leaves the outcome unknown: the error
// wraps dibs.ErrOutcomeUnknown, so the engine keeps the slot held.
func TestCommitCutOffIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := randomName("dibs-cut-")
	dbURL := pgtest.URL(t)
	schema := pgtest.NewSchema(t, dbURL)
	s := pgtest.MustOpenWith(t, withParam(t, dbURL, "application_name", app), postgres.Options{Schema: schema})
	d := storetest.MustCreateDrop(t, s, 10, 1)
	slowCommit(t, dbURL, schema)

	killed := cutOff(t, dbURL, app, "COMMIT")
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c := storetest.NewClaim(d, "a", 1, 1)
	_, err := s.RecordClaims(cctx, []*dibs.Claim{c})
	if kerr := <-killed; kerr != nil {
		t.Fatal(kerr)
	}
	if !errors.Is(err, dibs.ErrOutcomeUnknown) || dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("record with COMMIT cut off = %v, want unavailable wrapping ErrOutcomeUnknown", err)
	}

	// The store goes on, and a retry settles the outcome.
	pgtest.Exec(t, dbURL, `DROP TRIGGER slow_commit ON `+pgx.Identifier{schema}.Sanitize()+`.claims`)
	storetest.MustRecord(t, s, c)
	if _, err := s.FindClaim(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
}

// A connection cut before COMMIT leaves nothing committed: the batch is
// tried again on a fresh connection and succeeds, once.
func TestConnectionCutBeforeCommitIsRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := randomName("dibs-precut-")
	dbURL := pgtest.URL(t)
	schema := pgtest.NewSchema(t, dbURL)
	s := pgtest.MustOpenWith(t, withParam(t, dbURL, "application_name", app), postgres.Options{Schema: schema})
	d := storetest.MustCreateDrop(t, s, 10, 1)
	// The first insert waits, long enough to be cut off; the next ones go.
	q := pgx.Identifier{schema}.Sanitize()
	pgtest.Exec(t, dbURL, `CREATE SEQUENCE `+q+`.inserts`)
	pgtest.Exec(t, dbURL, `CREATE FUNCTION `+q+`.slow_first() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF nextval('`+schema+`.inserts') = 1 THEN PERFORM pg_sleep(20); END IF; RETURN NEW; END $$`)
	pgtest.Exec(t, dbURL, `CREATE TRIGGER slow_first BEFORE INSERT ON `+q+`.claims FOR EACH ROW EXECUTE FUNCTION `+q+`.slow_first()`)

	killed := cutOff(t, dbURL, app, "INSERT INTO claims%")
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c := storetest.NewClaim(d, "a", 1, 1)
	res, err := s.RecordClaims(cctx, []*dibs.Claim{c})
	if kerr := <-killed; kerr != nil {
		t.Fatal(kerr)
	}
	if err != nil || res[0] != nil {
		t.Fatalf("record with its first connection cut = %v, %v; want it recorded on another", res, err)
	}
	if n, err := s.CountClaims(ctx, d.ID); err != nil || n.Active() != 1 {
		t.Fatalf("active claims = %d (%v), want 1", n.Active(), err)
	}
}

// A deadline that passes during COMMIT cancels it on the server, which
// answers: a definite failure, nothing recorded, and the connection lives.
func TestCommitCanceledIsDefinite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	schema := pgtest.NewSchema(t, dbURL)
	s := pgtest.MustOpenWith(t, dbURL, postgres.Options{Schema: schema})
	d := storetest.MustCreateDrop(t, s, 10, 1)
	slowCommit(t, dbURL, schema)

	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	c := storetest.NewClaim(d, "a", 1, 1)
	_, err := s.RecordClaims(cctx, []*dibs.Claim{c})
	if err == nil || errors.Is(err, dibs.ErrOutcomeUnknown) || dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("record with COMMIT canceled = %v, want a definite unavailable", err)
	}
	if _, err := s.FindClaim(ctx, c.ID); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Fatalf("find canceled claim = %v, want not_found", err)
	}
}

// A role whose sessions turn read-only stands for a primary demoted by a
// failover: the store answers EUNAVAILABLE, never EINTERNAL, while new
// connections find a read-only server, and works again once the server
// takes writes, without a restart.
func TestReadOnlySessionsAreUnavailableUntilCleared(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	role := randomName("dibs_test_ro_")
	pgtest.Exec(t, dbURL, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() { pgtest.Exec(t, dbURL, `DROP ROLE `+role) })
	schema := pgtest.NewSchema(t, dbURL)
	pgtest.Exec(t, dbURL, `GRANT ALL ON SCHEMA `+pgx.Identifier{schema}.Sanitize()+` TO `+role)
	u, _ := url.Parse(dbURL)
	u.User = url.User(role)
	s := pgtest.MustOpenWith(t, u.String(), postgres.Options{Schema: schema})
	d := storetest.MustCreateDrop(t, s, 10, 1)
	storetest.MustRecord(t, s, storetest.NewClaim(d, "a", 1, 1))

	pgtest.Exec(t, dbURL, `ALTER ROLE `+role+` SET default_transaction_read_only = on`)
	pgtest.Exec(t, dbURL, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
	for i := range 3 {
		_, err := s.RecordClaims(ctx, []*dibs.Claim{storetest.NewClaim(d, "b", 2, 1)})
		if dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
			t.Fatalf("record on a read-only server = %v, want unavailable", err)
		}
		if i == 0 {
			t.Logf("read-only: %v", err)
		}
		if err := s.Ping(ctx); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
			t.Fatalf("ping on a read-only server = %v, want unavailable", err)
		}
	}

	pgtest.Exec(t, dbURL, `ALTER ROLE `+role+` RESET default_transaction_read_only`)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping after the server takes writes again: %v", err)
	}
	storetest.MustRecord(t, s, storetest.NewClaim(d, "b", 2, 1))
}

// The record is the final arbiter whoever writes to it: a writer that goes
// around the store, from a session with another search_path, cannot add a
// claim beyond the stock, beyond the per-user limit, or of a drop that
// does not exist.
func TestTriggerGuardsEveryWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	schema := pgtest.NewSchema(t, dbURL)
	s := pgtest.MustOpenWith(t, dbURL, postgres.Options{Schema: schema})
	d := storetest.MustCreateDrop(t, s, 2, 1)
	conn := mustConnect(t, dbURL, "") // search_path: public
	insert := `INSERT INTO ` + pgx.Identifier{schema, "claims"}.Sanitize() + ` (id, drop_id, user_id, slot, nth, state, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, 'confirmed', now(), now())`
	for _, tt := range []struct {
		drop      string
		slot, nth int
		rows      int64
	}{
		{d.ID, 3, 1, 0},   // beyond the stock
		{d.ID, 0, 1, 0},   // before the first slot
		{d.ID, 1, 2, 0},   // beyond the per-user limit
		{"nope", 1, 1, 0}, // no such drop
		{d.ID, 2, 1, 1},   // fine
	} {
		tag, err := conn.Exec(ctx, insert, randomName("c"), tt.drop, randomName("u"), tt.slot, tt.nth)
		if err != nil {
			t.Fatal(err)
		}
		if tag.RowsAffected() != tt.rows {
			t.Errorf("drop %s slot %d nth %d: inserted %d rows, want %d", tt.drop, tt.slot, tt.nth, tag.RowsAffected(), tt.rows)
		}
	}
	res := storetest.MustRecord(t, s, storetest.NewClaim(&dibs.Drop{ID: "nope"}, "a", 1, 1))
	if dibs.ErrorCode(res[0]) != dibs.ECONFLICT {
		t.Errorf("claim of an unknown drop = %v, want conflict", res[0])
	}
}
