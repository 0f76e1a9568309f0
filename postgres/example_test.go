package postgres_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/postgres"
)

// A node opens the shared record with bounded pools, registers their
// metrics, and records a batch of winners in one group commit.
func ExampleOpen() {
	ctx := context.Background()
	s, err := postgres.Open(ctx, "postgres://dibs@db.internal:5432/dibs?sslmode=verify-full&search_path=dibs",
		postgres.Options{RecordConns: 4, BackgroundConns: 2, ReadConns: 4}) // at most 10 connections
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	prometheus.MustRegister(s.Collector())

	now := time.Now()
	claims := []*dibs.Claim{
		{ID: "c1", DropID: "pepero", UserID: "alice", Slot: 1, Nth: 1, State: dibs.ClaimConfirmed, CreatedAt: now, UpdatedAt: now},
		{ID: "c2", DropID: "pepero", UserID: "bob", Slot: 2, Nth: 1, State: dibs.ClaimConfirmed, CreatedAt: now, UpdatedAt: now},
	}
	results, err := s.RecordClaims(ctx, claims)
	switch {
	case dibs.ErrorCode(err) == dibs.EUNAVAILABLE:
		log.Printf("not recorded, retry later (outcome unknown: %v)", errors.Is(err, dibs.ErrOutcomeUnknown))
	case err != nil:
		log.Fatal(err)
	}
	for i, r := range results {
		if r != nil { // ECONFLICT: the slot or the user's place is taken
			log.Printf("claim %s refused: %v", claims[i].ID, r)
		}
	}
}
