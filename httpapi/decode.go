package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/dibs-io/dibs"
)

// Body limits, in bytes.
const (
	MaxAdminBody = 16 << 10
	// MaxNoBody is the largest body a route that takes no input (a claim,
	// a join, a payment request, an admin action) accepts: none, or an
	// empty JSON object with a little white space. Larger bodies, and
	// bodies of unknown length (chunked), are refused before a byte of
	// them is read.
	MaxNoBody = 64
)

// readFirst reads the request's body in full, before the request takes
// any bounded place (its route class's, a claim worker's), so that none of
// them waits on a client sending slowly: a client that trickles a body
// holds its own connection, nothing that others need. Only admin creations and
// changes take a body (takesBody) (at most MaxAdminBody bytes); every other request
// takes none, or an empty JSON object of at most MaxNoBody bytes. It
// answers and returns false if the body is refused.
func (s *Server) readFirst(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength == 0 {
		return true
	}
	var err error
	if takesBody(r) {
		err = bufferBody(w, r, MaxAdminBody)
	} else {
		err = readNoBody(r)
	}
	if err != nil {
		// The rest of a body refused unread is not worth waiting for.
		w.Header().Set("Connection", "close")
		writeError(w, r, s.log, err)
		return false
	}
	return true
}

// createDropPath is the path of the drop creation, which takes a body.
const createDropPath = "/v1/admin/drops"

// takesBody reports whether r is one of the admin requests that take a
// body: the creation of a drop, and the changes (PATCH) of a drop or of
// the switches.
func takesBody(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost:
		return r.URL.Path == createDropPath
	case http.MethodPatch:
		return strings.HasPrefix(r.URL.Path, "/v1/admin/")
	}
	return false
}

// readNoBody refuses a body over MaxNoBody bytes or of unknown length
// (chunked) at once, reads a small one, and accepts it if it is empty or
// an empty JSON object.
func readNoBody(r *http.Request) error {
	switch {
	case r.ContentLength < 0:
		return dibs.Errorf(dibs.EINVALID, "This request takes no body: send none, or a Content-Length of at most %d bytes (not chunked).", MaxNoBody)
	case r.ContentLength > MaxNoBody:
		return dibs.Errorf(dibs.ETOOLARGE, "This request takes no body; the body is larger than %d bytes.", MaxNoBody)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxNoBody+1))
	if err != nil {
		return dibs.Errorf(dibs.EINVALID, "The body could not be read.")
	}
	r.Body = http.NoBody
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	var none struct{}
	return decodeBytes(b, &none)
}

// bufferBody reads a body of at most max bytes, of any length or none,
// into memory, where decodeJSON finds it.
func bufferBody(w http.ResponseWriter, r *http.Request, max int64) error {
	if r.ContentLength > max {
		return dibs.Errorf(dibs.ETOOLARGE, "The body is larger than %d bytes.", max)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return dibs.Errorf(dibs.ETOOLARGE, "The body is larger than %d bytes.", max)
	case err != nil:
		return dibs.Errorf(dibs.EINVALID, "The body could not be read.")
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// decodeJSON decodes the request's body, read in full before (readFirst),
// into v strictly (see decodeBytes). Content-Type is not checked: the body
// must be JSON whatever it says (curl -d sends a form type by default). An
// empty body leaves v as it is when emptyOK is set.
func decodeJSON(r *http.Request, v any, emptyOK bool) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return dibs.Errorf(dibs.EINVALID, "The body could not be read.")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if emptyOK {
			return nil
		}
		return dibs.Errorf(dibs.EINVALID, "A JSON body is required.")
	}
	return decodeBytes(b, v)
}

// decodeBytes decodes b into v strictly: one JSON value, no unknown
// fields, and no member name twice in an object, however it is spelled
// (encoding/json matches names without regard to case and keeps the last
// of duplicates, so {"id":"a","ID":"b"} would mean "b"). Its errors speak
// of the JSON, not of Go types.
func decodeBytes(b []byte, v any) error {
	if err := checkNames(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var parse *time.ParseError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return dibs.Errorf(dibs.EINVALID, "The body is not valid JSON (it ends early).")
	case errors.As(err, &syntax):
		return dibs.Errorf(dibs.EINVALID, "The body is not valid JSON (at byte %d).", syntax.Offset)
	case errors.As(err, &typ) && typ.Field == "":
		return dibs.Errorf(dibs.EINVALID, "The body must be %s.", jsonType(typ.Type))
	case errors.As(err, &typ):
		return dibs.Errorf(dibs.EINVALID, "Field %q must be %s.", typ.Field, jsonType(typ.Type))
	case errors.As(err, &parse):
		return dibs.Errorf(dibs.EINVALID, "Times must be RFC 3339, such as \"2026-12-01T03:00:00Z\".")
	case err != nil && strings.HasPrefix(err.Error(), "json: unknown field "):
		return dibs.Errorf(dibs.EINVALID, "The body has an unknown field %s.", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case err != nil:
		return dibs.Errorf(dibs.EINVALID, "The body is not acceptable.")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return dibs.Errorf(dibs.EINVALID, "The body must hold one JSON value.")
	}
	return nil
}

// jsonType names the JSON a Go type is decoded from, for API users.
func jsonType(t reflect.Type) string {
	if t == reflect.TypeFor[time.Time]() {
		return "an RFC 3339 time string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonType(t.Elem())
	}
	return "of another type"
}

// checkNames walks b's tokens and refuses an object that names a member
// twice, exactly or in another case. Syntax errors are left to the
// decoder, which says where they are.
func checkNames(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	// One entry per open object or array: the names seen (nil in arrays),
	// and whether the next string token is a name.
	type level struct {
		names  map[string]bool
		atName bool
	}
	var stack []level
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the end, or a syntax error the decoder reports
		}
		var top *level
		if n := len(stack); n > 0 {
			top = &stack[n-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, level{names: map[string]bool{}, atName: true})
				continue
			case '[':
				stack = append(stack, level{})
				continue
			default:
				stack = stack[:len(stack)-1]
				if n := len(stack); n > 0 && stack[n-1].names != nil {
					stack[n-1].atName = true // the value ended; a name follows
				}
				continue
			}
		case string:
			if top != nil && top.names != nil && top.atName {
				k := foldName(t)
				if top.names[k] {
					return dibs.Errorf(dibs.EINVALID, "The body names field %q more than once (names are matched without regard to case).", t)
				}
				top.names[k] = true
				top.atName = false
				continue
			}
		}
		if top != nil && top.names != nil {
			top.atName = true // a scalar value ended; a name follows
		}
	}
}

// foldName maps every letter of s to the smallest rune of its case-folding
// orbit, so names that encoding/json would match map to the same string
// (K, k and the Kelvin sign K among them).
func foldName(s string) string {
	return strings.Map(func(r rune) rune {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		return m
	}, s)
}
