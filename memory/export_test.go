package memory

// OnSoldOutPath makes fn run on each lock-free sold-out check, between the
// read of the user's holder and the read of the free slots: a test pauses
// a request there to force an interleaving. Set it before the gate is used.
func (g *Gate) OnSoldOutPath(fn func()) { g.soldOutPath = fn }
