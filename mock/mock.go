// Package mock has test doubles of the dibs services. Each method calls
// the function field named after it (Drop calls DropFn), which a test sets
// to what it needs; calling a method whose field is nil panics, so a test
// learns at once that the code asked for something it did not expect.
//
// The doubles are as safe for concurrent use as the functions a test gives
// them.
package mock

import (
	"context"

	"github.com/dibs-io/dibs"
)

var (
	_ dibs.DropService    = (*DropService)(nil)
	_ dibs.ClaimService   = (*ClaimService)(nil)
	_ dibs.Claiming       = (*Claiming)(nil)
	_ dibs.QueueService   = (*QueueService)(nil)
	_ dibs.PaymentService = (*PaymentService)(nil)
	_ dibs.JobService     = (*JobService)(nil)
	_ dibs.SwitchService  = (*SwitchService)(nil)
	_ dibs.ActionLog      = (*ActionLog)(nil)
	_ dibs.LiveService    = (*LiveService)(nil)
)

// DropService is a dibs.DropService.
type DropService struct {
	CreateDropFn   func(ctx context.Context, d *dibs.Drop) error
	DropFn         func(id string) (*dibs.Drop, error)
	DropsFn        func() []*dibs.Drop
	ViewFn         func(ctx context.Context, id string) (dibs.DropView, error)
	StatsFn        func(ctx context.Context, id string) (dibs.DropStats, error)
	SetStatusFn    func(ctx context.Context, id string, s dibs.Status) error
	SetAdmissionFn func(ctx context.Context, id string, a dibs.Admission) (*dibs.Drop, error)
	WinnersFn      func(ctx context.Context, dropID string, fn func(*dibs.Claim) error) error
	ReadyFn        func(ctx context.Context) error
}

func (s *DropService) CreateDrop(ctx context.Context, d *dibs.Drop) error {
	return s.CreateDropFn(ctx, d)
}

func (s *DropService) Drop(id string) (*dibs.Drop, error) { return s.DropFn(id) }

func (s *DropService) Drops() []*dibs.Drop { return s.DropsFn() }

func (s *DropService) View(ctx context.Context, id string) (dibs.DropView, error) {
	return s.ViewFn(ctx, id)
}

func (s *DropService) Stats(ctx context.Context, id string) (dibs.DropStats, error) {
	return s.StatsFn(ctx, id)
}

func (s *DropService) SetStatus(ctx context.Context, id string, st dibs.Status) error {
	return s.SetStatusFn(ctx, id, st)
}

func (s *DropService) SetAdmission(ctx context.Context, id string, a dibs.Admission) (*dibs.Drop, error) {
	return s.SetAdmissionFn(ctx, id, a)
}

func (s *DropService) Winners(ctx context.Context, dropID string, fn func(*dibs.Claim) error) error {
	return s.WinnersFn(ctx, dropID, fn)
}

func (s *DropService) Ready(ctx context.Context) error { return s.ReadyFn(ctx) }

// ClaimService is a dibs.ClaimService.
type ClaimService struct {
	ClaimFn     func(ctx context.Context, req dibs.ClaimRequest) (dibs.Claiming, error)
	FindClaimFn func(ctx context.Context, id, userID string) (*dibs.Claim, error)
}

func (s *ClaimService) Claim(ctx context.Context, req dibs.ClaimRequest) (dibs.Claiming, error) {
	return s.ClaimFn(ctx, req)
}

func (s *ClaimService) FindClaim(ctx context.Context, id, userID string) (*dibs.Claim, error) {
	return s.FindClaimFn(ctx, id, userID)
}

// Claiming is a dibs.Claiming.
type Claiming struct {
	WaitFn func(ctx context.Context) (*dibs.Claim, bool, error)
}

func (c *Claiming) Wait(ctx context.Context) (*dibs.Claim, bool, error) { return c.WaitFn(ctx) }

// Won returns a Claiming whose Wait returns c, created.
func Won(c *dibs.Claim, created bool) *Claiming {
	return &Claiming{WaitFn: func(context.Context) (*dibs.Claim, bool, error) { return c, created, nil }}
}

