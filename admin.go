package dibs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Switch names one of the kill switches an operator flips during a sale.
// A switch is on in normal operation; turned off, the work it names stops
// on every node and its requests are refused with ESWITCHEDOFF.
type Switch string

// The kill switches.
const (
	SwitchClaims     Switch = "claims"      // taking claims
	SwitchQueueJoins Switch = "queue_joins" // joining waiting rooms
	SwitchPayments   Switch = "payments"    // charging held claims
	SwitchWebhooks   Switch = "webhooks"    // delivering webhooks
)

// AllSwitches lists every switch in the order the wire format shows them.
var AllSwitches = []Switch{SwitchClaims, SwitchQueueJoins, SwitchPayments, SwitchWebhooks}

// Valid reports whether sw is one of AllSwitches.
func (sw Switch) Valid() bool { return sw.bit() != 0 }

func (sw Switch) bit() uint8 {
	for i, s := range AllSwitches {
		if s == sw {
			return 1 << i
		}
	}
	return 0
}

// Switches is the state of every switch. The zero value has all of them
// on: a node that knows of no flip runs normally. Switches is a small value,
// comparable with ==, and safe to copy.
//
// Its JSON is an object of every switch, "on" or "off":
//
//	{"claims":"on","queue_joins":"on","payments":"on","webhooks":"on"}
type Switches struct {
	off uint8 // one bit per switch of AllSwitches that is off
}

// On reports whether sw is on. A name that is not a switch reads as on.
func (s Switches) On(sw Switch) bool { return s.off&sw.bit() == 0 }

// With returns s with sw turned on or off. An unknown sw changes nothing.
func (s Switches) With(sw Switch, on bool) Switches {
	if on {
		s.off &^= sw.bit()
	} else {
		s.off |= sw.bit()
	}
	return s
}

// Apply returns s with every switch of change set to its value (true: on).
func (s Switches) Apply(change map[Switch]bool) Switches {
	for sw, on := range change {
		s = s.With(sw, on)
	}
	return s
}

// Diff returns the switches whose state in s differs from prev, with their
// state in s (true: on); empty when nothing differs.
func (s Switches) Diff(prev Switches) map[Switch]bool {
	d := map[Switch]bool{}
	for _, sw := range AllSwitches {
		if s.On(sw) != prev.On(sw) {
			d[sw] = s.On(sw)
		}
	}
	return d
}

// String is the JSON form.
func (s Switches) String() string {
	b, _ := s.MarshalJSON()
	return string(b)
}

// MarshalJSON writes every switch, in the order of AllSwitches.
func (s Switches) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, sw := range AllSwitches {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%q", sw, onOff(s.On(sw)))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON sets the switches the object names; those it does not
// name keep their state (on, when decoding into a zero Switches). A name
// that is not a switch, or a value other than "on" or "off", is EINVALID.
func (s *Switches) UnmarshalJSON(b []byte) error {
	change, err := decodeSwitches(b)
	if err != nil {
		return err
	}
	*s = s.Apply(change)
	return nil
}

// SwitchesFromRecord reads switches as a store saved them (MarshalJSON).
// A name it does not know is skipped: a newer version of dibs may have
// saved a switch this one does not have.
func SwitchesFromRecord(b []byte) (Switches, error) {
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return Switches{}, fmt.Errorf("switches record %s: %w", b, err)
	}
	var s Switches
	for name, v := range raw {
		if sw := Switch(name); sw.Valid() {
			if v != "on" && v != "off" {
				return Switches{}, fmt.Errorf("switches record %s: switch %s is %q", b, name, v)
			}
			s = s.With(sw, v == "on")
		}
	}
	return s, nil
}

// ParseSwitchChange reads the body of a request that flips switches: an
// object naming at least one switch, each "on" or "off", such as
// {"claims":"off"}. Anything else is EINVALID, with a message that says
// what is wrong. The result maps each named switch to true for on.
func ParseSwitchChange(body []byte) (map[Switch]bool, error) {
	change, err := decodeSwitches(body)
	if err != nil {
		return nil, err
	}
	if len(change) == 0 {
		return nil, Errorf(EINVALID, "Name at least one switch to flip (%s).", switchList())
	}
	return change, nil
}

// CheckSwitchChange returns EINVALID unless change names at least one
// switch and only switches.
func CheckSwitchChange(change map[Switch]bool) error {
	if len(change) == 0 {
		return Errorf(EINVALID, "Name at least one switch to flip (%s).", switchList())
	}
	for sw := range change {
		if !sw.Valid() {
			return unknownSwitch(string(sw))
		}
	}
	return nil
}

func decodeSwitches(b []byte) (map[Switch]bool, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, WrapError(EINVALID, `Switches are a JSON object such as {"claims":"off"}.`, err)
	}
	if raw == nil {
		return nil, Errorf(EINVALID, `Switches are a JSON object such as {"claims":"off"}, not null.`)
	}
	change := make(map[Switch]bool, len(raw))
	for name, v := range raw {
		sw := Switch(name)
		if !sw.Valid() {
			return nil, unknownSwitch(name)
		}
		var val string
		if err := json.Unmarshal(v, &val); err != nil || (val != "on" && val != "off") {
			return nil, Errorf(EINVALID, `Switch %s is "on" or "off", not %s.`, name, v)
		}
		change[sw] = val == "on"
	}
	return change, nil
}

