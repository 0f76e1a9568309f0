package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
)

// A strategy writes one group-commit batch of new claims as a whole
// transaction on conn: BEGIN, the insert returning the ids written, COMMIT.
type strategy struct {
	name  string
	write func(ctx context.Context, conn *pgx.Conn, claims []*dibs.Claim) error
}

var strategies = []strategy{
	{"unnest", writeUnnest},
	{"values", writeValues},
	{"copy", writeCopy},
}

// BenchmarkInsertStrategies compares ways to write a group-commit batch:
// insertClaims (one array per column through unnest: the store's), a
// multi-row VALUES list (one statement text per batch size), and COPY into
// a temporary table followed by INSERT ... SELECT. Each iteration writes
// one batch with each strategy in turn (who goes first rotates), each on a
// schema of its own, so that a machine whose load drifts weighs on all
// three alike; the metrics
// are claims per second of each and their ratios to unnest's.
// docs/benchmarks.md has the results.
//
//	go test -run '^$' -bench InsertStrategies -benchtime 100x -count 3 ./postgres/
func BenchmarkInsertStrategies(b *testing.B) {
	url := testenv.DatabaseURL(b)
	for _, size := range []int{1, 8, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			conns := make([]*pgx.Conn, len(strategies))
			drops := make([]*dibs.Drop, len(strategies))
			for i := range strategies {
				conns[i], drops[i] = benchSchema(b, url)
			}
			spent := make([]time.Duration, len(strategies))
			var slot int64
			for round := 0; b.Loop(); round++ {
				for k := range strategies {
					i := (round + k) % len(strategies) // who goes first rotates
					st := strategies[i]
					claims := make([]*dibs.Claim, size)
					for j := range claims {
						slot++
						claims[j] = &dibs.Claim{
							ID: fmt.Sprintf("c%d", slot), DropID: drops[i].ID, UserID: fmt.Sprintf("u%d", slot), Slot: slot, Nth: 1,
							State: dibs.ClaimConfirmed, CreatedAt: drops[i].CreatedAt, UpdatedAt: drops[i].CreatedAt,
						}
					}
					start := time.Now()
					if err := st.write(ctx, conns[i], claims); err != nil {
						b.Fatalf("%s: %v", st.name, err)
					}
					spent[i] += time.Since(start)
				}
			}
			for i, st := range strategies {
				b.ReportMetric(float64(b.N*size)/spent[i].Seconds(), st.name+"-claims/s")
				if i > 0 {
					b.ReportMetric(spent[0].Seconds()/spent[i].Seconds(), st.name+"/unnest")
				}
			}
		})
	}
}

// benchSchema migrates a new schema with one big drop and returns a
// connection whose search_path is that schema.
func benchSchema(b *testing.B, url string) (*pgx.Conn, *dibs.Drop) {
	b.Helper()
	ctx := context.Background()
	schema := "dibs_bench_" + strings.ToLower(rand.Text()[:12])
	s, err := Open(ctx, url, Options{Schema: schema, RecordConns: 1, BackgroundConns: 1, ReadConns: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.read.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
		s.Close()
	})
	now := time.Now()
	d := &dibs.Drop{ID: "bench", Title: "bench", Kind: dibs.KindCoupon, Stock: dibs.MaxStock}
	d.Normalize(now)
	if err := s.CreateDrop(ctx, d); err != nil {
		b.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	cfg.RuntimeParams["synchronous_commit"] = "on"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(ctx) })
	// For writeCopy: the table COPY fills, once per connection.
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE claims_in (LIKE claims INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
		b.Fatal(err)
	}
	return conn, d
}

// pipelined runs BEGIN and the insert in one round trip, then COMMIT, as
// the store does when every claim is new.
func pipelined(ctx context.Context, conn *pgx.Conn, insert string, args []any, n int) error {
	batch := &pgx.Batch{}
	batch.Queue(`BEGIN`)
	batch.Queue(insert, args...)
	recorded, err := readInsertBatch(conn.SendBatch(ctx, batch))
	if err == nil && len(recorded) != n {
		err = fmt.Errorf("recorded %d of %d", len(recorded), n)
	}
	if err != nil {
		conn.Exec(ctx, `ROLLBACK`)
		return err
	}
	_, err = conn.Exec(ctx, `COMMIT`)
	return err
}

func writeUnnest(ctx context.Context, conn *pgx.Conn, claims []*dibs.Claim) error {
	return pipelined(ctx, conn, insertClaims, claimArgs(claims), len(claims))
}

func writeValues(ctx context.Context, conn *pgx.Conn, claims []*dibs.Claim) error {
	var q strings.Builder
	q.WriteString(`INSERT INTO claims (` + claimColumns + `) VALUES `)
	args := make([]any, 0, len(claims)*11)
	for i, c := range claims {
		if i > 0 {
			q.WriteByte(',')
		}
		n := i * 11
		fmt.Fprintf(&q, "($%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9, n+10, n+11)
		args = append(args, c.ID, c.DropID, c.UserID, c.Slot, int32(c.Nth), string(c.State), nullText(c.IdempotencyKey),
			c.CreatedAt, c.UpdatedAt, nullTime(c.HoldExpiresAt), nullText(c.CouponCode))
	}
	q.WriteString(` ON CONFLICT DO NOTHING RETURNING id`)
	return pipelined(ctx, conn, q.String(), args, len(claims))
}

var copyColumns = strings.Split(strings.Join(strings.Fields(claimColumns), ""), ",")

func writeCopy(ctx context.Context, conn *pgx.Conn, claims []*dibs.Claim) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	rows := make([][]any, len(claims))
	for i, c := range claims {
		rows[i] = []any{c.ID, c.DropID, c.UserID, c.Slot, int32(c.Nth), string(c.State), nullText(c.IdempotencyKey),
			c.CreatedAt, c.UpdatedAt, nullTime(c.HoldExpiresAt), nullText(c.CouponCode)}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"claims_in"}, copyColumns, pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	inserted, err := tx.Query(ctx, `INSERT INTO claims (`+claimColumns+`) SELECT `+claimColumns+` FROM claims_in ON CONFLICT DO NOTHING RETURNING id`)
	if err != nil {
		return err
	}
	recorded, err := pgx.CollectRows(inserted, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(recorded) != len(claims) {
		return fmt.Errorf("recorded %d of %d", len(recorded), len(claims))
	}
	return tx.Commit(ctx)
}