// QueueService is a dibs.QueueService.
type QueueService struct {
	JoinFn     func(ctx context.Context, d *dibs.Drop, userID string) (dibs.QueueStatus, error)
	VerifyFn   func(ctx context.Context, d *dibs.Drop, userID, ticket string) (dibs.HeldTicket, error)
	StatusOfFn func(ctx context.Context, d *dibs.Drop, t dibs.HeldTicket) (dibs.QueueStatus, error)
	InfoFn     func(ctx context.Context, d *dibs.Drop) (dibs.QueueInfo, error)
	ChangedFn  func(dropID string) <-chan struct{}
}

func (s *QueueService) Join(ctx context.Context, d *dibs.Drop, userID string) (dibs.QueueStatus, error) {
	return s.JoinFn(ctx, d, userID)
}

func (s *QueueService) Verify(ctx context.Context, d *dibs.Drop, userID, ticket string) (dibs.HeldTicket, error) {
	return s.VerifyFn(ctx, d, userID, ticket)
}

func (s *QueueService) StatusOf(ctx context.Context, d *dibs.Drop, t dibs.HeldTicket) (dibs.QueueStatus, error) {
	return s.StatusOfFn(ctx, d, t)
}

func (s *QueueService) Info(ctx context.Context, d *dibs.Drop) (dibs.QueueInfo, error) {
	return s.InfoFn(ctx, d)
}

func (s *QueueService) Changed(dropID string) <-chan struct{} { return s.ChangedFn(dropID) }

// PaymentService is a dibs.PaymentService.
type PaymentService struct {
	RequestPaymentFn func(ctx context.Context, claimID, userID string) (*dibs.Claim, error)
}

func (s *PaymentService) RequestPayment(ctx context.Context, claimID, userID string) (*dibs.Claim, error) {
	return s.RequestPaymentFn(ctx, claimID, userID)
}

// JobService is a dibs.JobService.
type JobService struct {
	JobCountsFn      func(ctx context.Context, dropID string) ([]dibs.JobCount, error)
	FailedWebhooksFn func(ctx context.Context, dropID string, limit int) ([]dibs.FailedJob, error)
	RetryFn          func(ctx context.Context, jobID int64) error
}

func (s *JobService) JobCounts(ctx context.Context, dropID string) ([]dibs.JobCount, error) {
	return s.JobCountsFn(ctx, dropID)
}

func (s *JobService) FailedWebhooks(ctx context.Context, dropID string, limit int) ([]dibs.FailedJob, error) {
	return s.FailedWebhooksFn(ctx, dropID, limit)
}

func (s *JobService) Retry(ctx context.Context, jobID int64) error { return s.RetryFn(ctx, jobID) }

// SwitchService is a dibs.SwitchService.
type SwitchService struct {
	SwitchesFn    func() dibs.Switches
	SetSwitchesFn func(ctx context.Context, change map[dibs.Switch]bool, by string) (dibs.Switches, error)
}

func (s *SwitchService) Switches() dibs.Switches { return s.SwitchesFn() }

func (s *SwitchService) SetSwitches(ctx context.Context, change map[dibs.Switch]bool, by string) (dibs.Switches, error) {
	return s.SetSwitchesFn(ctx, change, by)
}

// ActionLog is a dibs.ActionLog.
type ActionLog struct {
	AppendFn  func(ctx context.Context, a dibs.Action) error
	ActionsFn func(ctx context.Context, limit int) ([]dibs.Action, error)
}

func (l *ActionLog) Append(ctx context.Context, a dibs.Action) error { return l.AppendFn(ctx, a) }

func (l *ActionLog) Actions(ctx context.Context, limit int) ([]dibs.Action, error) {
	return l.ActionsFn(ctx, limit)
}

// LiveService is a dibs.LiveService.
type LiveService struct {
	SnapshotFn func(ctx context.Context) (dibs.LiveSnapshot, error)
	ChangedFn  func() <-chan struct{}
}

func (s *LiveService) Snapshot(ctx context.Context) (dibs.LiveSnapshot, error) {
	return s.SnapshotFn(ctx)
}

func (s *LiveService) Changed() <-chan struct{} { return s.ChangedFn() }
