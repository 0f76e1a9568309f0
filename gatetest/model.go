package gatetest

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Op is the input of one gate operation in a recorded history.
type Op struct {
	Drop    string
	Release bool   // false: Reserve
	User    string // Reserve
	ClaimID string // Release: the claim given back; Reserve: the id a new claim would get
}

// Result is the output of one gate operation.
type Result struct {
	Kind    string // "won", "existing", "sold_out", "released", "not_held"
	ClaimID string
	Slot    int64
}

// modelState is one drop's state: free slots and, per user, the held claim.
// It is immutable; steps return new states.
type modelState struct {
	left  int64
	holds map[string]modelHold // user → hold
}

type modelHold struct {
	claimID string
	slot    int64
}

func (s modelState) with(user string, h *modelHold, delta int64) modelState {
	n := modelState{left: s.left + delta, holds: maps.Clone(s.holds)}
	if n.holds == nil {
		n.holds = map[string]modelHold{}
	}
	if h == nil {
		delete(n.holds, user)
	} else {
		n.holds[user] = *h
	}
	return n
}

func (s modelState) String() string {
	users := slices.Sorted(maps.Keys(s.holds))
	var b strings.Builder
	fmt.Fprintf(&b, "left=%d", s.left)
	for _, u := range users {
		fmt.Fprintf(&b, " %s=%d/%s", u, s.holds[u].slot, s.holds[u].claimID)
	}
	return b.String()
}

// ClaimModel is the sequential specification of a gate with per-user limit 1
// and drops of stock slots, for Porcupine. Histories are partitioned by drop:
// stock links every user of a drop, so a partition per user would be wrong.
func ClaimModel(stock int64) porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byDrop := map[string][]porcupine.Operation{}
			for _, op := range history {
				d := op.Input.(Op).Drop
				byDrop[d] = append(byDrop[d], op)
			}
			var out [][]porcupine.Operation
			for _, d := range slices.Sorted(maps.Keys(byDrop)) {
				out = append(out, byDrop[d])
			}
			return out
		},
		Init: func() any { return modelState{left: stock} },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(modelState), input.(Op), output.(Result)
			if in.Release {
				for user, h := range s.holds {
					if h.claimID == in.ClaimID {
						return out.Kind == "released", s.with(user, nil, +1)
					}
				}
				return out.Kind == "not_held", s
			}
			h, has := s.holds[in.User]
			switch out.Kind {
			case "existing":
				return has && h.claimID == out.ClaimID && h.slot == out.Slot, s
			case "sold_out":
				return !has && s.left == 0, s
			case "won":
				if has || s.left == 0 || out.Slot < 1 || out.Slot > stock || out.ClaimID != in.ClaimID {
					return false, s
				}
				for _, other := range s.holds {
					if other.slot == out.Slot {
						return false, s
					}
				}
				return true, s.with(in.User, &modelHold{claimID: out.ClaimID, slot: out.Slot}, -1)
			}
			return false, s
		},
		Equal: func(a, b any) bool { return a.(modelState).String() == b.(modelState).String() },
		DescribeOperation: func(input, output any) string {
			in, out := input.(Op), output.(Result)
			if in.Release {
				return fmt.Sprintf("release(%s) → %s", in.ClaimID, out.Kind)
			}
			return fmt.Sprintf("reserve(%s) → %s %d %s", in.User, out.Kind, out.Slot, out.ClaimID)
		},
		DescribeState: func(state any) string { return state.(modelState).String() },
	}
}
