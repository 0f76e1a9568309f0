package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/sqlite"
)

// snapshot is the record's files as they are on disk the moment a claim
// was acknowledged: its commit is in the WAL and synced.
type snapshot struct {
	db, wal []byte
	salt    []byte // the WAL's salt: a new one means SQLite restarted the WAL
	end     int    // where the WAL's last commit frame ends
}

// TestFaultPowerLoss: a power cut loses no acknowledged claim. Claims
// are recorded one after another on the SQLite record through the engine; after each is
// acknowledged, the database and its WAL are copied as they are on disk.
// A power cut at any moment while the next commit is being written leaves
// what the last fsync made durable plus any part of what followed (the
// kernel may have written some of it, or none): the copy's WAL cut at
// points between the end of the previous commit and the end of this one,
// mid-frame and mid-header included. Each cut is reopened as dibs opens
// its record (migrations, the durability check) and must be a prefix of
// the acknowledged claims containing every claim acknowledged before the
// commit in flight, and pass SQLite's integrity check.
//
// The database file is the one copied at the previous acknowledgement: in
// WAL mode it changes only in checkpoints, whose pages the WAL still
// holds until the next commit restarts it after a checkpoint synced the
// file. A commit that restarted the WAL is tried whole only.
//
// 30 claims and 4 cuts each here; DIBS_POWERLOSS_CLAIMS sets more
// (`make soak` sets 2500: 10,000 cut points).
func TestFaultPowerLoss(t *testing.T) {
	t.Parallel()
	claims, cuts := 30, 4
	if v := os.Getenv("DIBS_POWERLOSS_CLAIMS"); v != "" {
		var err error
		if claims, err = strconv.Atoi(v); err != nil || claims < 2 {
			t.Fatalf("DIBS_POWERLOSS_CLAIMS=%q: want a number of claims", v)
		}
	}
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "dibs.db")
	store, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := engine.New(engine.Config{Store: store, Gate: memory.NewGate()})
	if err := e.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	// Three claims in four win: losers write nothing and must not appear.
	stock := claims * 3 / 4
	if err := e.CreateDrop(ctx, &dibs.Drop{ID: "d", Title: "d", Kind: dibs.KindCoupon, Stock: int64(stock)}); err != nil {
		t.Fatal(err)
	}

	// The schema goes into the database file first, so that the cuts
	// replay claims, not migrations (a WAL of a megabyte takes a tenth of
	// a second to recover under the race detector).
	if _, err := store.DB().ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}

	var acked []*dibs.Claim // in the order they were acknowledged
	rng := rand.New(rand.NewPCG(1, 2))
	points, wins, restarts := 0, 0, 0
	prev := take(t, path)
	for i := range claims {
		c, _, err := e.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "d", UserID: fmt.Sprintf("u%d", i)})
		switch {
		case err == nil:
			acked = append(acked, c)
		case dibs.ErrorCode(err) == dibs.ESOLDOUT:
		default:
			t.Fatal(err)
		}
		cur := take(t, path)
		// The moment before this commit's fsync: the database as it was
		// at the previous acknowledgement (the background checkpointer
		// may since have copied this very commit into the file), the WAL
		// cut anywhere past the previous commit.
		db, at := prev.db, []int{prev.end, cur.end, len(cur.wal)}
		if bytes.Equal(prev.salt, cur.salt) {
			for range cuts - len(at) {
				at = append(at, prev.end+rng.IntN(cur.end-prev.end+1))
			}
		} else {
			// SQLite restarted the WAL for this commit, after a checkpoint
			// that synced every earlier commit into the database; the
			// copies do not hold that database, so only the whole commit
			// is tried, on the file as it is now.
			db, at = cur.db, []int{cur.end, len(cur.wal)}
			restarts++
		}
		// Winners among users 0..i-1 were acknowledged before user i's
		// commit began, and must be there; user i's may be.
		must, may := prefix(acked, i), prefix(acked, i+1)
		for j, p := range at {
			points++
			// Every cut is recovered by SQLite and read; one in twenty is
			// opened as dibs opens its record, whose migrations (River's
			// among them) take seconds under the race detector.
			got := reopen(t, db, cur.wal[:p], (i*len(at)+j)%20 == 0)
			if len(got) != len(must) && len(got) != len(may) {
				t.Fatalf("cut %d of %d bytes after claim %d: %d claims, want %d or %d", p, len(cur.wal), i, len(got), len(must), len(may))
			}
			for _, c := range may[:len(got)] {
				if r := got[c.ID]; r == nil || r.UserID != c.UserID || r.Slot != c.Slot {
					t.Fatalf("cut %d of %d bytes after claim %d: acknowledged %s (%s, slot %d) is %+v", p, len(cur.wal), i, c.ID, c.UserID, c.Slot, r)
				}
			}
			if p >= cur.end && len(got) != len(may) {
				t.Fatalf("cut %d of %d bytes, past the synced commit at %d: claim of u%d lost", p, len(cur.wal), cur.end, i)
			}
			if len(got) == len(may) {
				wins++
			}
		}
		prev = cur
	}
	if len(acked) != stock {
		t.Fatalf("%d claims won, want %d", len(acked), stock)
	}
	t.Logf("%d cut points after %d claims (%d won; the WAL restarted %d times), every one a prefix with every acknowledged claim; %d cuts kept the commit in flight",
		points, claims, len(acked), restarts, wins)
}

