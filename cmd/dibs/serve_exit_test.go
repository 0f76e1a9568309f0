package main_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServeExitsWhenAddressTaken: dibs serve on an address already in use
// exits 1 and says why, instead of lingering without serving.
func TestServeExitsWhenAddressTaken(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	// Generous: starting a node on a starved machine takes seconds; one that
	// lingers never exits, and is killed when this ends.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "serve", "--addr", taken.Addr().String(), "--data", t.TempDir())
	cmd.Env = append(os.Environ(), "DIBS_PASSPORT_SECRET="+e2eSecret, "DIBS_ADMIN_TOKEN="+e2eAdmin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("dibs serve on a taken address = %v, want exit status 1; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "address already in use") {
		t.Fatalf("stderr does not say why:\n%s", stderr.String())
	}
}
