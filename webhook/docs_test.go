package webhook_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/webhook"
)

// TestDocsRequest: the example request in docs/webhooks.md is signed as
// the page says, so readers can check their verifier against it.
func TestDocsRequest(t *testing.T) {
	t.Parallel()
	page, err := os.ReadFile("../docs/webhooks.md")
	if err != nil {
		t.Fatal(err)
	}
	var header, body string
	for line := range strings.Lines(string(page)) {
		line = strings.TrimSuffix(line, "\n")
		if v, ok := strings.CutPrefix(line, webhook.SignatureHeader+": "); ok && header == "" {
			header = v
		}
		if strings.HasPrefix(line, `{"id":`) && body == "" {
			body = line
		}
	}
	if header == "" || body == "" {
		t.Fatalf("no example request in docs/webhooks.md (header %q, body %q)", header, body)
	}
	ts, err := strconv.ParseInt(strings.TrimPrefix(strings.Split(header, ",")[0], "t="), 10, 64)
	if err != nil {
		t.Fatalf("header %q: %v", header, err)
	}
	if err := webhook.Verify([]byte("whsec_example"), header, []byte(body), time.Unix(ts, 0), 0); err != nil {
		t.Errorf("the documented request does not verify under whsec_example: %v", err)
	}
}