// prefix is the claims acknowledged by users 0..n-1.
func prefix(acked []*dibs.Claim, n int) []*dibs.Claim {
	out := []*dibs.Claim{}
	for _, c := range acked {
		var i int
		fmt.Sscanf(c.UserID, "u%d", &i)
		if i < n {
			out = append(out, c)
		}
	}
	return out
}

// take copies the record's database and WAL as they are now. The -shm
// index is left out: it is rebuilt from the WAL after a crash.
func take(t *testing.T, path string) snapshot {
	t.Helper()
	db, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wal, err := os.ReadFile(path + "-wal")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	s := snapshot{db: db, wal: wal}
	if len(wal) < 32 {
		return s
	}
	s.salt = wal[16:24]
	frame := 24 + int(binary.BigEndian.Uint32(wal[8:12]))
	for off := 32; off+frame <= len(wal); off += frame {
		h := wal[off : off+24]
		if !bytes.Equal(h[8:16], s.salt) {
			break // a frame of an earlier cycle of the WAL
		}
		if binary.BigEndian.Uint32(h[4:8]) != 0 { // a commit frame
			s.end = off + frame
		}
	}
	return s
}

// reopen writes db and wal to a new directory, opens the record there
// (asDibs: as dibs opens it; else with the driver alone, not syncing the
// copy's own checkpoint on close, which nothing reads),
// checks its integrity and returns its active claims of drop d.
func reopen(t *testing.T, db, wal []byte, asDibs bool) map[string]*dibs.Claim {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dibs.db")
	if err := os.WriteFile(path, db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"-wal", wal, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got := map[string]*dibs.Claim{}
	users, slots := map[string]bool{}, map[int64]bool{}
	add := func(c *dibs.Claim) error {
		if users[c.UserID] || slots[c.Slot] {
			return fmt.Errorf("claim %s repeats user %s or slot %d", c.ID, c.UserID, c.Slot)
		}
		users[c.UserID], slots[c.Slot] = true, true
		got[c.ID] = c
		return nil
	}
	var conn *sql.DB
	if asDibs {
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen after a power cut: %v", err)
		}
		defer s.Close()
		if err := s.ScanActiveClaims(ctx, "d", add); err != nil {
			t.Fatal(err)
		}
		conn = s.DB()
	} else {
		var err error
		if conn, err = sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)"); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rows, err := conn.QueryContext(ctx, `SELECT id, user_id, slot FROM claims WHERE drop_id = 'd' AND state IN ('held', 'confirmed', 'paid')`)
		if err != nil {
			t.Fatalf("read claims after a power cut: %v", err)
		}
		for rows.Next() {
			c := &dibs.Claim{}
			if err := rows.Scan(&c.ID, &c.UserID, &c.Slot); err != nil {
				t.Fatal(err)
			}
			if err := add(c); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var check string
	if err := conn.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity check after a power cut: %q %v", check, err)
	}
	return got
}
