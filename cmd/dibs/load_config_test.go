package main

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

// This package's test binary is not dibs: its runs send their regular
// traffic in-process (the end-to-end tests run the dibs binary).
func init() { loadSelf = func() (string, error) { return "", errors.New("not the dibs binary") } }

func TestLoadConfigReadsFlagsThenEnvironment(t *testing.T) {
	t.Parallel()
	env := testEnv(map[string]string{
		"DIBS_USERS": "500", "DIBS_SEED": "9", "DIBS_TARGET": "http://ignored",
		"DIBS_PASSPORT_SECRET": "secret", "DIBS_ADMIN_TOKEN": "token",
	})
	c, err := parseLoadConfig([]string{"--target", "http://a:1, http://b:2", "--drop", "d", "--max-retries", "0", "--settle", "0"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://a:1", "http://b:2"}; !slices.Equal(c.Targets, want) {
		t.Errorf("targets = %q, want %q (the command line wins over DIBS_TARGET)", c.Targets, want)
	}
	if c.Users != 500 || c.Seed != 9 {
		t.Errorf("users, seed = %d, %d; want 500, 9 from the environment", c.Users, c.Seed)
	}
	if c.PassportSecret != "secret" || c.AdminToken != "token" {
		t.Errorf("secrets not read from the environment")
	}
	g := c.loadgen(nil, nil)
	if g.MaxRetries >= 0 || g.SettleWait >= 0 {
		t.Errorf("max retries, settle = %d, %s; want negative (none) for the flags' 0", g.MaxRetries, g.SettleWait)
	}
	if g.Profile.Duration != 2*time.Second {
		t.Errorf("profile duration = %s, want the default 2s", g.Profile.Duration)
	}
	if err := g.Validate(); err != nil {
		t.Errorf("generator config invalid: %v", err)
	}
}

func TestLoadConfigRejects(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--drop", "d"},
		{"--target", " ", "--drop", "d"},
		{"--target", "http://a:1", "--drop", "d", "extra"},
	} {
		if _, err := parseLoadConfig(args, testEnv(nil), io.Discard); err == nil {
			t.Errorf("%q: accepted, want an error", args)
		}
	}
}
