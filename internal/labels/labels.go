// Package labels parses and evaluates label selectors in the syntax users
// know from Kubernetes:
//
//	role=compute          equality (role==compute is the same)
//	env!=prod             inequality; also true when env is absent
//	gpu                   the key exists
//	!gpu                  the key does not exist
//	tier in (a,b)         the value is one of the set
//	tier notin (a,b)      the value is none of the set; also true when absent
//
// Requirements are joined with commas and all must hold. The empty selector
// matches everything.
//
// A parsed Selector is canonical: requirements are sorted and deduplicated and
// set values are sorted and deduplicated, so two selectors that mean the same
// thing compare equal with Equal and print the same with String.
package labels

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error this package returns, so callers can
// map any selector or label problem to a "bad request" with errors.Is.
var ErrInvalid = errors.New("invalid label")

// Operator is the comparison a Requirement makes.
type Operator string

const (
	Equals    Operator = "="
	NotEquals Operator = "!="
	Exists    Operator = "exists"
	NotExists Operator = "!"
	In        Operator = "in"
	NotIn     Operator = "notin"
)

// rank orders operators inside the canonical form.
func (o Operator) rank() int {
	switch o {
	case Exists:
		return 0
	case NotExists:
		return 1
	case Equals:
		return 2
	case NotEquals:
		return 3
	case In:
		return 4
	case NotIn:
		return 5
	}
	return 6
}

// Requirement is one comma-separated term of a selector. Values holds one
// value for Equals and NotEquals, none for Exists and NotExists, and a sorted
// set without duplicates for In and NotIn.
type Requirement struct {
	Key    string
	Op     Operator
	Values []string
}

// Matches reports whether the label set satisfies the requirement.
func (r Requirement) Matches(set map[string]string) bool {
	v, ok := set[r.Key]
	switch r.Op {
	case Exists:
		return ok
	case NotExists:
		return !ok
	case Equals:
		return ok && v == r.Values[0]
	case NotEquals:
		return !ok || v != r.Values[0]
	case In:
		return ok && slices.Contains(r.Values, v)
	case NotIn:
		return !ok || !slices.Contains(r.Values, v)
	}
	return false
}

func (r Requirement) String() string {
	switch r.Op {
	case Exists:
		return r.Key
	case NotExists:
		return "!" + r.Key
	case Equals, NotEquals:
		return r.Key + string(r.Op) + r.Values[0]
	default:
		return r.Key + " " + string(r.Op) + " (" + strings.Join(r.Values, ",") + ")"
	}
}

func compareRequirements(a, b Requirement) int {
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	if c := a.Op.rank() - b.Op.rank(); c != 0 {
		return c
	}
	return slices.Compare(a.Values, b.Values)
}

// Selector is a conjunction of requirements. The zero value matches every
// label set. It implements store.Selector.
type Selector struct {
	reqs []Requirement
}

// Everything returns the selector that matches every label set.
func Everything() Selector { return Selector{} }

// Matches reports whether every requirement holds for the label set.
func (s Selector) Matches(set map[string]string) bool {
	for _, r := range s.reqs {
		if !r.Matches(set) {
			return false
		}
	}
	return true
}

// Empty reports whether the selector has no requirements (matches everything).
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Requirements returns a copy of the selector's requirements in canonical order.
func (s Selector) Requirements() []Requirement {
	out := make([]Requirement, len(s.reqs))
	for i, r := range s.reqs {
		out[i] = Requirement{Key: r.Key, Op: r.Op, Values: slices.Clone(r.Values)}
	}
	return out
}

// String returns the canonical form, which Parse accepts and turns back into
// an equal Selector.
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// Equal reports whether two selectors have the same canonical requirements.
func (s Selector) Equal(o Selector) bool {
	return slices.EqualFunc(s.reqs, o.reqs, func(a, b Requirement) bool {
		return compareRequirements(a, b) == 0
	})
}

// SyntaxError reports where a selector could not be parsed.
type SyntaxError struct {
	Input string
	// Offset is the byte offset of the offending token; Column is Offset+1.
	Offset int
	Msg    string
	// Err is the underlying label validation error, if any.
	Err error
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("label selector %q: column %d: %s", e.Input, e.Offset+1, e.Msg)
}

