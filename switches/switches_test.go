package switches_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/switches"
)

// fakeStore is an AdminStore in memory.
type fakeStore struct {
	mu         sync.Mutex
	sw         dibs.Switches
	version    int64
	actions    []dibs.Action
	loadErr    error
	saveErr    error
	beforeSave func(*fakeStore) // runs under mu, before a save looks at the version
	saves      int
}

func (f *fakeStore) LoadSwitches(context.Context) (dibs.Switches, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loadErr != nil {
		return dibs.Switches{}, 0, f.loadErr
	}
	return f.sw, f.version, nil
}

func (f *fakeStore) SaveSwitches(_ context.Context, sw dibs.Switches, version int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.beforeSave != nil {
		f.beforeSave(f)
	}
	if f.saveErr != nil {
		return 0, f.saveErr
	}
	if version != f.version {
		return 0, dibs.Errorf(dibs.ECONFLICT, "version %d is gone", version)
	}
	f.saves++
	f.sw, f.version = sw, f.version+1
	return f.version, nil
}

func (f *fakeStore) AppendAction(_ context.Context, a dibs.Action) (int64, error) {
	if err := a.Validate(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a.ID = int64(len(f.actions) + 1)
	f.actions = append(f.actions, a)
	return a.ID, nil
}

func (f *fakeStore) ListActions(_ context.Context, limit int) ([]dibs.Action, error) {
	limit, err := dibs.ActionListLimit(limit)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []dibs.Action
	for i := len(f.actions) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, f.actions[i])
	}
	return out, nil
}

// set changes the record as another node's save would.
func (f *fakeStore) set(sw dibs.Switches) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sw, f.version = sw, f.version+1
}

// failingLog is an ActionLog that cannot write.
type failingLog struct{}

func (failingLog) Append(context.Context, dibs.Action) error {
	return dibs.Errorf(dibs.EUNAVAILABLE, "log down")
}
func (failingLog) Actions(context.Context, int) ([]dibs.Action, error) { return nil, nil }

// fakeNotifier counts publishes and hands out a channel the test pokes.
type fakeNotifier struct {
	published atomic.Int64
	poke      chan struct{}
}

func (n *fakeNotifier) Publish(context.Context) error { n.published.Add(1); return nil }
func (n *fakeNotifier) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.poke:
				select {
				case ch <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch
}

var now = time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)

// bundle is a Service on a fake store, with the ticker and notifier the
// test drives.
type bundle struct {
	svc      *switches.Service
	store    *fakeStore
	tick     chan time.Time
	notifier *fakeNotifier
	every    atomic.Int64 // the period the service asked its ticker for
}

func setup(t *testing.T, store *fakeStore, log func(*fakeStore) dibs.ActionLog) *bundle {
	t.Helper()
	b := &bundle{store: store, tick: make(chan time.Time), notifier: &fakeNotifier{poke: make(chan struct{})}}
	if log == nil {
		log = func(s *fakeStore) dibs.ActionLog { return dibs.NewActionLog(s) }
	}
	b.svc = switches.New(store, log(store), switches.Options{
		Notifier: b.notifier,
		Ticker: func(d time.Duration) (<-chan time.Time, func()) {
			b.every.Store(int64(d))
			return b.tick, func() {}
		},
		Now: func() time.Time { return now },
	})
	t.Cleanup(func() { b.svc.Stop() })
	return b
}

func mustStart(t *testing.T, b *bundle) {
	t.Helper()
	if err := b.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

var off = func(names ...dibs.Switch) dibs.Switches {
	var s dibs.Switches
	for _, n := range names {
		s = s.With(n, false)
	}
	return s
}

func TestStartLoadsTheRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{sw: off(dibs.SwitchClaims), version: 3}, nil)
	if got := b.svc.Switches(); got != (dibs.Switches{}) {
		t.Fatalf("before Start: %s, want all on", got)
	}
	mustStart(t, b)
	if got, v := b.svc.Switches(), b.svc.Version(); got != off(dibs.SwitchClaims) || v != 3 {
		t.Fatalf("after Start: %s at %d, want claims off at 3", got, v)
	}
	testenv.WaitFor(t, "the ticker", func() bool { return b.every.Load() != 0 })
	if got := time.Duration(b.every.Load()); got != switches.DefaultReread {
		t.Fatalf("re-read every %s, want %s", got, switches.DefaultReread)
	}
}

func TestStartFailsWithoutTheRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{loadErr: dibs.Errorf(dibs.EUNAVAILABLE, "down")}, nil)
	if err := b.svc.Start(context.Background()); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("Start = %v, want unavailable", err)
	}
	if err := b.svc.Stop(); err != nil {
		t.Fatalf("Stop after a failed Start = %v", err)
	}
}

