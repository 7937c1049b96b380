package noderange

import (
	"cmp"
	"regexp"
	"slices"
	"strings"
)

// Fold returns a short canonical expression for the set, which Parse and
// Eval read back as exactly this set (given a universe that holds its
// nodes):
//
//	east%n[1-3,5],west%n[01-02],login1
//
// Names are grouped by the text around their numbers, over every number in
// the name ("r[1-2]n[1-8]"), keeping zero padding ("n[01-10]", and n1 and
// n01 stay different nodes). Sites with the same nodes share one term,
// their names folded the same way: "(east,west)%n[1-5]" or
// "site[1-3]%n[1-5]". Local nodes come last and unqualified, so that no
// bare name stands before a site-qualified term (where it could read as a
// site). Names that cannot be written as words (the name "all", or names
// with characters outside [A-Za-z0-9._-]) are written as an anchored
// regular expression "/all/".
//
// The round trip holds except where the grammar cannot say it: site names
// must be valid words other than "all" (there is no regular expression for
// sites), node names must be valid UTF-8, and the result must stay within
// MaxInputLen and MaxExpansion (a set of more than MaxExpansion nodes
// folds, but does not parse back). The empty set folds to "", which is not
// an expression.
func (s *NodeSet) Fold() string { return strings.Join(s.foldTerms(), ",") }

func (s *NodeSet) foldTerms() []string {
	if s.Len() == 0 {
		return nil
	}
	bySite := map[string][]string{}
	for n := range s.m {
		bySite[n.Site] = append(bySite[n.Site], n.Name)
	}
	// Sites whose nodes fold to the same text hold the same nodes, so they
	// can share a qualifier.
	type group struct {
		sites []string
		terms []string
	}
	groups := map[string]*group{}
	for site, names := range bySite {
		if site == "" {
			continue
		}
		terms := foldNames(names)
		key := strings.Join(terms, ",")
		g := groups[key]
		if g == nil {
			g = &group{terms: terms}
			groups[key] = g
		}
		g.sites = append(g.sites, site)
	}
	ordered := make([]*group, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g.sites, compareNatural)
		ordered = append(ordered, g)
	}
	slices.SortFunc(ordered, func(a, b *group) int { return compareNatural(a.sites[0], b.sites[0]) })

	var out []string
	for _, g := range ordered {
		siteTerms := foldNames(g.sites)
		qual := siteTerms[0]
		if len(siteTerms) > 1 {
			qual = "(" + strings.Join(siteTerms, ",") + ")"
		}
		for _, t := range g.terms {
			out = append(out, qual+"%"+t)
		}
	}
	if local, ok := bySite[""]; ok {
		out = append(out, foldNames(local)...)
	}
	return out
}

// foldNames folds distinct names into node terms, in natural order.
func foldNames(names []string) []string {
	type group struct {
		lits   []string   // text around the numbers
		tuples [][]string // the numbers of each name
	}
	groups := map[string]*group{}
	var odd []string
	for _, name := range names {
		if !validName(name) {
			odd = append(odd, name)
			continue
		}
		lits, nums := splitName(name)
		if len(nums) == 0 {
			if _, _, _, ok := splitDashRange(name); ok {
				odd = append(odd, name) // digits too long to bracket
				continue
			}
		}
		key := strings.Join(lits, "\x00")
		g := groups[key]
		if g == nil {
			g = &group{lits: lits}
			groups[key] = g
		}
		g.tuples = append(g.tuples, nums)
	}
	// Terms go in the natural order of their first names.
	type folded struct{ first, term string }
	var rows []folded
	for _, g := range groups {
		for _, row := range foldTuples(g.tuples, len(g.lits)-1) {
			rows = append(rows, folded{firstName(g.lits, row), renderRow(g.lits, row)})
		}
	}
	slices.SortFunc(rows, func(a, b folded) int {
		if c := compareNatural(a.first, b.first); c != 0 {
			return c
		}
		return strings.Compare(a.term, b.term)
	})
	terms := make([]string, 0, len(rows)+1)
	for _, r := range rows {
		terms = append(terms, r.term)
	}
	if len(odd) > 0 {
		terms = append(terms, regexTerm(odd))
	}
	return terms
}

// splitName splits "r01n3" into the text around its numbers ("r", "n", "")
// and the numbers ("01", "3"). Digit runs too long for a range stay text.
func splitName(name string) (lits, nums []string) {
	var cur strings.Builder
	for i := 0; i < len(name); {
		if !isDigit(name[i]) {
			cur.WriteByte(name[i])
			i++
			continue
		}
		j := i
		for j < len(name) && isDigit(name[j]) {
			j++
		}
		if j-i <= maxDigits {
			lits = append(lits, cur.String())
			cur.Reset()
			nums = append(nums, name[i:j])
		} else {
			cur.WriteString(name[i:j])
		}
		i = j
	}
	return append(lits, cur.String()), nums
}

