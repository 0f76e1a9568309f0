// Package apispec checks HTTP requests and responses against the API's
// OpenAPI document (package api), for tests: a handler that answers with
// a status, header or body the document does not describe fails them.
//
// It validates with libopenapi-validator, which implements OpenAPI 3.1 and
// its JSON Schema 2020-12 dialect (type arrays, const, examples);
// docs/dependencies.md says why that library.
package apispec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/dibs-io/dibs/httpapi/openapi"
)

// Spec validates against one document. Safe for concurrent use.
type Spec struct {
	mu sync.Mutex // the validator's caches are not documented as safe
	v  validator.Validator
}

var (
	loadOnce sync.Once
	loaded   *Spec
	loadErr  error
)

// Load returns the Spec of openapi.JSON, built once.
func Load() (*Spec, error) {
	loadOnce.Do(func() { loaded, loadErr = New(openapi.JSON()) })
	return loaded, loadErr
}

// New returns a Spec for an OpenAPI document (JSON or YAML). It fails if
// the document does not parse or does not validate against the OpenAPI
// 3.1 schema.
func New(doc []byte) (*Spec, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("parse document: %w", err)
	}
	// Strict mode also reports members and headers the document does not
	// declare: the document must describe everything the server sends.
	// Below the top of GET /openapi.json's answer (the document itself,
	// which has a schema of its own) members are not checked one by one;
	// no other answer has members of these names.
	v, errs := validator.NewValidator(d, config.WithStrictMode(), config.WithFormatAssertions(),
		// "x**" rather than "x.**": a key such as "/openapi.json" is
		// written x['/openapi.json'].
		config.WithStrictIgnorePaths("$.body.info**", "$.body.servers**", "$.body.tags**",
			"$.body.paths**", "$.body.webhooks**", "$.body.components**"))
	if len(errs) > 0 {
		return nil, fmt.Errorf("build validator: %w", errors.Join(errs...))
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("document is not valid OpenAPI: %w", joinValidation(verrs))
	}
	return &Spec{v: v}, nil
}

// Request checks req (method, path, parameters, security, body) against
// the document. The body is read and put back.
func (s *Spec) Request(req *http.Request) error {
	if err := rewind(&req.Body); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, errs := s.v.ValidateHttpRequest(req); !ok {
		return joinValidation(errs)
	}
	return rewind(&req.Body)
}

// Response checks that resp is an answer the document allows to req:
// status, headers, content type and body. Both bodies are read and put
// back, so the caller can read them afterwards.
func (s *Spec) Response(req *http.Request, resp *http.Response) error {
	if err := rewind(&req.Body); err != nil {
		return err
	}
	if err := rewind(&resp.Body); err != nil {
		return err
	}
	if err := s.response(req, resp); err != nil {
		return fmt.Errorf("%s %s → %d: %w", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	if err := rewind(&req.Body); err != nil {
		return err
	}
	return rewind(&resp.Body)
}

// response validates resp. An NDJSON body's schema is one line's: each
// line is validated as an answer of its own.
func (s *Spec) response(req *http.Request, resp *http.Response) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/x-ndjson" {
		if ok, errs := s.v.ValidateHttpResponse(req, resp); !ok {
			return joinValidation(errs)
		}
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	defer func() { resp.Body = &memBody{bytes.NewReader(body)} }()
	if len(body) == 0 {
		return nil // no lines: nothing to hold against a line's schema
	}
	for i, line := range bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
		one := *resp
		one.Body = &memBody{bytes.NewReader(line)}
		one.ContentLength = int64(len(line))
		if ok, errs := s.v.ValidateHttpResponse(req, &one); !ok {
			return fmt.Errorf("line %d: %w", i+1, joinValidation(errs))
		}
		if err := rewind(&req.Body); err != nil {
			return err
		}
	}
	return nil
}

// Exchange is Request and Response together.
func (s *Spec) Exchange(req *http.Request, resp *http.Response) error {
	if err := s.Request(req); err != nil {
		return fmt.Errorf("request %s %s: %w", req.Method, req.URL.Path, err)
	}
	return s.Response(req, resp)
}

// rewind replaces *body with an in-memory copy positioned at its start.
func rewind(body *io.ReadCloser) error {
	if *body == nil || *body == http.NoBody {
		return nil
	}
	if r, ok := (*body).(*memBody); ok {
		r.Seek(0, io.SeekStart)
		return nil
	}
	b, err := io.ReadAll(*body)
	(*body).Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	*body = &memBody{bytes.NewReader(b)}
	return nil
}

type memBody struct{ *bytes.Reader }

func (*memBody) Close() error { return nil }

func joinValidation(errs []*verrors.ValidationError) error {
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Message)
		if e.Reason != "" && e.Reason != e.Message {
			b.WriteString(": " + e.Reason)
		}
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, " [%s %s]", f.FieldPath, f.Reason)
		}
	}
	return errors.New(b.String())
}
