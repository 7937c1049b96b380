package noderange

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// Limits that keep a mistyped or hostile expression from exhausting memory.
const (
	// MaxInputLen is the longest expression Parse accepts, in bytes.
	MaxInputLen = 1 << 20
	// MaxExpansion is the most names the ranges of one expression may
	// expand to, counted over all its terms and, for site-qualified terms,
	// over all their sites.
	MaxExpansion = 1_000_000
)

// ErrTooLarge is matched (with errors.Is) by the errors of expressions that
// exceed MaxInputLen or MaxExpansion.
var ErrTooLarge = errors.New("noderange: expression too large")

// SyntaxError reports an expression that does not follow the grammar.
type SyntaxError struct {
	Input string // the expression
	Pos   int    // 1-based byte position of the problem
	Msg   string // what was expected and what was found
	Err   error  // ErrTooLarge for limit errors, else nil
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("noderange: at %d: %s", e.Pos, e.Msg) }

func (e *SyntaxError) Unwrap() error { return e.Err }

type opKind uint8

const (
	opUnion opKind = iota
	opDiff
	opIntersect
)

// siteItem is one entry of a site qualifier: the keyword all, or a pattern.
type siteItem struct {
	all bool
	pat pattern
}

func (s siteItem) String() string {
	if s.all {
		return "all"
	}
	return s.pat.String()
}

// siteSpec is the SITES part of SITES%NODES.
type siteSpec struct {
	paren bool // written as (a,b,...)
	items []siteItem
}

func (s *siteSpec) String() string {
	if !s.paren {
		return s.items[0].String()
	}
	parts := make([]string, len(s.items))
	for i, it := range s.items {
		parts[i] = it.String()
	}
	return "(" + strings.Join(parts, ",") + ")"
}

type nodeKind uint8

const (
	nodeNames nodeKind = iota
	nodeAll
	nodeGroup
	nodeRegex
)

// nodeSpec is the NODES part of a term.
type nodeSpec struct {
	kind     nodeKind
	pat      pattern        // nodeNames
	key      string         // nodeGroup
	value    string         // nodeGroup
	hasValue bool           // nodeGroup: @key=value rather than @key
	reSrc    string         // nodeRegex: the text between the slashes
	re       *regexp.Regexp // nodeRegex: anchored to the whole name
}

func (n nodeSpec) String() string {
	switch n.kind {
	case nodeAll:
		return "all"
	case nodeGroup:
		if n.hasValue {
			return "@" + n.key + "=" + n.value
		}
		return "@" + n.key
	case nodeRegex:
		return "/" + n.reSrc + "/"
	}
	return n.pat.String()
}

type term struct {
	op    opKind    // how the term combines with what precedes it
	pos   int       // 1-based position of the term in the input
	sites *siteSpec // nil: the local site
	nodes nodeSpec
}

func (t term) String() string {
	if t.sites == nil {
		return t.nodes.String()
	}
	return t.sites.String() + "%" + t.nodes.String()
}

// bareWord returns the word of an unqualified plain name without brackets:
// such a term may turn out to be a site name (see the package doc).
func (t term) bareWord() (string, bool) {
	if t.sites != nil || t.nodes.kind != nodeNames {
		return "", false
	}
	return t.nodes.pat.literal()
}

// Expr is a parsed node range expression. Parse builds it from text without
// knowing which sites and nodes exist; Eval resolves it against a Universe.
type Expr struct {
	terms []term
	src   string // the text parsed, for error messages
	// names is the syntactic expansion of all terms, counted at parse time.
	names uint64
}

// String returns the expression in canonical form; parsing it gives back an
// equivalent expression.
func (e *Expr) String() string {
	var b strings.Builder
	for i, t := range e.terms {
		if i > 0 {
			switch t.op {
			case opUnion:
				b.WriteByte(',')
			case opDiff:
				b.WriteString(",-")
			case opIntersect:
				b.WriteByte('&')
			}
		}
		b.WriteString(t.String())
	}
	return b.String()
}