func TestSetSwitches(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{}, nil)
	mustStart(t, b)
	got, err := b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{dibs.SwitchClaims: false, dibs.SwitchWebhooks: true}, "sre-alice")
	if err != nil {
		t.Fatal(err)
	}
	want := off(dibs.SwitchClaims)
	if got != want || b.svc.Switches() != want {
		t.Fatalf("set = %s, view %s; want %s", got, b.svc.Switches(), want)
	}
	if b.store.sw != want || b.store.version != 1 || b.svc.Version() != 1 {
		t.Fatalf("record = %s at %d (view at %d), want %s at 1", b.store.sw, b.store.version, b.svc.Version(), want)
	}
	if n := b.notifier.published.Load(); n != 1 {
		t.Fatalf("published %d notifications, want 1", n)
	}
	acts, _ := b.store.ListActions(context.Background(), 0)
	if len(acts) != 1 {
		t.Fatalf("%d actions, want 1", len(acts))
	}
	a := acts[0]
	if a.Kind != dibs.ActionSwitchFlipped || a.Actor != "sre-alice" || !a.At.Equal(now) || a.DropID != "" {
		t.Fatalf("action = %+v", a)
	}
	var detail, wantDetail any
	json.Unmarshal(a.Detail, &detail)
	json.Unmarshal([]byte(`{"changed":{"claims":"off"},"switches":{"claims":"off","queue_joins":"on","payments":"on","webhooks":"on"},"version":1}`), &wantDetail)
	if !reflect.DeepEqual(detail, wantDetail) {
		t.Fatalf("detail = %s", a.Detail)
	}

	// Flipping to the state the switch is in changes nothing.
	if _, err := b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{dibs.SwitchClaims: false}, "sre-bob"); err != nil {
		t.Fatal(err)
	}
	if acts, _ := b.store.ListActions(context.Background(), 0); len(acts) != 1 || b.store.version != 1 || b.notifier.published.Load() != 1 {
		t.Fatalf("a flip that changes nothing: %d actions, version %d, %d notifications", len(acts), b.store.version, b.notifier.published.Load())
	}
}

func TestSetSwitchesRefusesBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{}, nil)
	mustStart(t, b)
	for _, tc := range []struct {
		change map[dibs.Switch]bool
		by     string
	}{
		{nil, "sre"},
		{map[dibs.Switch]bool{}, "sre"},
		{map[dibs.Switch]bool{"claim": false}, "sre"},
		{map[dibs.Switch]bool{dibs.SwitchClaims: false, "nope": true}, "sre"},
		{map[dibs.Switch]bool{dibs.SwitchClaims: false}, ""},
	} {
		if _, err := b.svc.SetSwitches(context.Background(), tc.change, tc.by); dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("%v by %q: err = %v, want invalid", tc.change, tc.by, err)
		}
	}
	if b.store.saves != 0 || len(b.store.actions) != 0 || b.svc.Switches() != (dibs.Switches{}) {
		t.Fatalf("bad input changed something: %d saves, %d actions, view %s", b.store.saves, len(b.store.actions), b.svc.Switches())
	}
}

// A flip applies to the record's newest state: another node's save that
// comes first is kept, and this flip follows it.
func TestSetSwitchesAfterAnotherNodesSave(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	var once sync.Once
	store.beforeSave = func(f *fakeStore) {
		once.Do(func() { f.sw, f.version = off(dibs.SwitchPayments), f.version+1 })
	}
	b := setup(t, store, nil)
	mustStart(t, b)
	got, err := b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{dibs.SwitchClaims: false}, "sre")
	if err != nil {
		t.Fatal(err)
	}
	want := off(dibs.SwitchPayments, dibs.SwitchClaims)
	if got != want || store.sw != want || store.version != 2 || b.svc.Version() != 2 {
		t.Fatalf("set = %s, record %s at %d, view at %d; want %s at 2", got, store.sw, store.version, b.svc.Version(), want)
	}
	if !strings.Contains(string(store.actions[0].Detail), `"changed":{"claims":"off"}`) {
		t.Fatalf("detail %s, want only claims changed", store.actions[0].Detail)
	}
}

func TestSetSwitchesGivesUpUnderEndlessSaves(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	attempts := 0
	store.beforeSave = func(f *fakeStore) { attempts++; f.version++ }
	b := setup(t, store, nil)
	mustStart(t, b)
	if _, err := b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{dibs.SwitchClaims: false}, "sre"); dibs.ErrorCode(err) != dibs.ECONFLICT {
		t.Fatalf("err = %v, want conflict", err)
	}
	if attempts != switches.MaxSaveAttempts {
		t.Fatalf("%d attempts, want %d", attempts, switches.MaxSaveAttempts)
	}
	if b.svc.Switches() != (dibs.Switches{}) || len(store.actions) != 0 {
		t.Fatalf("view %s, %d actions after nothing was saved", b.svc.Switches(), len(store.actions))
	}
}

