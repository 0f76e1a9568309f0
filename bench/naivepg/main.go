// Command naivepg is the naive PostgreSQL design of the source documents,
// as a reference for benchmarks: every claim runs one transaction that takes
// a unit off a stock row (UPDATE stock SET n = n - 1 WHERE n > 0) and
// inserts the winner, with synchronous_commit on. Passports are verified
// the way dibs verifies them, so only the storage design differs.
//
//	naivepg --addr 127.0.0.1:8082 --postgres URL --schema naive --stock 1111
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dibs-io/dibs/passport"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8082", "listen address")
	url := flag.String("postgres", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL")
	schema := flag.String("schema", "naive", "schema of the stock and winners tables (recreated)")
	stock := flag.Int64("stock", 1111, "units in stock")
	conns := flag.Int("conns", 32, "connection pool size")
	flag.Parse()

	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(*url)
	if err != nil {
		log.Fatal(err)
	}
	cfg.MaxConns = int32(*conns)
	cfg.ConnConfig.RuntimeParams["search_path"] = *schema
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := setup(ctx, db, *schema, *stock); err != nil {
		log.Fatal(err)
	}
	v, err := passport.NewVerifier([]byte(os.Getenv("DIBS_PASSPORT_SECRET")), passport.Options{})
	if err != nil {
		log.Fatal(err)
	}
	h := http.NewServeMux()
	h.HandleFunc("POST /v1/drops/{id}/claims", func(w http.ResponseWriter, r *http.Request) {
		user, err := v.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil {
			http.Error(w, `{"code":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		status, err := claim(r.Context(), db, user)
		if err != nil {
			log.Printf("claim: %v", err)
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"status":%d}`+"\n", status)
	})
	log.Fatal(http.ListenAndServe(*addr, h))
}

func setup(ctx context.Context, db *pgxpool.Pool, schema string, stock int64) error {
	_, err := db.Exec(ctx, fmt.Sprintf(`
		DROP SCHEMA IF EXISTS %[1]s CASCADE;
		CREATE SCHEMA %[1]s;
		CREATE TABLE %[1]s.stock (id int PRIMARY KEY, n bigint NOT NULL);
		CREATE TABLE %[1]s.winners (user_id text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO %[1]s.stock VALUES (1, %[2]d);`, pgx.Identifier{schema}.Sanitize(), stock))
	return err
}

// claim is version 0: take a unit from the stock row and record the winner
// in one transaction. Every winner waits for the row lock of every winner
// before it.
func claim(ctx context.Context, db *pgxpool.Pool, user string) (int, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	tag, err := tx.Exec(ctx, `UPDATE stock SET n = n - 1 WHERE id = 1 AND n > 0`)
	if err != nil {
		return 0, err
	}
	if tag.RowsAffected() == 0 {
		return http.StatusGone, nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO winners (user_id) VALUES ($1)`, user); err != nil {
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "23505" {
			return http.StatusOK, nil // already won; the rollback returns the unit
		}
		return 0, err
	}
	return http.StatusCreated, tx.Commit(ctx)
}