// Parse reads a node range expression (see the package documentation for
// the grammar). It checks syntax and range limits only; whether sites and
// nodes exist is up to Eval.
func Parse(s string) (*Expr, error) {
	if len(s) > MaxInputLen {
		return nil, &SyntaxError{Input: s, Pos: MaxInputLen + 1, Err: ErrTooLarge,
			Msg: fmt.Sprintf("expression is %d bytes long; the limit is %d", len(s), MaxInputLen)}
	}
	p := &parser{s: s}
	return p.expr()
}

type parser struct {
	s     string
	i     int
	names uint64
}

func (p *parser) errAt(i int, format string, args ...any) error {
	return &SyntaxError{Input: p.s, Pos: i + 1, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.i]
}

// found describes the input at p.i for error messages.
func (p *parser) found() string {
	if p.eof() {
		return "end of input"
	}
	r, _ := utf8.DecodeRuneInString(p.s[p.i:])
	return fmt.Sprintf("%q", r)
}

func (p *parser) skipSpace() {
	for !p.eof() {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) expr() (*Expr, error) {
	e := &Expr{}
	p.skipSpace()
	if p.eof() {
		return nil, p.errAt(p.i, "empty expression: expected a node name, 'all', '@group', '/regex/' or 'site%%nodes'")
	}
	if c := p.peek(); c == '-' || c == '!' {
		return nil, p.errAt(p.i, "%s excludes nodes but nothing comes before it: write the nodes to exclude from first, as in all,%cn1", p.found(), c)
	}
	op := opUnion
	for {
		t, err := p.term()
		if err != nil {
			return nil, err
		}
		t.op = op
		e.terms = append(e.terms, t)
		p.skipSpace()
		if p.eof() {
			break
		}
		opPos := p.i
		switch p.s[p.i] {
		case ',':
			p.i++
			p.skipSpace()
			op = opUnion
			if c := p.peek(); c == '-' || c == '!' {
				p.i++
				p.skipSpace()
				op = opDiff
			}
		case '!':
			p.i++
			p.skipSpace()
			op = opDiff
		case '&':
			p.i++
			p.skipSpace()
			op = opIntersect
		default:
			return nil, p.errAt(p.i, "expected ',', '!' or '&' after %q, found %s", t.String(), p.found())
		}
		if p.eof() {
			return nil, p.errAt(p.i, "expected a term after %q at %d, found end of input", p.s[opPos:p.i], opPos+1)
		}
	}
	e.names = p.names
	e.src = p.s
	return e, nil
}

func (p *parser) term() (term, error) {
	start := p.i
	t := term{pos: start + 1}
	c := p.peek()
	switch {
	case c == '(':
		ss, err := p.siteList()
		if err != nil {
			return t, err
		}
		if p.peek() != '%' {
			return t, p.errAt(p.i, "expected '%%' after the site list, found %s", p.found())
		}
		p.i++
		t.sites = ss
		if t.nodes, err = p.nodes(); err != nil {
			return t, err
		}
	case c == '@' || c == '/':
		var err error
		if t.nodes, err = p.nodes(); err != nil {
			return t, err
		}
	case c == '[' || isNameChar(c) && c != '-':
		item, err := p.siteOrName()
		if err != nil {
			return t, err
		}
		if p.peek() == '%' {
			p.i++
			t.sites = &siteSpec{items: []siteItem{item}}
			if t.nodes, err = p.nodes(); err != nil {
				return t, err
			}
		} else if item.all {
			t.nodes = nodeSpec{kind: nodeAll}
		} else {
			t.nodes = nodeSpec{kind: nodeNames, pat: item.pat}
		}
	default:
		return t, p.errAt(p.i, "expected a node name, 'all', '@group', '/regex/' or 'site%%nodes', found %s", p.found())
	}
	if p.peek() == '%' {
		return t, p.errAt(p.i, "unexpected '%%': a term has at most one site qualifier, and only names, 'all' or a (list) can qualify")
	}
	if err := p.charge(t, start); err != nil {
		return t, err
	}
	return t, nil
}

// charge adds the syntactic expansion of t to the expression's budget.
func (p *parser) charge(t term, start int) error {
	if t.nodes.kind != nodeNames {
		return nil
	}
	n := t.nodes.pat.count(MaxExpansion)
	if t.sites != nil {
		var sites uint64
		for _, it := range t.sites.items {
			if it.all {
				sites = satAdd(sites, 1, MaxExpansion) // the real count is known at Eval
			} else {
				sites = satAdd(sites, it.pat.count(MaxExpansion), MaxExpansion)
			}
		}
		n = satMul(n, sites, MaxExpansion)
	}
	p.names = satAdd(p.names, n, MaxExpansion)
	if p.names > MaxExpansion {
		text := p.s[start:p.i]
		if len(text) > 60 {
			text = text[:57] + "..."
		}
		return &SyntaxError{Input: p.s, Pos: start + 1, Err: ErrTooLarge,
			Msg: fmt.Sprintf("%q makes the expression expand to more than %d names; split the work into smaller ranges", text, MaxExpansion)}
	}
	return nil
}

func (p *parser) siteList() (*siteSpec, error) {
	open := p.i
	p.i++ // '('
	ss := &siteSpec{paren: true}
	for {
		p.skipSpace()
		c := p.peek()
		if !(c == '[' || isNameChar(c) && c != '-') {
			return nil, p.errAt(p.i, "expected a site name in the site list opened at %d, found %s", open+1, p.found())
		}
		item, err := p.siteOrName()
		if err != nil {
			return nil, err
		}
		ss.items = append(ss.items, item)
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.i++
			continue
		case ')':
			p.i++
			return ss, nil
		}
		return nil, p.errAt(p.i, "expected ',' or ')' in the site list opened at %d, found %s", open+1, p.found())
	}
}