func TestSetSwitchesWhenTheRecordFails(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	b := setup(t, store, nil)
	mustStart(t, b)
	store.saveErr = dibs.Errorf(dibs.EUNAVAILABLE, "disk full")
	if _, err := b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{dibs.SwitchClaims: false}, "sre"); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if b.svc.Switches() != (dibs.Switches{}) || len(store.actions) != 0 || b.notifier.published.Load() != 0 {
		t.Fatal("a flip the record refused took effect")
	}
}

// The flip is in the record: a log that cannot write does not undo it.
func TestSetSwitchesWhenTheLogFails(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{}, func(*fakeStore) dibs.ActionLog { return failingLog{} })
	mustStart(t, b)
	got, err := b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{dibs.SwitchClaims: false}, "sre")
	if err != nil || got != off(dibs.SwitchClaims) || b.svc.Switches() != got {
		t.Fatalf("set = %s, %v; view %s", got, err, b.svc.Switches())
	}
	if b.notifier.published.Load() != 1 {
		t.Fatal("other nodes were not notified")
	}
}

func TestTickReadsTheRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{}, nil)
	mustStart(t, b)
	b.store.set(off(dibs.SwitchQueueJoins))
	b.tick <- now // received: the service is reading
	testenv.WaitFor(t, "the tick's read", func() bool { return b.svc.Switches() == off(dibs.SwitchQueueJoins) })

	// A record that cannot be read leaves the view as it was.
	b.store.mu.Lock()
	b.store.loadErr = errors.New("down")
	b.store.mu.Unlock()
	b.tick <- now
	b.tick <- now // the first read has finished
	if b.svc.Switches() != off(dibs.SwitchQueueJoins) || b.svc.Version() != 1 {
		t.Fatalf("after a failed read: %s at %d", b.svc.Switches(), b.svc.Version())
	}
	b.store.mu.Lock()
	b.store.loadErr = nil
	b.store.mu.Unlock()
	b.store.set(dibs.Switches{})
	b.tick <- now
	testenv.WaitFor(t, "the read after the outage", func() bool { return b.svc.Version() == 2 })
}

func TestNotificationReadsTheRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{}, nil)
	mustStart(t, b)
	b.store.set(off(dibs.SwitchWebhooks))
	b.notifier.poke <- struct{}{} // the ticker never ticks
	testenv.WaitFor(t, "the notified read", func() bool { return b.svc.Switches() == off(dibs.SwitchWebhooks) })
}

// A node's view never goes back to an older version, whatever order its
// reads and saves finish in.
func TestViewNeverGoesBack(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	b := setup(t, store, nil)
	mustStart(t, b)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			sw := dibs.AllSwitches[i%len(dibs.AllSwitches)]
			b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{sw: i%2 == 0}, "sre")
		})
	}
	stop := make(chan struct{})
	var seen sync.WaitGroup
	seen.Go(func() {
		last := int64(0)
		for {
			select {
			case <-stop:
				return
			case b.tick <- now:
			}
			if v := b.svc.Version(); v < last {
				t.Errorf("version went from %d to %d", last, v)
			} else {
				last = v
			}
		}
	})
	wg.Wait()
	close(stop)
	seen.Wait()
	b.tick <- now
	testenv.WaitFor(t, "the view of the last save", func() bool { return b.svc.Version() == store.version })
	if b.svc.Switches() != store.sw {
		t.Fatalf("view %s, record %s at the same version", b.svc.Switches(), store.sw)
	}
}

func TestStopTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{}, nil)
	if err := b.svc.Stop(); err != nil {
		t.Fatalf("Stop before Start = %v", err)
	}
	mustStart(t, b)
	if err := b.svc.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := b.svc.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestGauge(t *testing.T) {
	t.Parallel()
	b := setup(t, &fakeStore{sw: off(dibs.SwitchPayments), version: 1}, nil)
	mustStart(t, b)
	reg := prometheus.NewPedanticRegistry()
	if err := b.svc.Register(reg); err != nil {
		t.Fatal(err)
	}
	want := `# HELP dibs_switch_on Whether a kill switch is on (1, normal) or off (0) on this node.
# TYPE dibs_switch_on gauge
dibs_switch_on{switch="claims"} 1
dibs_switch_on{switch="payments"} 0
dibs_switch_on{switch="queue_joins"} 1
dibs_switch_on{switch="webhooks"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dibs_switch_on"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.SetSwitches(context.Background(), map[dibs.Switch]bool{dibs.SwitchClaims: false, dibs.SwitchPayments: true}, "sre"); err != nil {
		t.Fatal(err)
	}
	want = strings.Replace(strings.Replace(want, `"claims"} 1`, `"claims"} 0`, 1), `"payments"} 0`, `"payments"} 1`, 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dibs_switch_on"); err != nil {
		t.Fatal(err)
	}
}
