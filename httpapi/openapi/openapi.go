// Package openapi holds the OpenAPI 3.1 document of dibs's HTTP API v1.
//
// openapi.yaml is the source, written by hand; JSON is the same document
// converted once, when the package is loaded, and served by the API at
// GET /openapi.json. YAML is the source because people read and review it;
// JSON is what tools fetch. The conversion keeps the order of every mapping,
// so the JSON reads like the YAML.
package openapi

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// YAML is the document as written.
//
//go:embed openapi.yaml
var YAML []byte

var doc = mustJSON(YAML)

// JSON returns the document as JSON. The slice is shared: do not change it.
func JSON() []byte { return doc }

// Handler serves the document as JSON.
func Handler() http.Handler {
	length := strconv.Itoa(len(doc))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", length)
		h.Set("Cache-Control", "public, max-age=300")
		w.Write(doc)
	})
}

func mustJSON(src []byte) []byte {
	b, err := ToJSON(src)
	if err != nil {
		panic(fmt.Sprintf("openapi: openapi.yaml: %v", err))
	}
	return b
}

// ToJSON converts a YAML document to JSON, keeping the order of mappings.
// Mapping keys must be strings; anchors and aliases are resolved.
func ToJSON(src []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var root, more yaml.Node
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) || len(root.Content) != 1 {
		return nil, errors.New("want one YAML document")
	}
	return appendNode(make([]byte, 0, len(src)), root.Content[0])
}

func appendNode(b []byte, n *yaml.Node) ([]byte, error) {
	var err error
	switch n.Kind {
	case yaml.AliasNode:
		return appendNode(b, n.Alias)
	case yaml.MappingNode:
		b = append(b, '{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				return nil, fmt.Errorf("line %d: mapping keys must be plain strings", k.Line)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k.Value)
			b = append(b, ':')
			if b, err = appendNode(b, v); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case yaml.SequenceNode:
		b = append(b, '[')
		for i, v := range n.Content {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendNode(b, v); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case yaml.ScalarNode:
		return appendScalar(b, n)
	}
	return nil, fmt.Errorf("line %d: unexpected YAML node", n.Line)
}

func appendScalar(b []byte, n *yaml.Node) ([]byte, error) {
	switch n.ShortTag() {
	case "!!str", "!!binary", "!!timestamp":
		return appendString(b, n.Value), nil
	case "!!null":
		return append(b, "null"...), nil
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return nil, err
		}
		return strconv.AppendBool(b, v), nil
	case "!!int":
		var v int64
		if err := n.Decode(&v); err != nil {
			return nil, err
		}
		return strconv.AppendInt(b, v, 10), nil
	case "!!float":
		var v float64
		if err := n.Decode(&v); err != nil {
			return nil, err
		}
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("line %d: %s has no JSON form", n.Line, n.Value)
		}
		return strconv.AppendFloat(b, v, 'g', -1, 64), nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML tag %s", n.Line, n.Tag)
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
