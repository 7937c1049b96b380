package noderange

import (
	"fmt"
	"slices"
	"strings"
)

// NodeInfo is what a Universe knows about one node.
type NodeInfo struct {
	Name   string
	Labels map[string]string
}

// Universe is the set of sites and nodes an expression is evaluated against.
type Universe interface {
	// Sites returns the known sites. The local site is "" and is listed
	// only where there is one (every single-site server has only "").
	Sites() []string
	// Nodes returns the nodes of a known site.
	Nodes(site string) ([]NodeInfo, error)
}

// MapUniverse is a Universe held in memory: site name to nodes.
type MapUniverse map[string][]NodeInfo

// Sites returns the keys of u, sorted.
func (u MapUniverse) Sites() []string {
	sites := make([]string, 0, len(u))
	for s := range u {
		sites = append(sites, s)
	}
	slices.SortFunc(sites, compareNatural)
	return sites
}

// Nodes returns the nodes of site.
func (u MapUniverse) Nodes(site string) ([]NodeInfo, error) {
	nodes, ok := u[site]
	if !ok {
		return nil, fmt.Errorf("unknown site %q", site)
	}
	return nodes, nil
}

// UnknownError lists every site and node an expression names that the
// universe does not have. Nodes in unknown sites are not listed; their
// site is.
type UnknownError struct {
	Sites []string // sorted
	Nodes []Node   // sorted as NodeSet.Nodes sorts
	Hints []string // how the user may have meant the expression, if we can tell
}

func (e *UnknownError) Error() string {
	var b strings.Builder
	b.WriteString("noderange: ")
	if len(e.Sites) > 0 {
		b.WriteString(plural(len(e.Sites), "unknown site ", "unknown sites "))
		b.WriteString(strings.Join(e.Sites, ", "))
	}
	if len(e.Nodes) > 0 {
		if len(e.Sites) > 0 {
			b.WriteString("; ")
		}
		b.WriteString(plural(len(e.Nodes), "unknown node ", "unknown nodes "))
		b.WriteString(strings.Join(NewNodeSet(e.Nodes...).foldTerms(), ", "))
	}
	if len(e.Hints) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(e.Hints, "; "))
		b.WriteString(")")
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// AmbiguousError reports a word that is both a site and a node of the local
// site, where the expression could mean either.
type AmbiguousError struct {
	Pos  int    // 1-based position of the word
	Word string // the word
	Expr string // the expression as given
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("noderange: at %d: %q is both a site and a local node, so %q is ambiguous: "+
		"write (%s,...)%%nodes for the site, or put the local node after the site-qualified term",
		e.Pos, e.Word, e.Expr, e.Word)
}

// Resolve parses expr and evaluates it against u.
func Resolve(expr string, u Universe) (*NodeSet, error) {
	e, err := Parse(expr)
	if err != nil {
		return nil, err
	}
	return e.Eval(u)
}

// Eval resolves the expression against u. Names of sites or nodes that u
// does not have, including names produced by ranges, are errors: the
// *UnknownError lists all of them. Groups, regular expressions and 'all'
// that match nothing are not errors.
func (e *Expr) Eval(u Universe) (*NodeSet, error) {
	ev := &evaluator{
		u:            u,
		src:          e.src,
		known:        map[string]bool{},
		nodes:        map[string]map[string]map[string]string{},
		unknownSites: map[string]bool{},
		unknownNodes: NewNodeSet(),
	}
	for _, s := range u.Sites() {
		if !ev.known[s] {
			ev.known[s] = true
			ev.sites = append(ev.sites, s)
		}
	}
	slices.SortFunc(ev.sites, compareNatural)

	terms, err := ev.resolveSiteLists(e)
	if err != nil {
		return nil, err
	}
	result := NewNodeSet()
	for i, t := range terms {
		set, err := ev.term(t)
		if err != nil {
			return nil, err
		}
		switch {
		case i == 0 || t.op == opUnion:
			result.addSet(set)
		case t.op == opDiff:
			for n := range set.m {
				delete(result.m, n)
			}
		case t.op == opIntersect:
			for n := range result.m {
				if !set.Contains(n) {
					delete(result.m, n)
				}
			}
		}
	}
	if len(ev.unknownSites) > 0 || ev.unknownNodes.Len() > 0 {
		return nil, ev.unknownError()
	}
	return result, nil
}

