package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/dibs-io/dibs"
)

// Audit is the verdict on a drop after a run: one check per invariant.
type Audit struct {
	// OK is true when no check failed.
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
}

// Check is one invariant and what the audit found.
type Check struct {
	Name   string      `json:"name"`
	Status CheckStatus `json:"status"`
	Detail string      `json:"detail"`
}

// CheckStatus is the verdict of one check.
type CheckStatus string

const (
	CheckPass CheckStatus = "pass"
	CheckFail CheckStatus = "fail"
	CheckInfo CheckStatus = "info" // worth knowing, not a broken invariant
	CheckSkip CheckStatus = "skip" // does not apply to this run
)

// The names of the audit's checks. Each says what breaks it; some faults
// necessarily break several (more winners than stock cannot have unique
// slots within 1..stock, nor add up with a remaining stock that is never
// negative).
const (
	// AuditWithinStock fails when the winners export holds more active
	// winners than the stock.
	AuditWithinStock = "winners_within_stock"
	// AuditEqualStock fails when the drop ends undersold: fewer winners
	// than stock (more is AuditWithinStock's) while demand lasted. It is
	// skipped when fewer users got a definite answer than the stock and
	// nothing said the drop sold out. Otherwise, with short = stock -
	// winners > 0 and freed = the holds released or expired (live stats),
	// it fails when
	//   - short > freed: slots were never given to anyone (a coupon drop
	//     has no releases, so any short fails), or
	//   - a claim was refused sold out while a slot was surely free: it
	//     was sent after its user had seen s holds released or expired,
	//     and at most w claims may have won before its answer came (each
	//     acknowledged claim and each claim without a definite answer
	//     that was sent before that answer, plus every claim in the live
	//     stats beyond the acknowledged ones, which other clients may
	//     have won), and stock - w + s > 0.
	// A short made only of slots released after the last such refusal
	// passes: they came back when nobody was claiming any more. dibs
	// records a release before it gives the slot back to the gate, so a
	// claim that reaches it in between (milliseconds) is refused
	// legitimately; only if that claim were the last of the run would it
	// show here.
	AuditEqualStock = "winners_equal_stock"
	// AuditUniqueSlots fails when a slot appears twice among the winners
	// or lies outside 1..stock.
	AuditUniqueSlots = "unique_slots"
	// AuditPerUserLimit fails when a user holds more active winning
	// claims than the drop's per-user limit.
	AuditPerUserLimit = "per_user_limit"
	// AuditAckedPresent fails when a claim acknowledged with 201 or 200 is
	// missing from the winners (and its read does not say it was released
	// or expired since, nor did its user see that), is exported with
	// another user or slot, or was acknowledged twice with different
	// users or slots.
	AuditAckedPresent = "acked_winners_present"
	// AuditUnacked: winners the client never saw acknowledged. It fails
	// when such a winner belongs to one of this run's users none of whose
	// claims went without a definite answer: the server told the user
	// something else (sold out, 503 with Retry-After: not processed) or
	// the user never claimed. Winners of users whose claim got no answer
	// (timeout, connection lost, 5xx, 503 unavailable), and of users of
	// other runs, are information: such a claim may have won.
	AuditUnacked = "unacked_winners"
	// AuditStockConserved fails when the winners plus the remaining stock
	// of the live stats differ from the stock, or the live stats count
	// other active claims than the export holds.
	AuditStockConserved = "stock_conserved"
	// AuditIdempotent fails when a user who had won and claimed again
	// (per-user limit 1, or the same Idempotency-Key) got anything but its
	// claim back with 200.
	AuditIdempotent = "idempotent_claims"
	// AuditServerErrors fails on any 5xx except 503 with Retry-After, and
	// on a 429 without Retry-After.
	AuditServerErrors = "no_server_errors"
	// AuditFinalStates fails when a winner's state does not fit the
	// drop's kind (coupon: confirmed; purchase: held or paid), a claim
	// its user saw released or expired is still a winner, or the live
	// stats count other paid claims than the export.
	AuditFinalStates = "final_states"
	// AuditPayments (purchase drops) compares the paid claims with the
	// payment gateway's ledger (Config.PGSim; priced drops, whose charges
	// carry the claim id as key and "drop/claim" as reference). It fails
	// when a paid winner has no paid charge, or a paid charge of the drop
	// has no live claim (none among the winners: the money was taken for
	// a released claim). Payments still pending after PayWait are
	// information.
	AuditPayments = "payments_settled"
)

