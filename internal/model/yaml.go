package model

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits on what one YAML stream may expand to: aliases can make a small
// file huge ("billion laughs").
const (
	maxYAMLNodes = 1 << 20
	maxYAMLBytes = 64 << 20
	maxYAMLDepth = 200
)

// YAMLDocuments splits a YAML stream (content built into the binary) into
// its documents as JSON, as apply takes them.
func YAMLDocuments(b []byte) ([]json.RawMessage, error) {
	docs, err := SplitYAML(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(docs))
	for i, d := range docs {
		out[i] = d.JSON
	}
	return out, nil
}

// SplitYAML splits a multi-document YAML (or JSON) stream into JSON
// documents. Empty documents are skipped; Index counts the others from 1.
//
// Scalars follow YAML 1.2 as yaml.v3 reads them: yes, no, on, off and y
// stay strings. Duplicate keys, keys that are not scalars and values JSON
// cannot hold (.inf, .nan) are errors that give the line. Each document
// records the line of every key (Document.Lines) so that later errors
// about a field can point at it.
func SplitYAML(r io.Reader) ([]Document, error) {
	dec := yaml.NewDecoder(r)
	var docs []Document
	budget := &yamlBudget{nodes: maxYAMLNodes, bytes: maxYAMLBytes}
	for {
		index := len(docs) + 1
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, msg := yamlErrorLine(err)
			return nil, &DocError{Index: index, Line: line, Err: fmt.Errorf("invalid YAML: %s", msg)}
		}
		if node.Kind == 0 || (node.Kind == yaml.DocumentNode && len(node.Content) == 0) {
			continue
		}
		root := &node
		if root.Kind == yaml.DocumentNode {
			root = root.Content[0]
		}
		c := &yamlConverter{lines: map[string]int{}, budget: budget}
		v, err := c.convert(root, "", 0)
		if err != nil {
			var le *lineError
			if errors.As(err, &le) {
				return nil, &DocError{Index: index, Line: le.line, Err: le.err}
			}
			return nil, &DocError{Index: index, Line: root.Line, Err: err}
		}
		if v == nil {
			continue
		}
		js, err := json.Marshal(v)
		if err != nil {
			return nil, &DocError{Index: index, Line: root.Line, Err: err}
		}
		docs = append(docs, Document{Index: index, Line: root.Line, JSON: js, Lines: c.lines})
	}
	return docs, nil
}

// yamlErrorLine splits a yaml.v3 error ("yaml: line 6: ...") into its
// line (0 if it has none) and the rest of the message.
func yamlErrorLine(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	rest, ok := strings.CutPrefix(msg, "line ")
	if !ok {
		return 0, msg
	}
	num, after, ok := strings.Cut(rest, ": ")
	n, convErr := strconv.Atoi(num)
	if !ok || convErr != nil {
		return 0, msg
	}
	return n, after
}

type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }

func atLine(n *yaml.Node, format string, args ...any) error {
	return &lineError{line: n.Line, err: fmt.Errorf(format, args...)}
}

type yamlBudget struct{ nodes, bytes int }

type yamlConverter struct {
	lines  map[string]int
	budget *yamlBudget
	alias  int // > 0 while expanding an alias: its lines are not the path's
}

func (c *yamlConverter) note(path string, line int) {
	if c.alias == 0 && path != "" {
		if _, ok := c.lines[path]; !ok {
			c.lines[path] = line
		}
	}
}

// convert turns a node into a value json.Marshal writes as it should:
// map[string]any, []any, string, bool, nil, json.Number.
func (c *yamlConverter) convert(n *yaml.Node, path string, depth int) (any, error) {
	if depth > maxYAMLDepth {
		return nil, atLine(n, "nested more than %d levels deep", maxYAMLDepth)
	}
	c.budget.nodes--
	if c.budget.nodes < 0 {
		return nil, atLine(n, "the YAML expands to more than %d values (too many aliases?)", maxYAMLNodes)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.convert(n.Content[0], path, depth+1)
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, atLine(n, "unknown alias *%s", n.Value)
		}
		c.alias++
		defer func() { c.alias-- }()
		return c.convert(n.Alias, path, depth+1)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			c.note(p, item.Line)
			v, err := c.convert(item, p, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		return c.mapping(n, path, depth)
	case yaml.ScalarNode:
		c.budget.bytes -= len(n.Value)
		if c.budget.bytes < 0 {
			return nil, atLine(n, "the YAML expands to more than %d bytes (too many aliases?)", maxYAMLBytes)
		}
		return scalar(n)
	}
	return nil, atLine(n, "unsupported YAML node")
}