type evaluator struct {
	u            Universe
	src          string
	sites        []string
	known        map[string]bool
	nodes        map[string]map[string]map[string]string // site → name → labels
	unknownSites map[string]bool
	unknownNodes *NodeSet
	lookups      uint64 // names checked, against MaxExpansion
}

// siteNodes returns the nodes of a known site, asking the universe once.
func (ev *evaluator) siteNodes(site string) (map[string]map[string]string, error) {
	if m, ok := ev.nodes[site]; ok {
		return m, nil
	}
	m := map[string]map[string]string{}
	if ev.known[site] {
		infos, err := ev.u.Nodes(site)
		if err != nil {
			return nil, fmt.Errorf("noderange: listing the nodes of %s: %w", siteLabel(site), err)
		}
		for _, n := range infos {
			m[n.Name] = n.Labels
		}
	}
	ev.nodes[site] = m
	return m, nil
}

func siteLabel(site string) string {
	if site == "" {
		return "the local site"
	}
	return fmt.Sprintf("site %q", site)
}

// resolveSiteLists rewrites the plain site-list form: in "east,west%n1"
// the bare words before a site-qualified term that are known sites join
// its site list. See the package documentation for the exact rule.
func (ev *evaluator) resolveSiteLists(e *Expr) ([]term, error) {
	out := make([]term, 0, len(e.terms))
	for _, t := range e.terms {
		if len(out) == 0 || t.op != opUnion || t.sites == nil || t.sites.paren || t.sites.items[0].all {
			out = append(out, t)
			continue
		}
		// Walk back over bare words joined by plain unions.
		j := len(out)
		for j > 0 {
			w, ok := out[j-1].bareWord()
			if !ok || w == "" || !ev.known[w] {
				break
			}
			j--
			if out[j].op != opUnion {
				// The word is the operand of '&' or '-': it stays a node.
				j++
				break
			}
		}
		if j == len(out) {
			out = append(out, t)
			continue
		}
		var local map[string]map[string]string
		if ev.known[""] {
			var err error
			if local, err = ev.siteNodes(""); err != nil {
				return nil, err
			}
		}
		merged := term{op: out[j].op, pos: out[j].pos, sites: &siteSpec{}, nodes: t.nodes}
		for _, w := range out[j:] {
			name, _ := w.bareWord()
			if _, isNode := local[name]; isNode {
				return nil, &AmbiguousError{Pos: w.pos, Word: name, Expr: e.src}
			}
			merged.sites.items = append(merged.sites.items, siteItem{pat: w.nodes.pat})
		}
		merged.sites.items = append(merged.sites.items, t.sites.items...)
		out = append(out[:j], merged)
	}
	return out, nil
}

// termSites returns the known sites a term applies to, recording unknown
// ones.
func (ev *evaluator) termSites(t term) []string {
	if t.sites == nil {
		return []string{""}
	}
	var sites []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			sites = append(sites, s)
		}
	}
	for _, it := range t.sites.items {
		if it.all {
			for _, s := range ev.sites {
				add(s)
			}
			continue
		}
		it.pat.expand(func(s string) {
			if ev.known[s] {
				add(s)
			} else {
				ev.unknownSites[s] = true
			}
		})
	}
	return sites
}