// lookupConns bounds the reads of missing claims in flight: every missing
// claim is read (a purchase drop under load can release thousands of holds
// the users never saw end), a few at a time so the audit does not become a
// spike of its own.
const lookupConns = 16

// export is what the audit learnt from the winners export.
type export struct {
	winners int64
	states  map[string]int64
	// Each kind of fault: how many, and a few examples.
	nOut, nDup, nOver, nMismatch, nReleased int64
	outOfRange, dupSlots, overLimit         []string
	mismatch                                []string // acknowledged claims exported with another user or slot
	released                                []string // claims the user saw released or expired, still exported
	seen                                    map[string]bool
	unacked                                 int64
	explained                               int64    // unacked winners whose user had a claim without an answer
	phantoms                                []string // unacked winners of this run's users told something else
	nPhantom                                int64
	paid                                    map[string]bool // claim id → paid, for every winner (purchase drops)
}

func (r *runner) audit(ctx context.Context) (Audit, error) {
	var stats adminDrop
	if err := r.getAdmin(ctx, "/v1/admin/drops/"+r.drop.ID, &stats); err != nil {
		return Audit{}, fmt.Errorf("read drop stats: %w", err)
	}
	ex, err := r.readWinners(ctx)
	if err != nil {
		return Audit{}, err
	}
	b := r.book
	b.mu.Lock()
	defer b.mu.Unlock()

	stock := r.drop.Stock
	var checks []Check
	add := func(name string, ok bool, detail string, args ...any) {
		s := CheckPass
		if !ok {
			s = CheckFail
		}
		checks = append(checks, Check{Name: name, Status: s, Detail: fmt.Sprintf(detail, args...)})
	}

	add(AuditWithinStock, ex.winners <= stock, "%d winners, stock %d", ex.winners, stock)

	var demand int64
	for _, f := range b.users {
		if f&userDecided != 0 {
			demand++
		}
	}
	checks = append(checks, r.equalStock(ex, stats, demand))

	add(AuditUniqueSlots, ex.nOut == 0 && ex.nDup == 0,
		"%d slots out of 1..%d, %d duplicated%s", ex.nOut, stock, ex.nDup, examples(append(ex.outOfRange, ex.dupSlots...)))
	add(AuditPerUserLimit, ex.nOver == 0,
		"%d users over the limit of %d%s", ex.nOver, r.drop.PerUserLimit, examples(ex.overLimit))

	lost, gone, err := r.missingAcks(ctx, ex.seen)
	if err != nil {
		return Audit{}, err
	}
	add(AuditAckedPresent, len(lost) == 0 && ex.nMismatch == 0 && len(b.ackClash) == 0,
		"%d acknowledged, %d missing, %d with another user or slot, %d acknowledged twice differently, %d released since%s",
		len(b.acked), len(lost), ex.nMismatch, len(b.ackClash), gone, examples(append(append(lost, ex.mismatch...), b.ackClash...)))

	unacked := Check{Name: AuditUnacked, Status: CheckPass, Detail: "every winner was acknowledged to the client"}
	if ex.unacked > 0 {
		unacked.Status = CheckInfo
		unacked.Detail = fmt.Sprintf("%d winners the client never saw acknowledged; %d of them belong to users whose claim got no answer (timeout, connection error, 5xx), %d to users of other runs",
			ex.unacked, ex.explained, ex.unacked-ex.explained-ex.nPhantom)
		if ex.nPhantom > 0 {
			unacked.Status = CheckFail
			unacked.Detail += fmt.Sprintf(", %d to users of this run every claim of whom got a definite answer%s", ex.nPhantom, examples(ex.phantoms))
		}
	}
	checks = append(checks, unacked)

	active := stats.Held + stats.Confirmed + stats.Paid
	add(AuditStockConserved, ex.winners+stats.Remaining == stock && active == ex.winners,
		"%d winners + %d remaining = %d of stock %d; live stats count %d active", ex.winners, stats.Remaining, ex.winners+stats.Remaining, stock, active)

	if b.seconds == 0 {
		checks = append(checks, Check{Name: AuditIdempotent, Status: CheckSkip, Detail: "no winner claimed a second time"})
	} else {
		add(AuditIdempotent, b.secondBroken == 0, "%d of %d second claims by winners got their claim back%s",
			b.seconds-b.secondBroken, b.seconds, examples(b.brokenSample))
	}

	var bad []string
	for status, n := range b.serverErrs {
		bad = append(bad, fmt.Sprintf("%d×%d", n, status))
	}
	sort.Strings(bad)
	add(AuditServerErrors, len(bad) == 0, "answers breaking the contract: %s", orNone(bad))

	checks = append(checks, r.finalStates(ex, stats))
	if r.drop.purchase() {
		pay, err := r.payments(ctx, ex)
		if err != nil {
			return Audit{}, err
		}
		checks = append(checks, pay)
	}

	a := Audit{OK: true, Checks: checks}
	for _, c := range checks {
		if c.Status == CheckFail {
			a.OK = false
		}
	}
	return a, nil
}