func unknownSwitch(name string) error {
	return Errorf(EINVALID, "There is no switch %q; the switches are %s.", name, switchList())
}

func switchList() string {
	names := make([]string, len(AllSwitches))
	for i, sw := range AllSwitches {
		names[i] = string(sw)
	}
	return strings.Join(names, ", ")
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// SwitchService keeps the kill switches of a deployment. Safe for
// concurrent use.
type SwitchService interface {
	// Switches returns this node's view of the switches. It does no I/O
	// (the claim path reads it on every request); a flip on another node
	// reaches it within a second.
	Switches() Switches
	// SetSwitches sets every switch of change (true: on) on behalf of the
	// operator labelled by, records the flip in the action log, and
	// returns the state that results. EINVALID for an empty change or a
	// name that is not a switch; EUNAVAILABLE when the record cannot be
	// written, in which case nothing changed.
	SetSwitches(ctx context.Context, change map[Switch]bool, by string) (Switches, error)
}

// Kinds of operator actions.
const (
	ActionDropCreated     = "drop.created"
	ActionDropPaused      = "drop.paused"
	ActionDropResumed     = "drop.resumed"
	ActionDropClosed      = "drop.closed"
	ActionDropRateChanged = "drop.rate_changed"
	ActionSwitchFlipped   = "switch.flipped"
	ActionWebhookRetried  = "webhook.retried"
)

// Bounds of the action log.
const (
	// DefaultActionList is how many actions a list returns when the
	// caller asks for no particular number.
	DefaultActionList = 100
	// MaxActionList is the most actions one list returns.
	MaxActionList = 1000
	// MaxActionDetail is the largest Detail an action may carry, in bytes.
	MaxActionDetail = 8 << 10
)

// Action is one thing an operator did, as the console's log shows it.
type Action struct {
	ID     int64           `json:"id"` // assigned by the log; higher is newer
	At     time.Time       `json:"at"`
	Actor  string          `json:"actor"` // the label of the operator's token, never the token
	Kind   string          `json:"kind"`  // one of the Action* kinds
	DropID string          `json:"drop_id,omitempty"`
	Detail json.RawMessage `json:"detail,omitempty"` // what changed, as a JSON object
}

// Validate returns EINVALID unless a has a time, an actor and a kind, and
// its Detail, if any, is valid JSON of at most MaxActionDetail bytes.
func (a *Action) Validate() error {
	switch {
	case a.At.IsZero():
		return Errorf(EINVALID, "An action needs a time.")
	case a.Actor == "":
		return Errorf(EINVALID, "An action needs an actor.")
	case a.Kind == "":
		return Errorf(EINVALID, "An action needs a kind.")
	case len(a.Detail) > MaxActionDetail:
		return Errorf(EINVALID, "An action's detail is at most %d bytes, not %d.", MaxActionDetail, len(a.Detail))
	case len(a.Detail) > 0 && !json.Valid(a.Detail):
		return Errorf(EINVALID, "An action's detail is JSON.")
	}
	return nil
}

// ActionListLimit returns how many actions a list asking for n returns:
// DefaultActionList for 0, n from 1 to MaxActionList. Other numbers are
// EINVALID.
func ActionListLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultActionList, nil
	case n < 0 || n > MaxActionList:
		return 0, Errorf(EINVALID, "List from 1 to %d actions, not %d.", MaxActionList, n)
	}
	return n, nil
}

// ActionLog is the log of operators' actions. Safe for concurrent use.
type ActionLog interface {
	// Append records a. EINVALID if a is not valid (Action.Validate).
	Append(ctx context.Context, a Action) error
	// Actions returns the newest actions, newest first, at most limit
	// (see ActionListLimit: EINVALID outside 0..MaxActionList).
	Actions(ctx context.Context, limit int) ([]Action, error)
}

// AdminStore keeps what operators set and did: the switches, with a
// version that every save increments, and the action log. Implementations
// are safe for concurrent use.
type AdminStore interface {
	// LoadSwitches returns the recorded switches and their version; all on
	// at version 0 before any save.
	LoadSwitches(ctx context.Context) (Switches, int64, error)
	// SaveSwitches records s if the record is still at version, and
	// returns the new version (version+1). ECONFLICT if another save came
	// first: the caller loads again and reapplies its change.
	SaveSwitches(ctx context.Context, s Switches, version int64) (int64, error)
	// AppendAction records a and returns the ID it was given. EINVALID if a
	// is not valid.
	AppendAction(ctx context.Context, a Action) (int64, error)
	// ListActions returns the newest actions, newest (highest ID) first,
	// at most limit (ActionListLimit).
	ListActions(ctx context.Context, limit int) ([]Action, error)
}

// NewActionLog returns the ActionLog kept in store.
func NewActionLog(store AdminStore) ActionLog { return storeActionLog{store} }

type storeActionLog struct{ store AdminStore }

func (l storeActionLog) Append(ctx context.Context, a Action) error {
	_, err := l.store.AppendAction(ctx, a)
	return err
}

func (l storeActionLog) Actions(ctx context.Context, limit int) ([]Action, error) {
	return l.store.ListActions(ctx, limit)
}
