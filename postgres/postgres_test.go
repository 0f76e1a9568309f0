package postgres_test

import (
	"testing"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/postgres/pgtest"
	"github.com/dibs-io/dibs/storetest"
)

func TestStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) dibs.Store { return pgtest.MustOpen(t) })
}
