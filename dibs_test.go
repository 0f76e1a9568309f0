package dibs_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
)

func TestValidTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"alice", true},
		{"사용자-ünïcödé", true},
		{"a b", true},
		{"", false},
		{strings.Repeat("k", dibs.MaxIdempotencyKey+1), false},
		{"a\x00b", false},
		{"a\rb", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"a\u0085b", false}, // NEL, Cc
		{"a\u2028b", false}, // line separator, Zl
		{"a\u2029b", false}, // paragraph separator, Zp
		{"a\u202eb", false}, // right-to-left override, Cf
		{"a\u200bb", false}, // zero-width space, Cf
		{"a\ufeffb", false}, // byte order mark, Cf
		{"a\xffb", false},   // not UTF-8
	}
	for _, tt := range tests {
		if got := dibs.ValidUserID(tt.in); got != tt.want {
			t.Errorf("ValidUserID(%q) = %v, want %v", tt.in, got, tt.want)
		}
		if got := dibs.ValidIdempotencyKey(tt.in); got != tt.want {
			t.Errorf("ValidIdempotencyKey(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestTitleCharacters(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		title string
		ok    bool
	}{
		{"Pepero Day – 빼빼로 🎁", true},
		{"a\r\nb", false},
		{"a\u2028b", false},
		{"a\u202eb", false},
		{"a\x00b", false},
		{"a\u0085b", false},
	} {
		d := &dibs.Drop{ID: "d", Title: tt.title, Kind: dibs.KindCoupon, Stock: 1}
		d.Normalize(time.Now())
		if err := d.Validate(); (err == nil) != tt.ok || (err != nil && dibs.ErrorCode(err) != dibs.EINVALID) {
			t.Errorf("title %q: %v, want ok=%v (else invalid)", tt.title, err, tt.ok)
		}
	}
}