// Unwrap lets errors.Is find ErrInvalid (and any validation cause).
func (e *SyntaxError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// Parse parses a selector. Whitespace around tokens is ignored.
func Parse(input string) (Selector, error) {
	p := parser{input: input}
	p.next()
	if p.tok.kind == tokEOF {
		return Selector{}, nil
	}
	var reqs []Requirement
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		reqs = append(reqs, r)
		switch p.tok.kind {
		case tokEOF:
			slices.SortFunc(reqs, compareRequirements)
			reqs = slices.CompactFunc(reqs, func(a, b Requirement) bool {
				return compareRequirements(a, b) == 0
			})
			return Selector{reqs: reqs}, nil
		case tokComma:
			p.next()
		default:
			return Selector{}, p.errorf(p.tok, nil, "unexpected %s after requirement, expected \",\" or end of selector", p.tok)
		}
	}
}

type tokKind int

const (
	tokEOF tokKind = iota
	tokWord
	tokComma
	tokLParen
	tokRParen
	tokEq     // = or ==
	tokNotEq  // !=
	tokBang   // !
	tokBadChr // a character that belongs to no token
)

type token struct {
	kind tokKind
	text string
	pos  int
}

func (t token) String() string {
	if t.kind == tokEOF {
		return "end of selector"
	}
	return fmt.Sprintf("%q", t.text)
}

type parser struct {
	input string
	pos   int
	tok   token
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '/'
}

func (p *parser) next() {
	for p.pos < len(p.input) && strings.IndexByte(" \t\r\n", p.input[p.pos]) >= 0 {
		p.pos++
	}
	start := p.pos
	if p.pos >= len(p.input) {
		p.tok = token{kind: tokEOF, pos: start}
		return
	}
	emit := func(k tokKind, n int) {
		p.pos += n
		p.tok = token{kind: k, text: p.input[start:p.pos], pos: start}
	}
	switch c := p.input[p.pos]; {
	case c == ',':
		emit(tokComma, 1)
	case c == '(':
		emit(tokLParen, 1)
	case c == ')':
		emit(tokRParen, 1)
	case c == '=':
		if strings.HasPrefix(p.input[p.pos:], "==") {
			emit(tokEq, 2)
		} else {
			emit(tokEq, 1)
		}
	case c == '!':
		if strings.HasPrefix(p.input[p.pos:], "!=") {
			emit(tokNotEq, 2)
		} else {
			emit(tokBang, 1)
		}
	case isWordByte(c):
		n := 0
		for p.pos+n < len(p.input) && isWordByte(p.input[p.pos+n]) {
			n++
		}
		emit(tokWord, n)
	default:
		// Report the whole (possibly multi-byte) character, not a lone byte.
		_, size := utf8.DecodeRuneInString(p.input[p.pos:])
		emit(tokBadChr, size)
	}
}

func (p *parser) errorf(at token, cause error, format string, args ...any) error {
	return &SyntaxError{Input: p.input, Offset: at.pos, Msg: fmt.Sprintf(format, args...), Err: cause}
}

func (p *parser) key() (string, error) {
	t := p.tok
	if t.kind != tokWord {
		return "", p.errorf(t, nil, "expected a label key, found %s", t)
	}
	if err := ValidateKey(t.text); err != nil {
		return "", p.errorf(t, err, "%v", err)
	}
	p.next()
	return t.text, nil
}

// value reads one value. An empty value is allowed after = and != (the
// label must be present with an empty value), which is why a missing word is
// not an error here.
func (p *parser) value() (string, error) {
	t := p.tok
	if t.kind != tokWord {
		return "", nil
	}
	if err := ValidateValue(t.text); err != nil {
		return "", p.errorf(t, err, "%v", err)
	}
	p.next()
	return t.text, nil
}

