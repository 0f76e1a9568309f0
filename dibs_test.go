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

func TestAdmissionValidate(t *testing.T) {
	q := func(rate int, pace string, lo, hi int) dibs.Admission {
		return dibs.Admission{Mode: dibs.AdmissionQueue, Rate: rate, Order: dibs.OrderFIFO, Pace: pace, MinRate: lo, MaxRate: hi}
	}
	for _, c := range []struct {
		name string
		a    dibs.Admission
		ok   bool
	}{
		{"direct", dibs.Admission{Mode: dibs.AdmissionDirect}, true},
		{"direct with a pace", dibs.Admission{Mode: dibs.AdmissionDirect, Pace: dibs.PaceAuto}, false},
		{"fixed", q(100, dibs.PaceFixed, 0, 0), true},
		{"fixed with bounds", q(100, dibs.PaceFixed, 1, 200), false},
		{"rate 0", q(0, dibs.PaceFixed, 0, 0), false},
		{"rate above the maximum", q(dibs.MaxAdmissionRate+1, dibs.PaceFixed, 0, 0), false},
		{"auto", q(100, dibs.PaceAuto, 10, 500), true},
		{"auto without bounds", q(100, dibs.PaceAuto, 0, 0), false},
		{"auto min above max", q(100, dibs.PaceAuto, 500, 10), false},
		{"auto max above the maximum", q(100, dibs.PaceAuto, 10, dibs.MaxAdmissionRate+1), false},
		{"auto rate outside its bounds", q(5, dibs.PaceAuto, 10, 500), false},
		{"unknown pace", q(100, "turbo", 0, 0), false},
	} {
		err := c.a.Validate()
		if (err == nil) != c.ok || (err != nil && dibs.ErrorCode(err) != dibs.EINVALID) {
			t.Errorf("%s: Validate() = %v, want ok=%v (EINVALID otherwise)", c.name, err, c.ok)
		}
	}
}