func (c *yamlConverter) mapping(n *yaml.Node, path string, depth int) (any, error) {
	out := make(map[string]any, len(n.Content)/2)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		key, err := mapKey(k)
		if err != nil {
			return nil, err
		}
		if _, dup := out[key]; dup {
			return nil, atLine(k, "key %q appears twice in the same mapping", key)
		}
		p := key
		if path != "" {
			p = path + "." + key
		}
		c.note(p, k.Line)
		val, err := c.convert(v, p, depth+1)
		if err != nil {
			return nil, err
		}
		out[key] = val
	}
	// Merged keys (<<: *base) fill in what the mapping does not set; of
	// several merged mappings the first wins.
	for _, m := range merges {
		sources := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			sources = m.Content
		}
		for _, src := range sources {
			v, err := c.convert(src, path, depth+1)
			if err != nil {
				return nil, err
			}
			mv, ok := v.(map[string]any)
			if !ok {
				return nil, atLine(src, "<< merges mappings only")
			}
			for k, val := range mv {
				if _, set := out[k]; !set {
					out[k] = val
				}
			}
		}
	}
	return out, nil
}

// mapKey gives a scalar key as the string JSON needs.
func mapKey(k *yaml.Node) (string, error) {
	if k.Kind == yaml.AliasNode && k.Alias != nil {
		k = k.Alias
	}
	if k.Kind != yaml.ScalarNode {
		return "", atLine(k, "a mapping key must be a plain value, not a list or mapping")
	}
	v, err := scalar(k)
	if err != nil {
		return "", err
	}
	switch x := v.(type) {
	case nil:
		if k.Value == "" {
			return "", atLine(k, "empty mapping key")
		}
		return k.Value, nil
	case string:
		return x, nil
	case json.Number:
		return string(x), nil
	}
	return k.Value, nil
}

// scalar resolves a scalar as yaml.v3 does, keeping numbers as written when
// JSON can hold them so that large integers keep every digit.
func scalar(n *yaml.Node) (any, error) {
	switch tag := n.ShortTag(); tag {
	case "!!str", "!!timestamp":
		return n.Value, nil
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, atLine(n, "%v", err)
		}
		return b, nil
	case "!!int", "!!float":
		if isJSONNumber(n.Value) {
			return json.Number(n.Value), nil
		}
		if tag == "!!int" {
			var i int64
			if err := n.Decode(&i); err == nil {
				return json.Number(strconv.FormatInt(i, 10)), nil
			}
			var u uint64
			if err := n.Decode(&u); err == nil {
				return json.Number(strconv.FormatUint(u, 10)), nil
			}
		}
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, atLine(n, "%q is not a number JSON can hold", n.Value)
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, atLine(n, "%s has no JSON form: quote it if you mean a string", n.Value)
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
	case "!!binary":
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(n.Value), ""))
		if err != nil {
			return nil, atLine(n, "bad !!binary value: %v", err)
		}
		if !utf8.Valid(b) {
			return nil, atLine(n, "a !!binary value must decode to UTF-8 text")
		}
		return string(b), nil
	default:
		return nil, atLine(n, "unsupported YAML tag %s", tag)
	}
}

// isJSONNumber reports whether s is a number as JSON writes it.
func isJSONNumber(s string) bool {
	if s == "" {
		return false
	}
	i := 0
	if s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	start := i
	if n := digits(); n == 0 || (n > 1 && s[start] == '0') {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// LineOf returns the line of a field of the document ("script",
// "params.size", "tasks[2]"), or of a field whose path ends with it, or
// the document's first line.
func (d Document) LineOf(field string) (string, int) {
	if field == "" {
		return "", d.Line
	}
	if l, ok := d.Lines[field]; ok {
		return field, l
	}
	found, line := "", 0
	for p, l := range d.Lines {
		if strings.HasSuffix(p, "."+field) {
			if found != "" {
				return field, d.Line // ambiguous
			}
			found, line = p, l
		}
	}
	if found != "" {
		return found, line
	}
	return field, d.Line
}

// trimJSONSpace is the first non-space byte of b, or 0.
func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}