// equalStock judges an undersell (see AuditEqualStock); the caller holds
// the book's lock.
func (r *runner) equalStock(ex *export, stats adminDrop, demand int64) Check {
	b := r.book
	stock := r.drop.Stock
	short := stock - ex.winners
	freed := stats.Released + stats.Expired
	c := Check{Name: AuditEqualStock, Status: CheckPass}
	switch {
	case short <= 0:
		c.Detail = fmt.Sprintf("%d winners, stock %d", ex.winners, stock)
		return c
	case demand < stock && b.soldOutAt.IsZero():
		c.Status = CheckSkip
		c.Detail = fmt.Sprintf("demand %d users below stock %d", demand, stock)
		return c
	case short > freed:
		c.Status = CheckFail
		c.Detail = fmt.Sprintf("%d winners, stock %d: %d slots never given to anyone (%d holds released or expired), demand %d users",
			ex.winners, stock, short-freed, freed, demand)
		return c
	}
	// Claims may have won that the book never saw acknowledged: those of
	// other clients, at most every claim of the live stats beyond ours.
	others := max(stats.Held+stats.Confirmed+stats.Paid+stats.Released+stats.Expired-int64(len(b.acked)), 0)
	won := slices.SortedFunc(slices.Values(b.mayHaveWon), time.Time.Compare)
	seen := slices.SortedFunc(slices.Values(b.releasesSeen), time.Time.Compare)
	var refused int
	var first string
	for _, x := range b.lateRefusals {
		s, _ := slices.BinarySearchFunc(seen, x.sent, func(t, sent time.Time) int {
			if t.After(sent) {
				return 1
			}
			return -1
		}) // holds seen released at or before the claim was sent
		w, _ := slices.BinarySearchFunc(won, x.done, time.Time.Compare) // claims sent before its answer
		if free := stock - int64(w) - others + int64(s); free > 0 {
			refused++
			if first == "" {
				first = fmt.Sprintf("; e.g. a claim sent %s after the first release seen was refused sold out with at least %d slots free (%d claims may have won before its answer, %d holds seen released before it was sent)",
					x.sent.Sub(seen[0]).Round(time.Millisecond), free, int64(w)+others, s)
			}
		}
	}
	c.Detail = fmt.Sprintf("%d winners, stock %d, %d holds released or expired", ex.winners, stock, freed)
	if refused > 0 {
		c.Status = CheckFail
		c.Detail += fmt.Sprintf("; demand lasted: %d claims refused sold out while a released slot was free%s", refused, first)
		return c
	}
	c.Detail += fmt.Sprintf("; the %d slots short came back after the last claim that could have taken them", short)
	return c
}

