package live

import (
	"context"
	"sync"
)

// Bus carries the nodes' reports: every node publishes its own each second
// and reads everyone's. Reports are opaque bytes to the Bus.
// Implementations are safe for concurrent use.
type Bus interface {
	// Publish stores node's newest report in place of its previous one.
	Publish(ctx context.Context, node string, report []byte) error
	// Reports returns the newest report of every node the Bus still
	// keeps, by node id.
	Reports(ctx context.Context) (map[string][]byte, error)
}

// MemoryBus is the Bus of a single node, or of nodes in one process.
type MemoryBus struct {
	mu      sync.Mutex
	reports map[string][]byte
}

var _ Bus = (*MemoryBus)(nil)

// NewMemoryBus returns an empty in-memory Bus.
func NewMemoryBus() *MemoryBus { return &MemoryBus{reports: map[string][]byte{}} }

// Publish implements Bus.
func (b *MemoryBus) Publish(_ context.Context, node string, report []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reports[node] = report
	return nil
}

// Reports implements Bus.
func (b *MemoryBus) Reports(context.Context) (map[string][]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string][]byte, len(b.reports))
	for k, v := range b.reports {
		out[k] = v
	}
	return out, nil
}