func (ev *evaluator) term(t term) (*NodeSet, error) {
	set := NewNodeSet()
	sites := ev.termSites(t)
	if t.nodes.kind == nodeNames {
		n := satMul(uint64(len(sites)), t.nodes.pat.count(MaxExpansion), MaxExpansion)
		ev.lookups = satAdd(ev.lookups, n, MaxExpansion)
		if ev.lookups > MaxExpansion {
			return nil, &SyntaxError{Input: ev.src, Pos: t.pos, Err: ErrTooLarge,
				Msg: fmt.Sprintf("%q expands to more than %d names over %d sites; split the work into smaller ranges", t.String(), MaxExpansion, len(sites))}
		}
	}
	for _, site := range sites {
		nodes, err := ev.siteNodes(site)
		if err != nil {
			return nil, err
		}
		switch t.nodes.kind {
		case nodeNames:
			t.nodes.pat.expand(func(name string) {
				n := Node{Site: site, Name: name}
				if _, ok := nodes[name]; ok {
					set.Add(n)
				} else {
					ev.unknownNodes.Add(n)
				}
			})
		case nodeAll:
			for name := range nodes {
				set.Add(Node{Site: site, Name: name})
			}
		case nodeGroup:
			for name, labels := range nodes {
				v, ok := labels[t.nodes.key]
				if ok && (!t.nodes.hasValue || v == t.nodes.value) {
					set.Add(Node{Site: site, Name: name})
				}
			}
		case nodeRegex:
			for name := range nodes {
				if t.nodes.re.MatchString(name) {
					set.Add(Node{Site: site, Name: name})
				}
			}
		}
	}
	return set, nil
}

func (ev *evaluator) unknownError() *UnknownError {
	e := &UnknownError{Nodes: ev.unknownNodes.Nodes()}
	for s := range ev.unknownSites {
		e.Sites = append(e.Sites, s)
	}
	slices.SortFunc(e.Sites, compareNatural)

	var siteWords, mismatched []string
	noLocal := false
	for _, n := range e.Nodes {
		if n.Site != "" {
			continue
		}
		if !ev.known[""] {
			noLocal = true
		}
		if ev.known[n.Name] && len(siteWords) < 3 {
			siteWords = append(siteWords, n.Name)
		}
		if looksLikeMismatchedRange(n.Name) && len(mismatched) < 3 {
			mismatched = append(mismatched, n.Name)
		}
	}
	if noLocal {
		e.Hints = append(e.Hints, "there is no local site here: qualify names with their site, as in east%n1")
	}
	for _, w := range siteWords {
		e.Hints = append(e.Hints, fmt.Sprintf("%s is a site: write %s%%all for all its nodes", w, w))
	}
	for _, w := range mismatched {
		e.Hints = append(e.Hints, fmt.Sprintf("%s is read as one name: a dash range needs the same prefix on both ends, as in n1-n5", w))
	}
	return e
}

// Expand expands an expression of plain names and ranges without a
// universe: Expand("n[1-3],-n2") returns n1 and n3. Names come back sorted
// in natural order (n2 before n10). Site qualifiers, 'all', groups and
// regular expressions need a universe and are errors here.
func Expand(s string) ([]string, error) {
	e, err := Parse(s)
	if err != nil {
		return nil, err
	}
	result := map[string]bool{}
	for i, t := range e.terms {
		if t.sites != nil || t.nodes.kind != nodeNames {
			return nil, &SyntaxError{Input: s, Pos: t.pos,
				Msg: fmt.Sprintf("%q needs the list of sites and nodes to expand; only names and ranges expand on their own", t.String())}
		}
		names := map[string]bool{}
		t.nodes.pat.expand(func(n string) { names[n] = true })
		switch {
		case i == 0 || t.op == opUnion:
			for n := range names {
				result[n] = true
			}
		case t.op == opDiff:
			for n := range names {
				delete(result, n)
			}
		case t.op == opIntersect:
			for n := range result {
				if !names[n] {
					delete(result, n)
				}
			}
		}
	}
	out := make([]string, 0, len(result))
	for n := range result {
		out = append(out, n)
	}
	slices.SortFunc(out, compareNatural)
	return out, nil
}