// payments judges the payments of a purchase drop (see AuditPayments).
func (r *runner) payments(ctx context.Context, ex *export) (Check, error) {
	b := r.book
	c := Check{Name: AuditPayments, Status: CheckPass, Detail: fmt.Sprintf("settled: %s", orNone(countList(b.payments)))}
	var broken []string
	switch {
	case r.cfg.PGSim == "":
		c.Detail += "; no gateway ledger to compare (pgsim)"
	case r.drop.Price == 0:
		c.Detail += "; a free drop charges nothing"
	default:
		charges, err := r.readLedger(ctx)
		if err != nil {
			return Check{}, err
		}
		paidCharge := make(map[string]bool)
		var nCharges, nNoClaim, nNoCharge int
		for _, ch := range charges {
			if !strings.HasPrefix(ch.Reference, r.drop.ID+"/") {
				continue // another drop's
			}
			nCharges++
			if ch.Status != "paid" {
				continue
			}
			paidCharge[ch.Key] = true
			if _, live := ex.paid[ch.Key]; !live {
				nNoClaim++
				broken = appendSample(broken, fmt.Sprintf("charge %s paid, its claim is no winner", ch.Key))
			}
		}
		var ids []string
		for id, paid := range ex.paid {
			if paid && !paidCharge[id] {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		nNoCharge = len(ids)
		for _, id := range ids {
			broken = appendSample(broken, fmt.Sprintf("claim %s paid without a paid charge", id))
		}
		c.Detail += fmt.Sprintf("; ledger: %d charges of the drop, %d paid claims without a paid charge, %d paid charges without a live claim",
			nCharges, nNoCharge, nNoClaim)
	}
	if len(broken) > 0 {
		c.Status = CheckFail
		c.Detail += examples(broken)
		return c, nil
	}
	if b.unsettled > 0 {
		c.Status = CheckInfo
		c.Detail += fmt.Sprintf("; %d still pending after %s", b.unsettled, r.cfg.PayWait)
	}
	return c, nil
}

// charge is an entry of the gateway's ledger, as far as the audit reads it.
type charge struct {
	Key       string `json:"key"`
	Status    string `json:"status"`
	Reference string `json:"reference"`
}

// readLedger reads every charge of the payment gateway simulator.
func (r *runner) readLedger(ctx context.Context) ([]charge, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	var charges []charge
	if err := doJSON(ctx, r.cfg.Client, strings.TrimRight(r.cfg.PGSim, "/")+"/ledger", "", http.MethodGet, nil, &charges); err != nil {
		return nil, fmt.Errorf("read the gateway's ledger: %w", err)
	}
	return charges, nil
}

// finalStates checks the winners' states against the drop's kind and what
// the users saw of their payments.
func (r *runner) finalStates(ex *export, stats adminDrop) Check {
	allowed := map[string]bool{string(dibs.ClaimConfirmed): true}
	if r.drop.purchase() {
		allowed = map[string]bool{string(dibs.ClaimHeld): true, string(dibs.ClaimPaid): true}
	}
	var wrong []string
	for s, n := range ex.states {
		if !allowed[s] {
			wrong = append(wrong, fmt.Sprintf("%d %q", n, s))
		}
	}
	sort.Strings(wrong)
	ok := len(wrong) == 0 && ex.nReleased == 0
	detail := fmt.Sprintf("winners by state: %s", orNone(countList(ex.states)))
	if len(wrong) > 0 {
		detail += "; not allowed for a " + r.drop.Kind + " drop: " + strings.Join(wrong, ", ")
	}
	if ex.nReleased > 0 {
		detail += fmt.Sprintf("; %d claims seen released or expired are still winners%s", ex.nReleased, examples(ex.released))
	}
	if r.drop.purchase() && stats.Paid != ex.states[string(dibs.ClaimPaid)] {
		ok = false
		detail += fmt.Sprintf("; live stats count %d paid", stats.Paid)
	}
	return Check{Name: AuditFinalStates, Status: map[bool]CheckStatus{true: CheckPass, false: CheckFail}[ok], Detail: detail}
}

// readWinners streams the winners export and checks it line by line against
// the acknowledged claims. Its memory grows with the winners, not the users.
func (r *runner) readWinners(ctx context.Context) (*export, error) {
	var resp *http.Response
	err := r.adminCall(func(base string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/admin/drops/"+r.drop.ID+"/winners", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+r.cfg.AdminToken)
		req.Header.Set("Accept", "application/x-ndjson")
		resp, err = r.cfg.Client.Do(req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read winners: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read winners: %s", resp.Status)
	}

	b := r.book
	b.mu.Lock()
	defer b.mu.Unlock()
	ex := &export{states: make(map[string]int64), seen: make(map[string]bool)}
	if r.drop.purchase() {
		ex.paid = make(map[string]bool)
	}
	slots := make([]uint64, (r.drop.Stock+64)/64)
	perUser := make(map[string]int)
	dec := json.NewDecoder(resp.Body)
	for {
		var w winner
		if err := dec.Decode(&w); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("read winners: line %d: %w", ex.winners+1, err)
		}
		ex.winners++
		ex.states[w.State]++
		if ex.paid != nil {
			ex.paid[w.ClaimID] = w.State == string(dibs.ClaimPaid)
		}
		if w.Slot < 1 || w.Slot > r.drop.Stock {
			ex.nOut++
			ex.outOfRange = appendSample(ex.outOfRange, fmt.Sprintf("slot %d (claim %s)", w.Slot, w.ClaimID))
		} else if bit := uint64(1) << (w.Slot % 64); slots[w.Slot/64]&bit != 0 {
			ex.nDup++
			ex.dupSlots = appendSample(ex.dupSlots, fmt.Sprintf("slot %d again (claim %s)", w.Slot, w.ClaimID))
		} else {
			slots[w.Slot/64] |= bit
		}
		perUser[w.UserID]++
		if perUser[w.UserID] == r.drop.PerUserLimit+1 {
			ex.nOver++
			ex.overLimit = appendSample(ex.overLimit, w.UserID)
		}
		a, ok := b.acked[w.ClaimID]
		if !ok {
			ex.unacked++
			switch u, ours := r.userIndex(w.UserID); {
			case ours && b.users[u]&userUnknown != 0:
				ex.explained++
			case ours:
				ex.nPhantom++
				ex.phantoms = appendSample(ex.phantoms, fmt.Sprintf("claim %s of %s slot %d", w.ClaimID, w.UserID, w.Slot))
			}
			continue
		}
		ex.seen[w.ClaimID] = true
		if want := r.userID(int(a.user)); w.UserID != want || w.Slot != a.slot {
			ex.nMismatch++
			ex.mismatch = appendSample(ex.mismatch, fmt.Sprintf("claim %s: told %s slot %d, exported %s slot %d", w.ClaimID, want, a.slot, w.UserID, w.Slot))
		}
		if a.settled {
			ex.nReleased++
			ex.released = appendSample(ex.released, fmt.Sprintf("claim %s seen %s", w.ClaimID, a.state))
		}
	}
	return ex, nil
}

// missingAcks returns the acknowledged claims absent from the export. Those
// the users saw released or expired are expected to be absent; the others
// are read one by one with their owner's passport, lookupConns at a time,
// because a hold may have been released since (gone counts those).
func (r *runner) missingAcks(ctx context.Context, seen map[string]bool) (lost []string, gone int, err error) {
	b := r.book
	var ids []string
	for id, a := range b.acked {
		if seen[id] {
			continue
		}
		if a.settled {
			gone++
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ended := make([]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(lookupConns)
	for i, id := range ids {
		a := b.acked[id]
		g.Go(func() error {
			var c claimBody
			err := r.adminCall(func(base string) error {
				return doJSON(gctx, r.cfg.Client, base+"/v1/claims/"+id, r.passports[a.user], http.MethodGet, nil, &c)
			})
			ended[i] = err == nil && c.State != "" && !dibs.ClaimState(c.State).Active()
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	for i, id := range ids {
		if ended[i] {
			gone++
			continue
		}
		a := b.acked[id]
		lost = append(lost, fmt.Sprintf("claim %s of %s slot %d", id, r.userID(int(a.user)), a.slot))
	}
	return lost, gone, nil
}

// userIndex is the inverse of userID.
func (r *runner) userIndex(id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, r.cfg.UserPrefix)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= len(r.passports) {
		return 0, false
	}
	return i, true
}

func examples(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return "; e.g. " + strings.Join(s[:min(len(s), maxSamples)], "; ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func countList(m map[string]int64) []string {
	var s []string
	for k, n := range m {
		s = append(s, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(s)
	return s
}
