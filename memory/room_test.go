package memory_test

import (
	"testing"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/roomtest"
)

func TestRoomConformance(t *testing.T) {
	t.Parallel()
	roomtest.Run(t, func(t *testing.T) dibs.Room { return memory.NewRoom() })
}
