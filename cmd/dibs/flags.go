package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// parseFlags parses args into fs, then sets every flag not given on the
// command line from its environment variable DIBS_<FLAG> (upper case,
// dashes as underscores), so the command line wins and a repeatable flag
// is not doubled.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	return flagsFromEnv(fs, os.LookupEnv)
}

// flagsFromEnv sets the flags of fs not set yet from DIBS_<FLAG>.
func flagsFromEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v, ok := lookup(name); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = usageError{fmt.Errorf("%s: %w", name, serr)}
			}
		}
	})
	return err
}

// envName is the environment variable of a flag: --postgres is DIBS_POSTGRES.
func envName(flag string) string {
	return "DIBS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
