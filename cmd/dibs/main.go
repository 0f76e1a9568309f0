// Command dibs runs first-come-first-served drops: exactly N winners out of
// a spike of hundreds of thousands, durable before anyone is told.
//
//	dibs serve    run a node
//	dibs demo     run the whole event on this machine and check it
//	dibs load     fire a spike at any dibs server and audit the winners
//	dibs pgsim    run a payment-gateway simulator
//	dibs passport print a passport for trying the API by hand
//	dibs version  print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "dibs:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for usage errors and 1 for everything else.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

type usageError struct{ error }

const usage = `dibs runs first-come-first-served drops.

Usage:
  dibs serve [flags]    run a node (dibs serve -h for flags)
  dibs demo [flags]     run a whole event on this machine and check every invariant
  dibs load [flags]     fire a spike at a drop on any dibs server and audit it
  dibs pgsim [flags]    run a payment-gateway simulator (docs/payments.md)
  dibs passport USER    print a passport for USER signed with DIBS_PASSPORT_SECRET
  dibs version          print the version

Every flag may also be set as an environment variable DIBS_<FLAG>,
e.g. --postgres as DIBS_POSTGRES.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "load":
		return runLoad(ctx, rest, stdout, stderr)
	case "pgsim":
		return runPgsim(ctx, rest, stdout, stderr)
	case "passport":
		return runPassport(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "dibs", versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