// siteOrName reads a word that may be a site qualifier or a node pattern.
func (p *parser) siteOrName() (siteItem, error) {
	start := p.i
	pat, err := p.pattern()
	if err != nil {
		return siteItem{}, err
	}
	if w, ok := pat.literal(); ok && w == "all" && p.i == start+3 {
		return siteItem{all: true}, nil
	}
	return siteItem{pat: pat}, nil
}

func (p *parser) nodes() (nodeSpec, error) {
	switch c := p.peek(); {
	case c == '@':
		return p.group()
	case c == '/':
		return p.regex()
	case c == '[' || isNameChar(c) && c != '-':
		item, err := p.siteOrName()
		if err != nil {
			return nodeSpec{}, err
		}
		if item.all {
			return nodeSpec{kind: nodeAll}, nil
		}
		return nodeSpec{kind: nodeNames, pat: item.pat}, nil
	}
	return nodeSpec{}, p.errAt(p.i, "expected nodes (a name, 'all', '@group' or '/regex/') after '%%', found %s", p.found())
}

func (p *parser) group() (nodeSpec, error) {
	at := p.i
	p.i++ // '@'
	start := p.i
	for !p.eof() && isLabelKeyChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return nodeSpec{}, p.errAt(p.i, "expected a label name after '@' at %d, found %s", at+1, p.found())
	}
	n := nodeSpec{kind: nodeGroup, key: p.s[start:p.i]}
	if p.peek() == '=' {
		p.i++
		vs := p.i
		for !p.eof() && isNameChar(p.s[p.i]) {
			p.i++
		}
		n.value, n.hasValue = p.s[vs:p.i], true
	}
	return n, nil
}

func (p *parser) regex() (nodeSpec, error) {
	open := p.i
	p.i++ // '/'
	start := p.i
	for {
		if p.eof() {
			return nodeSpec{}, p.errAt(p.i, "expected '/' to close the regular expression opened at %d, found end of input", open+1)
		}
		c := p.s[p.i]
		if c == '\\' && p.i+1 < len(p.s) {
			p.i += 2
			continue
		}
		if c == '/' {
			break
		}
		p.i++
	}
	src := p.s[start:p.i]
	p.i++ // '/'
	if src == "" {
		return nodeSpec{}, p.errAt(open, "empty regular expression '//'")
	}
	re, err := compileAnchored(src)
	if err != nil {
		return nodeSpec{}, p.errAt(start, "bad regular expression /%s/: %v", src, err)
	}
	return nodeSpec{kind: nodeRegex, reSrc: src, re: re}, nil
}

