// Package loadgen rehearses a drop: it sends the spike of a first-come,
// first-served event to a dibs server over the HTTP API v1, then audits the
// drop's winners and reports what happened. It is the engine of `dibs load`
// (against any server) and `dibs demo` (in-process).
//
// # Open model
//
// Users arrive on a schedule (Profile: a spike or a constant rate) whether or
// not earlier users got an answer, as people do at 11:00. Every request is
// timed from its intended send time into an HdrHistogram, so a server stall
// shows in full instead of being hidden by a generator that waited for it
// (coordinated omission). When the generator cannot keep the schedule (the
// MaxInFlight bound is reached, no connection is free, or it falls behind) it
// logs a warning and counts missed starts, and still times those requests
// from when they were due.
//
// The measured requests go through a lean HTTP/1.1 keep-alive client over
// net.Conn (net/http for https targets or a caller's Client), so that the
// generator costs less than the server it measures. Each answer's
// Server-Timing is recorded beside the end-to-end latency, missed starts
// are told apart (the server's backlog, or the generator's own lag), and a
// run whose generator fell behind by itself is reported generator-bound
// (Report.Generator, Report.Headline).
//
// Passports are signed before the first arrival. Memory grows with the users
// by a passport and a byte each, with the winners, and with the requests in
// flight; a spike of 200,000 users stays within a few hundred megabytes.
//
// # Users
//
// Each user claims the drop once; RetryFraction of them claim again, as
// people who press twice do (with IdempotencyKeys, under the same key). On a
// queued drop users join the waiting room, follow their ticket (honouring
// poll_after_ms) and claim with the admission, or leave when it sells out or
// closes. Winners of a purchase drop pay and poll their claim until it is
// paid, released or expired. Answers 429 and 503 are retried after their
// Retry-After, a bounded number of times. Every answer is counted by request,
// status and problem code.
//
// With several Targets (nodes of one deployment) each user's requests go
// round-robin over them, starting at the user's index modulo the nodes, as
// behind a load balancer without affinity (Sticky keeps a user on one); a
// node that refuses a connection passes the request to the next. The setup
// and the audit read from the first node that answers.
//
// Regular traffic (RegularConfig) reads the drop and known claims at a steady
// rate before, during and after the spike, measured apart, so the report
// shows whether the regular service kept its latency; RegularProcess sends
// it from a process of its own (RunRegular) instead.
//
// A run may be split over several machines (Config.Shard, Config.StartAt):
// each shard sends its slice of the users and writes its result
// (Report.WriteShard), and Merge audits the union once.
//
// # Audit and report
//
// After the last user, Run reads the drop's live stats and its winners export
// over the admin API (and, given Config.PGSim, the payment gateway
// simulator's ledger) and checks each invariant by name (the Audit*
// constants, whose comments say what breaks each): no more winners than
// stock, and no fewer while demand lasted; unique slots within 1..stock; at
// most per_user_limit per user; every claim acknowledged with 201 or 200
// present with the same user and slot; no winner of a user told something
// else; the stock adding up; a winner's second claim given its claim back; no
// 5xx but 503 with Retry-After; states consistent with the drop's kind and
// the payments seen; a paid charge for every paid claim and none for a
// released one. A winner whose claim got no answer is information, not a
// failure: its claim may have timed out after it won.
//
// The Report serialises to JSON (WriteJSON), to a short text (Summary) and to
// a self-contained HTML page with charts (WriteHTML) that opens without a
// network.
//
// loadgentest is an in-memory fake server for tests of this package and its
// callers, including fault modes the audit must catch.
package loadgen
