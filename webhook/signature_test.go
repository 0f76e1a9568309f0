package webhook_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/webhook"
)

var (
	secret    = []byte("whsec_test_1")
	newSecret = []byte("whsec_test_2")
	sentAt    = time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC)
	payload   = []byte(`{"id":"notify_winner:01j9zq4","type":"notify_winner","created_at":"2026-11-11T11:00:00Z","data":{}}`)
)

// TestSignFormat pins the header to the documented scheme, computed here
// independently of the package.
func TestSignFormat(t *testing.T) {
	t.Parallel()
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("1794394800." + string(payload)))
	want := "t=1794394800,v1=" + hex.EncodeToString(m.Sum(nil))
	if got := webhook.Sign(secret, sentAt, payload); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	valid := webhook.Sign(secret, sentAt, payload)
	otherV1 := webhook.Sign(newSecret, sentAt, payload)[len("t=1794394800,"):]
	tests := []struct {
		name      string
		secret    []byte
		header    string
		body      []byte
		now       time.Time
		tolerance time.Duration
		want      error // nil: verifies
	}{
		{"round trip", secret, valid, payload, sentAt, 0, nil},
		{"spaces after commas", secret, strings.ReplaceAll(valid, ",", ", "), payload, sentAt, 0, nil},
		{"unknown scheme ignored", secret, valid + ",v0=abc", payload, sentAt, 0, nil},
		{"tampered body", secret, valid, []byte(strings.Replace(string(payload), "01j9zq4", "01j9zq5", 1)), sentAt, 0, webhook.ErrNoMatch},
		{"body with a byte more", secret, valid, append([]byte(payload), ' '), sentAt, 0, webhook.ErrNoMatch},
		{"wrong secret", newSecret, valid, payload, sentAt, 0, webhook.ErrNoMatch},
		{"empty secret", nil, valid, payload, sentAt, 0, webhook.ErrNoSecret},
		{"timestamp changed", secret, strings.Replace(valid, "t=1794394800", "t=1794394801", 1), payload, sentAt, 0, webhook.ErrNoMatch},
		{"signature not hex", secret, "t=1794394800,v1=zz", payload, sentAt, 0, webhook.ErrNoMatch},
		{"signature truncated", secret, valid[:len(valid)-2], payload, sentAt, 0, webhook.ErrNoMatch},
		{"upper-case hex", secret, "t=1794394800,v1=" + strings.ToUpper(valid[len("t=1794394800,v1="):]), payload, sentAt, 0, nil},

		{"within default tolerance, late", secret, valid, payload, sentAt.Add(5 * time.Minute), 0, nil},
		{"stale", secret, valid, payload, sentAt.Add(5*time.Minute + time.Second), 0, webhook.ErrTimestamp},
		{"from the future", secret, valid, payload, sentAt.Add(-5*time.Minute - time.Second), 0, webhook.ErrTimestamp},
		{"negative tolerance is the default", secret, valid, payload, sentAt.Add(4 * time.Minute), -time.Second, nil},
		{"own tolerance", secret, valid, payload, sentAt.Add(11 * time.Second), 10 * time.Second, webhook.ErrTimestamp},
		{"own tolerance, within", secret, valid, payload, sentAt.Add(9 * time.Second), 10 * time.Second, nil},

		{"rotation: old secret", secret, valid + "," + otherV1, payload, sentAt, 0, nil},
		{"rotation: new secret", newSecret, valid + "," + otherV1, payload, sentAt, 0, nil},
		{"rotation: new first", secret, "t=1794394800," + otherV1 + "," + valid[len("t=1794394800,"):], payload, sentAt, 0, nil},
		{"rotation: neither", []byte("whsec_other"), valid + "," + otherV1, payload, sentAt, 0, webhook.ErrNoMatch},

		{"empty header", secret, "", payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"no timestamp", secret, valid[len("t=1794394800,"):], payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"no signature", secret, "t=1794394800", payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"only another scheme", secret, "t=1794394800,v0=abc", payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"timestamp twice", secret, "t=1794394800," + valid, payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"timestamp not a number", secret, strings.Replace(valid, "t=1794394800", "t=soon", 1), payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"negative timestamp", secret, strings.Replace(valid, "t=1794394800", "t=-1", 1), payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"signed timestamp", secret, strings.Replace(valid, "t=1794394800", "t=+1794394800", 1), payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"leading zero", secret, strings.Replace(valid, "t=1794394800", "t=01794394800", 1), payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"timestamp overflows", secret, strings.Replace(valid, "t=1794394800", "t=99999999999999999999", 1), payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"element without =", secret, valid + ",v1", payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"semicolons", secret, strings.ReplaceAll(valid, ",", ";"), payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"too many signatures", secret, "t=1794394800" + strings.Repeat(",v1=00", 8) + "," + valid[len("t=1794394800,"):], payload, sentAt, 0, webhook.ErrMalformedHeader},
		{"header too long", secret, valid + ",x=" + strings.Repeat("a", 5000), payload, sentAt, 0, webhook.ErrMalformedHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := webhook.Verify(tt.secret, tt.header, tt.body, tt.now, tt.tolerance)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Verify(%q) = %v, want %v", tt.header, err, tt.want)
			}
		})
	}
}

// FuzzVerify feeds Verify arbitrary headers and bodies. It must not panic,
// must accept what Sign makes, and must never accept a header for a body
// other than the one it signs.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1794394800, 0)
	valid := webhook.Sign(secret, now, payload)
	f.Add(valid, payload)
	f.Add(valid+","+webhook.Sign(newSecret, now, payload)[len("t=1794394800,"):], payload)
	f.Add("t=1794394800,v1=", []byte{})
	f.Add("t=,v1=00,v1=,=,,", []byte("x"))
	f.Add(" t = 1 , v1 = ff ", []byte("{}"))
	f.Add("t=9223372036854775807,v1=00", []byte("{}"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := webhook.Verify(secret, header, body, now, 0)
		if err != nil && !errors.Is(err, webhook.ErrMalformedHeader) && !errors.Is(err, webhook.ErrNoMatch) && !errors.Is(err, webhook.ErrTimestamp) {
			t.Fatalf("Verify(%q) = %v, not one of the documented errors", header, err)
		}
		if err == nil {
			if webhook.Verify(secret, header, append(bytes.Clone(body), 'x'), now, 0) == nil {
				t.Fatalf("header %q verifies two different bodies", header)
			}
		}
		if err := webhook.Verify(secret, webhook.Sign(secret, now, body), body, now, 0); err != nil {
			t.Fatalf("Verify(Sign(body)) = %v", err)
		}
	})
}