func (p *parser) requirement() (Requirement, error) {
	if p.tok.kind == tokBang {
		p.next()
		k, err := p.key()
		if err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: k, Op: NotExists}, nil
	}
	k, err := p.key()
	if err != nil {
		return Requirement{}, err
	}
	switch t := p.tok; t.kind {
	case tokEOF, tokComma:
		return Requirement{Key: k, Op: Exists}, nil
	case tokEq, tokNotEq:
		p.next()
		v, err := p.value()
		if err != nil {
			return Requirement{}, err
		}
		op := Equals
		if t.kind == tokNotEq {
			op = NotEquals
		}
		return Requirement{Key: k, Op: op, Values: []string{v}}, nil
	case tokWord:
		var op Operator
		switch t.text {
		case "in":
			op = In
		case "notin":
			op = NotIn
		default:
			return Requirement{}, p.errorf(t, nil, "unexpected %s after key %q, expected an operator (=, ==, !=, in, notin), \",\" or end of selector", t, k)
		}
		p.next()
		vals, err := p.set(op)
		if err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: k, Op: op, Values: vals}, nil
	default:
		return Requirement{}, p.errorf(t, nil, "unexpected %s after key %q, expected an operator (=, ==, !=, in, notin), \",\" or end of selector", t, k)
	}
}

func (p *parser) set(op Operator) ([]string, error) {
	if p.tok.kind != tokLParen {
		return nil, p.errorf(p.tok, nil, "expected \"(\" after %q, found %s", op, p.tok)
	}
	p.next()
	var vals []string
	for {
		if p.tok.kind != tokWord {
			// Empty members would make "in (a,)" ambiguous with a typo, so a
			// set member must be a non-empty value.
			return nil, p.errorf(p.tok, nil, "expected a value in the %q set, found %s", op, p.tok)
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		switch p.tok.kind {
		case tokComma:
			p.next()
		case tokRParen:
			p.next()
			slices.Sort(vals)
			return slices.Compact(vals), nil
		default:
			return nil, p.errorf(p.tok, nil, "unexpected %s in the %q set, expected \",\" or \")\"", p.tok, op)
		}
	}
}

const maxNameLen = 63
const maxPrefixLen = 253

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validName checks the shared rule of key names and non-empty values:
// at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric.
func validName(s string) string {
	if len(s) > maxNameLen {
		return fmt.Sprintf("is %d characters long, the limit is %d", len(s), maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Sprintf("contains %q; only letters, digits, '.', '_' and '-' are allowed", rune(c))
		}
	}
	if !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return "must start and end with a letter or digit"
	}
	return ""
}

// ValidateKey checks a label key: an optional DNS subdomain prefix and "/",
// then a name of at most 63 characters of [A-Za-z0-9._-] that starts and ends
// with a letter or digit. Examples: "role", "drover.io/rack".
func ValidateKey(key string) error {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if name == "" {
		return fmt.Errorf("%w: key %q: name part is empty", ErrInvalid, key)
	}
	if msg := validName(name); msg != "" {
		return fmt.Errorf("%w: key %q: name %q %s", ErrInvalid, key, name, msg)
	}
	if hasPrefix {
		if msg := validDNSSubdomain(prefix); msg != "" {
			return fmt.Errorf("%w: key %q: prefix %q %s", ErrInvalid, key, prefix, msg)
		}
	}
	return nil
}

// validDNSSubdomain follows RFC 1123: lower-case labels of [a-z0-9-], each
// starting and ending alphanumeric, joined by dots, at most 253 characters.
func validDNSSubdomain(s string) string {
	if s == "" {
		return "is empty (drop the \"/\" or add a DNS prefix such as example.com/)"
	}
	if len(s) > maxPrefixLen {
		return fmt.Sprintf("is %d characters long, the limit is %d", len(s), maxPrefixLen)
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" {
			return "has an empty DNS label"
		}
		if len(label) > 63 {
			return fmt.Sprintf("has a DNS label of %d characters, the limit is 63", len(label))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Sprintf("contains %q; a DNS prefix allows only lower-case letters, digits, '-' and '.'", rune(c))
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "has a DNS label that starts or ends with '-'"
		}
	}
	return ""
}

// ValidateValue checks a label value: empty, or at most 63 characters of
// [A-Za-z0-9._-] starting and ending with a letter or digit.
func ValidateValue(value string) error {
	if value == "" {
		return nil
	}
	if msg := validName(value); msg != "" {
		return fmt.Errorf("%w: value %q %s", ErrInvalid, value, msg)
	}
	return nil
}

// ValidateSet checks every key and value of a label set, so a write with a
// bad label is refused before it reaches the store.
func ValidateSet(set map[string]string) error {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same first error every time
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return err
		}
		if err := ValidateValue(set[k]); err != nil {
			return fmt.Errorf("label %q: %w", k, err)
		}
	}
	return nil
}
