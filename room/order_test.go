package room_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/dibs-io/dibs/room"
)

func seedOf(b byte) []byte { return slices.Repeat([]byte{b}, 32) }

func TestPositionIsAPermutation(t *testing.T) {
	t.Parallel()
	sizes := []uint64{1, 2, 3, 4, 5, 15, 16, 17, 100, 255, 256, 257, 1000, 4097, 50_000, 65_536, 65_537}
	for _, pre := range sizes {
		seeds := []byte{0, 1, 0xff}
		if pre > 5000 {
			seeds = seeds[:1]
		}
		for _, s := range seeds {
			seen := make([]bool, pre+1)
			for n := uint64(1); n <= pre; n++ {
				p := room.Position(seedOf(s), pre, n)
				if p < 1 || p > pre || seen[p] {
					t.Fatalf("pre %d seed %d: ticket %d → position %d (out of range or taken)", pre, s, n, p)
				}
				seen[p] = true
			}
		}
	}
	if got := room.Position(seedOf(1), 10, 11); got != 11 {
		t.Fatalf("a ticket past the pre-queue stands at %d, want its number", got)
	}
}

func order(seed []byte, pre uint64) []uint64 {
	out := make([]uint64, pre)
	for n := uint64(1); n <= pre; n++ {
		out[room.Position(seed, pre, n)-1] = n
	}
	return out
}

func TestPositionDependsOnTheSeedOnly(t *testing.T) {
	t.Parallel()
	a, b, c := order(seedOf(1), 1000), order(seedOf(1), 1000), order(seedOf(2), 1000)
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave two orders")
	}
	if slices.Equal(a, c) || slices.IsSorted(a) {
		t.Fatal("the order does not depend on the seed")
	}
}

// TestPositionIsFair: whoever joins early is not served early. The earliest
// tenth of the pre-queue should fill about a tenth of each tenth of the
// positions.
func TestPositionIsFair(t *testing.T) {
	t.Parallel()
	const pre = 100_000
	for s := range byte(5) {
		var early [10]int
		for n := uint64(1); n <= pre/10; n++ {
			early[(room.Position(seedOf(s), pre, n)-1)*10/pre]++
		}
		for i, got := range early {
			if got < 850 || got > 1150 { // expected 1,000; σ ≈ 30
				t.Fatalf("seed %d: %d of the earliest tenth stand in tenth %d of the line, want about 1,000", s, got, i)
			}
		}
	}
}

// TestPositionKnownAnswer pins the permutation: docs/waiting-room.md
// describes it, and auditors recompute it outside dibs.
func TestPositionKnownAnswer(t *testing.T) {
	t.Parallel()
	got := order(seedOf(0), 10)
	want := []uint64{5, 10, 3, 4, 6, 9, 8, 7, 2, 1}
	if !slices.Equal(got, want) {
		t.Fatalf("order of 10 with a zero seed = %v, want %v", got, want)
	}
}

// The order in which ten people who joined before the opening are
// admitted, from the seed the room published when it opened.
func ExamplePosition() {
	seed := make([]byte, 32) // hex-decoded "seed" of GET /v1/drops/{id}/queue
	const pre = 10           // its "prequeue"
	line := make([]uint64, pre)
	for n := uint64(1); n <= pre; n++ {
		line[room.Position(seed, pre, n)-1] = n
	}
	fmt.Println(line)
	// Output: [5 10 3 4 6 9 8 7 2 1]
}
