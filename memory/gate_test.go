package memory_test

import (
	"testing"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/gatetest"
	"github.com/dibs-io/dibs/memory"
)

func TestGateConformance(t *testing.T) {
	t.Parallel()
	gatetest.Run(t, func(t *testing.T) dibs.Gate { return memory.NewGate() })
}

func BenchmarkGate(b *testing.B) {
	gatetest.BenchmarkReserve(b, func(*testing.B) dibs.Gate { return memory.NewGate() })
}

func BenchmarkMutexReference(b *testing.B) { gatetest.BenchmarkMutexReference(b) }
