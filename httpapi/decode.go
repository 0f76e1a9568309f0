package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/dibs-io/dibs"
)

// Body limits, in bytes.
const (
	MaxAdminBody = 16 << 10
	MaxClaimBody = 1 << 10
)

// decodeJSON reads r's body into v strictly: at most max bytes, one JSON
// value, no unknown fields. Content-Type is not checked: the body must be
// JSON whatever it says (curl -d sends a form type by default). An empty body leaves v as it is when
// emptyOK is set.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, max int64, emptyOK bool) error {
	body := http.MaxBytesReader(w, r.Body, max)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF) && emptyOK:
		return nil
	case errors.Is(err, io.EOF):
		return dibs.Errorf(dibs.EINVALID, "A JSON body is required.")
	case errors.As(err, &tooLarge):
		return dibs.Errorf(dibs.ETOOLARGE, "The body is larger than %d bytes.", max)
	case errors.As(err, &syntax):
		return dibs.Errorf(dibs.EINVALID, "The body is not valid JSON (at byte %d).", syntax.Offset)
	case errors.As(err, &typ):
		return dibs.Errorf(dibs.EINVALID, "Field %q must be %s.", typ.Field, typ.Type)
	case err != nil:
		// Unknown fields and the like: encoding/json's message names the field.
		return dibs.Errorf(dibs.EINVALID, "The body is not acceptable: %s.", strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if errors.As(err, &tooLarge) {
			return dibs.Errorf(dibs.ETOOLARGE, "The body is larger than %d bytes.", max)
		}
		return dibs.Errorf(dibs.EINVALID, "The body must hold one JSON value.")
	}
	return nil
}

// decodeNoBody accepts the empty body, or an empty JSON object of at most
// MaxClaimBody bytes, for routes that take no input; anything else is an
// EINVALID or ETOOLARGE error. No body is the usual case, and skips the
// decoder.
func decodeNoBody(w http.ResponseWriter, r *http.Request) error {
	if r.ContentLength == 0 {
		return nil
	}
	var body struct{}
	return decodeJSON(w, r, &body, MaxClaimBody, true)
}
