package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/dibs-io/dibs/httpapi"
)

// adminLabelPattern is what an admin token's label may be: it names the
// operator in the action log and the server's log.
var adminLabelPattern = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// parseAdminTokens reads DIBS_ADMIN_TOKENS: label:token pairs separated by
// commas, such as "alice:tok1,bob:tok2". Only the form is checked here;
// Config.Validate checks labels, lengths and duplicates. Errors name the
// pair by its place, never a token.
func parseAdminTokens(s string) ([]httpapi.AdminToken, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []httpapi.AdminToken
	for i, pair := range strings.Split(s, ",") {
		label, token, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok {
			return nil, fmt.Errorf("DIBS_ADMIN_TOKENS: entry %d is not label:token", i+1)
		}
		out = append(out, httpapi.AdminToken{Label: label, Token: token})
	}
	return out, nil
}

// validateAdminTokens checks the node's admin tokens: at least one,
// DIBS_ADMIN_TOKEN (labelled "admin") and each of DIBS_ADMIN_TOKENS at
// least MinAdminTokenLen bytes, labels of adminLabelPattern, no label or
// token twice. Its errors never show a token.
func validateAdminTokens(token string, tokens []httpapi.AdminToken) error {
	if token == "" && len(tokens) == 0 {
		return fmt.Errorf("DIBS_ADMIN_TOKEN or DIBS_ADMIN_TOKENS must be set (tokens of at least %d bytes)", MinAdminTokenLen)
	}
	all := tokens
	if token != "" {
		if len(token) < MinAdminTokenLen {
			return fmt.Errorf("DIBS_ADMIN_TOKEN must be at least %d bytes", MinAdminTokenLen)
		}
		all = append([]httpapi.AdminToken{{Label: "admin", Token: token}}, tokens...)
	}
	labels := make(map[string]bool, len(all))
	secrets := make(map[string]bool, len(all))
	for _, t := range all {
		switch {
		case !adminLabelPattern.MatchString(t.Label):
			return fmt.Errorf("DIBS_ADMIN_TOKENS: label %q must match [a-z0-9_-]{1,32}", t.Label)
		case len(t.Token) < MinAdminTokenLen:
			return fmt.Errorf("DIBS_ADMIN_TOKENS: the token of %s must be at least %d bytes", t.Label, MinAdminTokenLen)
		case labels[t.Label]:
			return fmt.Errorf("DIBS_ADMIN_TOKENS: label %s is given twice (DIBS_ADMIN_TOKEN is labelled admin)", t.Label)
		case secrets[t.Token]:
			return errors.New("DIBS_ADMIN_TOKENS: " + t.Label + "'s token is given twice")
		}
		labels[t.Label], secrets[t.Token] = true, true
	}
	return nil
}
