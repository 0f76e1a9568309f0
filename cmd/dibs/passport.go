package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/passport"
)

// runPassport is `dibs passport USER`: it signs a passport for USER with
// DIBS_PASSPORT_SECRET, as the main service does, for trying the API by
// hand and for rehearsals. It takes the node's passport policy flags (and
// their DIBS_PASSPORT_* variables), so that what it prints is accepted.
func runPassport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dibs passport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ttl := fs.Duration("ttl", time.Hour, "how long the passport is valid")
	issuer := fs.String("passport-issuer", "", "iss of the passport, as the node's --passport-issuer")
	audience := fs.String("passport-audience", "", "aud of the passport, as the node's --passport-audience")
	maxLife := fs.Duration("passport-max-lifetime", passport.DefaultMaxLifetime, "longest --ttl, as the node's --passport-max-lifetime")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: dibs passport [--ttl 1h] USER\n\nPrints a passport (JWT, HS256) for USER signed with DIBS_PASSPORT_SECRET.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := flagsFromEnv(fs, os.LookupEnv); err != nil {
		return err
	}
	if *ttl <= 0 || *ttl > *maxLife {
		return usageError{fmt.Errorf("--ttl must be positive and at most --passport-max-lifetime (%s): a node refuses a longer passport", *maxLife)}
	}
	if fs.NArg() != 1 || !dibs.ValidUserID(fs.Arg(0)) {
		fs.Usage()
		return usageError{errors.New("give one user id of 1 to 128 printable bytes")}
	}
	secret := os.Getenv("DIBS_PASSPORT_SECRET")
	if len(secret) < passport.MinSecretLen {
		return usageError{fmt.Errorf("DIBS_PASSPORT_SECRET must be set to at least %d bytes", passport.MinSecretLen)}
	}
	tok, err := passport.IssueFor([]byte(secret), fs.Arg(0), *issuer, *audience, time.Now(), *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
