package noderange

import (
	"strconv"
	"strings"
)

// maxDigits is the longest digit string read as a number. Longer digit runs
// are rejected inside brackets and dash ranges, and Fold treats them as plain
// text, so every number fits in a uint64 with room to add one.
const maxDigits = 18

// numRange is one item of a bracket group: the numbers lo..hi, each printed
// with at least width digits (zero padded). A width of 0 means no padding.
type numRange struct {
	lo, hi uint64
	width  int
}

func (r numRange) count() uint64 { return r.hi - r.lo + 1 }

func (r numRange) String() string {
	if r.lo == r.hi {
		return formatNum(r.lo, r.width)
	}
	return formatNum(r.lo, r.width) + "-" + formatNum(r.hi, r.width)
}

func formatNum(v uint64, width int) string {
	s := strconv.FormatUint(v, 10)
	if len(s) < width {
		s = strings.Repeat("0", width-len(s)) + s
	}
	return s
}

// padded reports whether a digit string carries zero padding, which makes it
// a different name from the unpadded number: n01 and n1 are two nodes.
func padded(digits string) bool { return len(digits) > 1 && digits[0] == '0' }

// part is a piece of a name pattern: literal text, or a bracket group.
type part struct {
	lit    string
	ranges []numRange // nil for a literal
}

// pattern is a name with bracket groups; it stands for the cartesian product
// of its groups, the first group varying slowest.
type pattern struct {
	parts []part
}

// literal returns the name and true when the pattern is one plain word
// without any bracket group.
func (pt pattern) literal() (string, bool) {
	if len(pt.parts) == 1 && pt.parts[0].ranges == nil {
		return pt.parts[0].lit, true
	}
	return "", false
}

func (pt pattern) String() string {
	var b strings.Builder
	for _, p := range pt.parts {
		if p.ranges == nil {
			b.WriteString(p.lit)
			continue
		}
		b.WriteByte('[')
		for i, r := range p.ranges {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(r.String())
		}
		b.WriteByte(']')
	}
	return b.String()
}

// count returns how many names the pattern expands to, counting duplicates,
// saturated just above limit so that it cannot overflow.
func (pt pattern) count(limit uint64) uint64 {
	n := uint64(1)
	for _, p := range pt.parts {
		if p.ranges == nil {
			continue
		}
		var g uint64
		for _, r := range p.ranges {
			g = satAdd(g, r.count(), limit)
		}
		n = satMul(n, g, limit)
	}
	return n
}

func satAdd(a, b, limit uint64) uint64 {
	if a > limit || b > limit || a+b > limit {
		return limit + 1
	}
	return a + b
}

func satMul(a, b, limit uint64) uint64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > limit || b > limit || a > limit/b {
		return limit + 1
	}
	return a * b
}

// expand calls yield for every name of the pattern, in order. Callers bound
// the work with count first.
func (pt pattern) expand(yield func(string)) {
	var walk func(i int, prefix string)
	walk = func(i int, prefix string) {
		if i == len(pt.parts) {
			yield(prefix)
			return
		}
		p := pt.parts[i]
		if p.ranges == nil {
			walk(i+1, prefix+p.lit)
			return
		}
		for _, r := range p.ranges {
			for v := r.lo; ; v++ {
				walk(i+1, prefix+formatNum(v, r.width))
				if v == r.hi {
					break
				}
			}
		}
	}
	walk(0, "")
}

// splitTrailingDigits splits "rack-12" into "rack-" and "12".
func splitTrailingDigits(s string) (prefix, digits string) {
	i := len(s)
	for i > 0 && isDigit(s[i-1]) {
		i--
	}
	return s[:i], s[i:]
}

// splitDashRange reports whether a bracket-free word reads as a dash range:
// it splits at a '-' into two sides that both end in digits and share the
// same non-empty text before those digits ("n1-n5", "rack-1-rack-5"). The
// first such '-' from the left wins. Any other word is a plain name.
func splitDashRange(w string) (prefix, lo, hi string, ok bool) {
	for k := 1; k < len(w)-1; k++ {
		if w[k] != '-' {
			continue
		}
		lp, ld := splitTrailingDigits(w[:k])
		rp, rd := splitTrailingDigits(w[k+1:])
		if ld != "" && rd != "" && lp != "" && lp == rp {
			return lp, ld, rd, true
		}
	}
	return "", "", "", false
}

// looksLikeMismatchedRange reports whether a name would have been a dash
// range if both sides had the same prefix ("n1-m5"); used for error hints.
func looksLikeMismatchedRange(w string) bool {
	for k := 1; k < len(w)-1; k++ {
		if w[k] != '-' {
			continue
		}
		lp, ld := splitTrailingDigits(w[:k])
		rp, rd := splitTrailingDigits(w[k+1:])
		if ld != "" && rd != "" && lp != "" && rp != "" && lp != rp {
			return true
		}
	}
	return false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// isNameChar reports whether c may appear in a node or site name.
func isNameChar(c byte) bool {
	return isLetter(c) || isDigit(c) || c == '.' || c == '_' || c == '-'
}

// isLabelKeyChar allows '/' on top of name characters, for keys such as
// "drover.io/role".
func isLabelKeyChar(c byte) bool { return isNameChar(c) || c == '/' }

// validName reports whether name can be written as a plain word in an
// expression: name characters only, not starting with '-', and not the
// keyword "all".
func validName(name string) bool {
	if name == "" || name == "all" || name[0] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isNameChar(name[i]) {
			return false
		}
	}
	return true
}