// compileAnchored compiles src so that it must match a whole name. The
// expression is parsed on its own first and re-printed, so that text such
// as "a)|(b" or "\Q..." cannot escape the anchors.
func compileAnchored(src string) (*regexp.Regexp, error) {
	tree, err := syntax.Parse(src, syntax.Perl)
	if err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%s: %q", se.Code, se.Expr)
		}
		return nil, err
	}
	return regexp.Compile(`^(?:` + tree.String() + `)$`)
}

// pattern reads a name with optional bracket groups, or a dash range.
func (p *parser) pattern() (pattern, error) {
	start := p.i
	if p.peek() == '-' {
		return pattern{}, p.errAt(p.i, "a name cannot start with '-'")
	}
	var pt pattern
	var lit strings.Builder
	litStart := p.i
	flush := func() {
		if lit.Len() > 0 {
			pt.parts = append(pt.parts, part{lit: lit.String()})
			lit.Reset()
		}
	}
	brackets := false
	for !p.eof() {
		c := p.s[p.i]
		if isNameChar(c) {
			lit.WriteByte(c)
			p.i++
			continue
		}
		if c == '[' {
			flush()
			rs, err := p.bracket()
			if err != nil {
				return pattern{}, err
			}
			pt.parts = append(pt.parts, part{ranges: rs})
			brackets = true
			continue
		}
		if c == ']' {
			return pattern{}, p.errAt(p.i, "unexpected ']' without a matching '['")
		}
		break
	}
	flush()
	if p.i == start {
		return pattern{}, p.errAt(p.i, "expected a name, found %s", p.found())
	}
	if brackets {
		return pt, nil
	}
	word := p.s[litStart:p.i]
	prefix, lo, hi, ok := splitDashRange(word)
	if !ok {
		return pt, nil
	}
	hiPos := start + len(word) - len(hi)
	r, err := p.numRange(lo, start+len(prefix), hi, hiPos)
	if err != nil {
		return pattern{}, err
	}
	return pattern{parts: []part{{lit: prefix}, {ranges: []numRange{r}}}}, nil
}

// bracket reads "[1-5,7,09-11]" at p.i.
func (p *parser) bracket() ([]numRange, error) {
	open := p.i
	p.i++ // '['
	var rs []numRange
	for {
		loPos := p.i
		lo := p.digits()
		if lo == "" {
			return nil, p.errAt(p.i, "expected a number in the range opened at %d, found %s", open+1, p.found())
		}
		hi, hiPos := lo, loPos
		if p.peek() == '-' {
			p.i++
			hiPos = p.i
			if hi = p.digits(); hi == "" {
				return nil, p.errAt(p.i, "expected a number after '-' in the range opened at %d, found %s", open+1, p.found())
			}
		}
		r, err := p.numRange(lo, loPos, hi, hiPos)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
		switch p.peek() {
		case ',':
			p.i++
			continue
		case ']':
			p.i++
			return rs, nil
		}
		return nil, p.errAt(p.i, "expected ',' or ']' to close the range opened at %d, found %s", open+1, p.found())
	}
}

func (p *parser) digits() string {
	start := p.i
	for !p.eof() && isDigit(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// numRange checks the bounds of a range. Padding comes from the low bound
// ("01-10": two digits); a padded high bound must have the same width.
func (p *parser) numRange(lo string, loPos int, hi string, hiPos int) (numRange, error) {
	for _, d := range []struct {
		s   string
		pos int
	}{{lo, loPos}, {hi, hiPos}} {
		if len(d.s) > maxDigits {
			return numRange{}, p.errAt(d.pos, "number %s is too long (at most %d digits)", d.s, maxDigits)
		}
	}
	r := numRange{lo: parseDigits(lo), hi: parseDigits(hi)}
	if padded(lo) {
		r.width = len(lo)
	}
	if padded(hi) && len(hi) != r.width {
		return numRange{}, p.errAt(hiPos, "inconsistent zero padding in %s-%s: pad both ends to the same width, as in 01-10", lo, hi)
	}
	if r.lo > r.hi {
		return numRange{}, p.errAt(loPos, "range %s-%s goes backwards: write the low number first", lo, hi)
	}
	return r, nil
}

func parseDigits(s string) uint64 {
	var v uint64
	for i := 0; i < len(s); i++ {
		v = v*10 + uint64(s[i]-'0')
	}
	return v
}
