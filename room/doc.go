// Package room is the waiting room in front of queued drops: a fair line
// that knows the stock.
//
// A room is two counters per drop, tickets issued and positions served,
// kept by a dibs.Room backend (memory, or Redis shared by every node). A
// person's ticket is a signed token carrying its number; the only state
// per person is a compact entry that makes joining twice give the same
// place. People who join before the opening are drawn in an order keyed
// by a seed that is committed to (its SHA-256 is public) before anyone
// joins and published at the opening, so anyone can recompute the order
// (Position); people who join later queue behind them in order of
// arrival.
//
// One node leads each room (a lease in the backend). Once per tick it
// admits the next people at the drop's admission rate, never more than the
// free slots minus the admissions still outstanding, and marks the room
// sold out the moment no slot can come back. Every node reads each room
// once per tick and answers status reads and streams from that view, so a
// poll costs no backend call while the wait lasts (once a ticket's
// admission has expired, one read tells a win from a turn that passed). An
// admission is a signed token bound to the user, the drop and an expiry; a
// claim on a queued drop needs one, and every claim with the same
// admission gets the same claim back. The room remembers which tickets
// won, so that a winner who comes back reads won.
package room
