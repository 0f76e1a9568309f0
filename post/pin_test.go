package post_test

import (
	"os"
	"regexp"
	"testing"

	_ "github.com/riverqueue/river/riverdriver/riverpgxv5"
	_ "github.com/riverqueue/river/riverdriver/riversqlite"
)

// TestRiverPin guards the River pin (docs/dependencies.md): the SQLite
// driver exists on the module proxy only at v0.31.0 and does not build
// against a newer River, so every River module must stay at that version.
func TestRiverPin(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	const want = "v0.31.0"
	found := regexp.MustCompile(`(?m)^\s*(github\.com/riverqueue/\S+) (\S+)`).FindAllStringSubmatch(string(mod), -1)
	if len(found) < 4 {
		t.Fatalf("found %d River modules in go.mod, want the pinned set", len(found))
	}
	for _, m := range found {
		if m[2] != want {
			t.Errorf("%s at %s, want %s (the SQLite driver is pinned there)", m[1], m[2], want)
		}
	}
}
