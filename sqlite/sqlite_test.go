package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/sqlite"
	"github.com/dibs-io/dibs/storetest"
)

// MustOpen opens a store in a fresh temporary directory.
func MustOpen(tb testing.TB) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "dibs.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) dibs.Store { return MustOpen(t) })
	storetest.RunAdmin(t, func(t *testing.T) dibs.AdminStore { return MustOpen(t) })
}

func TestPostConformance(t *testing.T) {
	t.Parallel()
	storetest.RunPost(t, func(t *testing.T) storetest.PostStore { return MustOpen(t) },
		func(s storetest.PostStore) post.JobClientFunc {
			return func(cfg *river.Config) (post.JobClient, error) { return sqlite.NewJobClient(s.(*sqlite.Store), cfg) }
		})
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dibs.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	d := storetest.MustCreateDrop(t, s, 5, 1)
	c := storetest.NewClaim(d, "a", 1, 1)
	storetest.MustRecord(t, s, c)
	s.Close()

	s, err = sqlite.Open(ctx, path) // migrations already applied: a no-op
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.FindClaim(ctx, c.ID); err != nil {
		t.Fatalf("claim after reopen: %v", err)
	}
}
