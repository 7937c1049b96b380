package noderange

import (
	"cmp"
	"slices"
	"strings"
)

// Node is one node of one site. Site "" is the local site.
type Node struct {
	Site string
	Name string
}

// String returns "site%name", or the bare name for the local site.
func (n Node) String() string {
	if n.Site == "" {
		return n.Name
	}
	return n.Site + "%" + n.Name
}

// Compare orders nodes as a NodeSet lists them: by site, then name, both
// in natural order (n2 before n10).
func Compare(a, b Node) int { return compareNodes(a, b) }

// compareNodes orders by site, then name, both in natural order.
func compareNodes(a, b Node) int {
	if c := compareNatural(a.Site, b.Site); c != 0 {
		return c
	}
	return compareNatural(a.Name, b.Name)
}

// NodeSet is a set of nodes across sites. The zero value is an empty set
// ready to use. A NodeSet is not safe for concurrent use while it is being
// modified.
type NodeSet struct {
	m map[Node]struct{}
}

// NewNodeSet returns a set holding nodes.
func NewNodeSet(nodes ...Node) *NodeSet {
	s := &NodeSet{m: make(map[Node]struct{}, len(nodes))}
	s.Add(nodes...)
	return s
}

// Add puts nodes into the set.
func (s *NodeSet) Add(nodes ...Node) {
	if s.m == nil {
		s.m = make(map[Node]struct{}, len(nodes))
	}
	for _, n := range nodes {
		s.m[n] = struct{}{}
	}
}

func (s *NodeSet) addSet(o *NodeSet) {
	if o == nil {
		return
	}
	if s.m == nil {
		s.m = make(map[Node]struct{}, len(o.m))
	}
	for n := range o.m {
		s.m[n] = struct{}{}
	}
}

// Remove takes nodes out of the set.
func (s *NodeSet) Remove(nodes ...Node) {
	for _, n := range nodes {
		delete(s.m, n)
	}
}

// Contains reports whether n is in the set.
func (s *NodeSet) Contains(n Node) bool {
	if s == nil {
		return false
	}
	_, ok := s.m[n]
	return ok
}

// Len returns the number of nodes in the set.
func (s *NodeSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.m)
}

// Clone returns a copy of the set.
func (s *NodeSet) Clone() *NodeSet {
	c := NewNodeSet()
	c.addSet(s)
	return c
}

// Union returns a new set with the nodes of s and o.
func (s *NodeSet) Union(o *NodeSet) *NodeSet {
	c := s.Clone()
	c.addSet(o)
	return c
}

// Intersect returns a new set with the nodes in both s and o.
func (s *NodeSet) Intersect(o *NodeSet) *NodeSet {
	c := NewNodeSet()
	if s == nil {
		return c
	}
	for n := range s.m {
		if o.Contains(n) {
			c.m[n] = struct{}{}
		}
	}
	return c
}

// Difference returns a new set with the nodes of s that are not in o.
func (s *NodeSet) Difference(o *NodeSet) *NodeSet {
	c := NewNodeSet()
	if s == nil {
		return c
	}
	for n := range s.m {
		if !o.Contains(n) {
			c.m[n] = struct{}{}
		}
	}
	return c
}

// Equal reports whether s and o hold the same nodes.
func (s *NodeSet) Equal(o *NodeSet) bool {
	if s.Len() != o.Len() {
		return false
	}
	if s == nil {
		return true
	}
	for n := range s.m {
		if !o.Contains(n) {
			return false
		}
	}
	return true
}

// Nodes returns the nodes sorted by site, then by name, both in natural
// order: n2 comes before n10, and n01 before n1.
func (s *NodeSet) Nodes() []Node {
	if s == nil {
		return nil
	}
	out := make([]Node, 0, len(s.m))
	for n := range s.m {
		out = append(out, n)
	}
	slices.SortFunc(out, compareNodes)
	return out
}

// Sites returns the sites that have nodes in the set, in natural order.
func (s *NodeSet) Sites() []string {
	if s == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for n := range s.m {
		if !seen[n.Site] {
			seen[n.Site] = true
			out = append(out, n.Site)
		}
	}
	slices.SortFunc(out, compareNatural)
	return out
}

// Names returns the names of the nodes of one site, in natural order.
func (s *NodeSet) Names(site string) []string {
	if s == nil {
		return nil
	}
	var out []string
	for n := range s.m {
		if n.Site == site {
			out = append(out, n.Name)
		}
	}
	slices.SortFunc(out, compareNatural)
	return out
}

// String returns Fold().
func (s *NodeSet) String() string { return s.Fold() }

// compareNatural orders strings so that runs of digits compare by value
// ("n2" < "n10"). Strings that differ only in zero padding ("n01", "n1")
// fall back to plain byte order, which makes the order total.
func compareNatural(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, cb := a[i], b[j]
		if isDigit(ca) && isDigit(cb) {
			si, sj := i, j
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			da := strings.TrimLeft(a[si:i], "0")
			db := strings.TrimLeft(b[sj:j], "0")
			if c := cmp.Compare(len(da), len(db)); c != 0 {
				return c
			}
			if c := strings.Compare(da, db); c != 0 {
				return c
			}
			continue
		}
		if ca != cb {
			return cmp.Compare(ca, cb)
		}
		i++
		j++
	}
	switch {
	case i < len(a):
		return 1
	case j < len(b):
		return -1
	}
	return strings.Compare(a, b)
}
