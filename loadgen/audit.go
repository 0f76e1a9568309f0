package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

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

// The names of the audit's checks.
const (
	// AuditWithinStock: no more active winners than stock.
	AuditWithinStock = "winners_within_stock"
	// AuditEqualStock: when demand reached the stock, every slot has a
	// winner (purchase drops: or was given back by a released hold).
	AuditEqualStock = "winners_equal_stock"
	// AuditUniqueSlots: slots are unique and within 1..stock.
	AuditUniqueSlots = "unique_slots"
	// AuditPerUserLimit: no user holds more than the per-user limit.
	AuditPerUserLimit = "per_user_limit"
	// AuditAckedPresent: every claim acknowledged with 201 or 200 is among
	// the winners with the same user and slot, unless its hold was released.
	AuditAckedPresent = "acked_winners_present"
	// AuditUnacked: winners the client never saw acknowledged. Legitimate
	// when the client timed out, so it is information, never a failure.
	AuditUnacked = "unacked_winners"
	// AuditStockConserved: winners plus remaining equal the stock, and the
	// drop's live stats count the same winners as the export.
	AuditStockConserved = "stock_conserved"
	// AuditIdempotent: a user who had won and claimed again got the same
	// claim back (200).
	AuditIdempotent = "idempotent_claims"
	// AuditServerErrors: no 5xx except 503 with Retry-After, and every 429
	// carries Retry-After.
	AuditServerErrors = "no_server_errors"
	// AuditFinalStates: winners are in an active state fit for the drop's
	// kind, and what users saw of their payments agrees with the export.
	AuditFinalStates = "final_states"
	// AuditPayments: every payment reached paid, released or expired within
	// PayWait (purchase drops).
	AuditPayments = "payments_settled"
)

// maxLookups bounds the reads of missing claims one by one.
const maxLookups = 100

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
	explained                               int64 // unacked winners whose user had a claim without an answer
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
	freed := stats.Released + stats.Expired
	switch {
	case demand < stock && b.soldOutAt.IsZero():
		checks = append(checks, Check{Name: AuditEqualStock, Status: CheckSkip,
			Detail: fmt.Sprintf("demand %d users below stock %d", demand, stock)})
	case r.drop.purchase():
		add(AuditEqualStock, ex.winners == stock || ex.winners < stock && stock-ex.winners <= freed,
			"%d winners, stock %d, %d holds released or expired, demand %d users", ex.winners, stock, freed, demand)
	default:
		add(AuditEqualStock, ex.winners == stock, "%d winners, stock %d, demand %d users", ex.winners, stock, demand)
	}

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
		unacked.Detail = fmt.Sprintf("%d winners the client never saw acknowledged; %d of them belong to users whose claim got no answer (timeout, connection error, 5xx)",
			ex.unacked, ex.explained)
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
		pay := Check{Name: AuditPayments, Status: CheckPass, Detail: fmt.Sprintf("settled: %s", orNone(countList(b.payments)))}
		if b.unsettled > 0 {
			pay.Status = CheckInfo
			pay.Detail += fmt.Sprintf("; %d still pending after %s", b.unsettled, r.cfg.PayWait)
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
			if u, ours := r.userIndex(w.UserID); ours && b.users[u]&userUnknown != 0 {
				ex.explained++
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
// the users saw released or expired are expected to be absent; of the others
// it reads up to maxLookups with their owner's passport, because a hold may
// have been released since (gone counts those).
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
	for i, id := range ids {
		if i >= maxLookups {
			lost = append(lost, ids[i:]...)
			break
		}
		a := b.acked[id]
		var c claimBody
		err := r.adminCall(func(base string) error {
			return doJSON(ctx, r.cfg.Client, base+"/v1/claims/"+id, r.passports[a.user], http.MethodGet, nil, &c)
		})
		if err == nil && !dibs.ClaimState(c.State).Active() && c.State != "" {
			gone++
			continue
		}
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
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