// foldTuples folds the number tuples of names that share their text into
// rows, each row a range list per position, the way ClusterShell folds
// several dimensions: fold the last position for each distinct prefix, then
// merge prefixes that folded to the same ranges, moving left.
func foldTuples(tuples [][]string, k int) [][][]numRange {
	if k == 0 {
		return [][][]numRange{nil}
	}
	type entry struct {
		prefix []string
		suffix [][]numRange
		key    string
	}
	type bucket struct {
		prefix []string
		suffix [][]numRange
		key    string
		vals   []string
	}
	buckets := map[string]*bucket{}
	var order []string
	collect := func(prefix []string, suffix [][]numRange, key, val string) {
		bk := strings.Join(prefix, "\x00") + "\x01" + key
		b := buckets[bk]
		if b == nil {
			b = &bucket{prefix: prefix, suffix: suffix, key: key}
			buckets[bk] = b
			order = append(order, bk)
		}
		b.vals = append(b.vals, val)
	}
	for _, t := range tuples {
		collect(t[:k-1], nil, "", t[k-1])
	}
	var entries []entry
	for d := k - 1; ; d-- {
		entries = entries[:0]
		for _, bk := range order {
			b := buckets[bk]
			ds := foldDim(b.vals)
			suffix := append([][]numRange{ds}, b.suffix...)
			entries = append(entries, entry{prefix: b.prefix, suffix: suffix, key: rangesKey(ds) + "|" + b.key})
		}
		if d == 0 {
			break
		}
		buckets, order = map[string]*bucket{}, order[:0]
		for _, e := range entries {
			collect(e.prefix[:d-1], e.suffix, e.key, e.prefix[d-1])
		}
	}
	rows := make([][][]numRange, len(entries))
	for i, e := range entries {
		rows[i] = e.suffix
	}
	return rows
}

func rangesKey(rs []numRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// foldDim folds distinct digit strings into ranges. A padded string ("07")
// can only be written with its own width. An unpadded one ("10") can be
// written with any width up to its length, so it joins the range it
// continues: n[01-10] rather than n[01-09],n10.
func foldDim(vals []string) []numRange {
	members := map[int]map[uint64]bool{}
	add := func(w int, v uint64) {
		if members[w] == nil {
			members[w] = map[uint64]bool{}
		}
		members[w][v] = true
	}
	type natural struct {
		v   uint64
		len int
	}
	var naturals []natural
	for _, s := range vals {
		if padded(s) {
			add(len(s), parseDigits(s))
		} else {
			naturals = append(naturals, natural{parseDigits(s), len(s)})
		}
	}
	slices.SortFunc(naturals, func(a, b natural) int { return cmp.Compare(a.v, b.v) })
	for _, n := range naturals {
		var cands []int // widths this number can join, widest first, then 0
		for w := range members {
			if w >= 2 && w <= n.len {
				cands = append(cands, w)
			}
		}
		slices.SortFunc(cands, func(a, b int) int { return cmp.Compare(b, a) })
		cands = append(cands, 0)
		add(chooseWidth(members, cands, n.v), n.v)
	}
	var out []numRange
	for w, set := range members {
		vs := make([]uint64, 0, len(set))
		for v := range set {
			vs = append(vs, v)
		}
		slices.Sort(vs)
		for i := 0; i < len(vs); {
			j := i
			for j+1 < len(vs) && vs[j+1] == vs[j]+1 {
				j++
			}
			out = append(out, numRange{lo: vs[i], hi: vs[j], width: w})
			i = j + 1
		}
	}
	slices.SortFunc(out, func(a, b numRange) int {
		if c := cmp.Compare(a.lo, b.lo); c != 0 {
			return c
		}
		return cmp.Compare(a.width, b.width)
	})
	return out
}

func chooseWidth(members map[int]map[uint64]bool, cands []int, v uint64) int {
	for _, w := range cands {
		if v > 0 && members[w][v-1] {
			return w
		}
	}
	for _, w := range cands {
		if members[w][v+1] {
			return w
		}
	}
	if len(members[0]) > 0 || len(cands) == 1 {
		return 0
	}
	return cands[0]
}

// firstName returns the name a row starts with: its lowest number at each
// position.
func firstName(lits []string, row [][]numRange) string {
	var b strings.Builder
	for i, lit := range lits {
		b.WriteString(lit)
		if i < len(row) {
			b.WriteString(formatNum(row[i][0].lo, row[i][0].width))
		}
	}
	return b.String()
}

// renderRow writes one folded term. A term whose numbers are all single
// values is a plain word; if that word would read as a dash range
// ("n1-n5" the node), its last number goes in brackets: "n1-n[5]".
func renderRow(lits []string, row [][]numRange) string {
	render := func(bracketLast bool) string {
		var b strings.Builder
		for i, lit := range lits {
			b.WriteString(lit)
			if i == len(row) {
				break
			}
			rs := row[i]
			if len(rs) == 1 && rs[0].lo == rs[0].hi && !(bracketLast && i == len(row)-1) {
				b.WriteString(rs[0].String())
				continue
			}
			b.WriteByte('[')
			b.WriteString(rangesKey(rs))
			b.WriteByte(']')
		}
		return b.String()
	}
	s := render(false)
	if !strings.Contains(s, "[") {
		if _, _, _, ok := splitDashRange(s); ok {
			s = render(true)
		}
	}
	return s
}

// regexTerm matches exactly the given names: /a|b/.
func regexTerm(names []string) string {
	slices.Sort(names)
	quoted := make([]string, len(names))
	for i, n := range names {
		q := strings.ReplaceAll(regexp.QuoteMeta(n), "/", `\/`)
		if q == "" {
			q = "(?:)"
		}
		quoted[i] = q
	}
	return "/" + strings.Join(quoted, "|") + "/"
}
