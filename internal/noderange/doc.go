// Package noderange reads node range expressions such as
//
//	n[1-5,7]
//	east%compute1,west%n[01-10]
//	all%all,-west%n3
//	@role=compute&n[1-20]
//
// and does set algebra on the nodes they name, across sites. It is what
// the CLI uses for "drover commission 'n[1-5,7]'" and
// "drover run 'east%@role=compute'".
//
// # Expressions
//
// An expression is a list of terms joined by operators and evaluated
// strictly from left to right, with no precedence and no parentheses for
// grouping (as in ClusterShell):
//
//	a,b       union: the nodes of a and of b
//	a,-b      exclusion: the nodes of a that are not in b
//	a,!b      the same
//	a!b       the same
//	a&b       intersection: the nodes in both a and b
//
// So "n[1-10],-n3,n3&n[3-4]" is ((n[1-10] minus n3) plus n3) and n[3-4],
// that is n3 and n4. Whitespace around operators, and around the names and
// commas of a parenthesised site list, is ignored; anywhere else inside a
// term it is an error. An expression cannot start with an exclusion.
//
// The '-' of an exclusion must follow a ','. Directly after a name it is
// part of the name: "n[1-3]-n2" is the three nodes n1-n2, n2-n2, n3-n2.
//
// # Terms
//
// A term is NODES, meaning nodes of the local site (the site named "", the
// only one of a single-site server), or SITES%NODES.
//
// NODES is one of:
//
//	n1            a node name
//	n[1-5,7]      a name with bracket ranges: n1 n2 n3 n4 n5 n7
//	n[01-10]      zero padding is kept: n01 ... n10
//	r[1-2]n[1-3]  several bracket groups: r1n1 r1n2 r1n3 r2n1 r2n2 r2n3
//	n1-n5         a dash range: n1 ... n5 (see below)
//	all           every node of the site
//	@role=db      every node whose label role has the value db
//	@role         every node that has the label role, whatever its value
//	/db[0-9]+/    every node whose whole name matches the regular
//	              expression (Go RE2 syntax, anchored at both ends);
//	              write '/' inside it as '\/'
//
// SITES is one of:
//
//	east          a site name
//	site[1-3]     a site name with ranges (and dash ranges)
//	all           every known site, the local one included if there is one
//	(east,west)   a list of the above
//
// Names of nodes and sites use the characters A-Z a-z 0-9 . _ - and do not
// start with '-'. The word "all" is always the keyword, never a name.
// Label names may also contain '/' ("@drover.io/role=db"); label values
// use the name characters and may be empty ("@role=" matches the label
// set to the empty string).
//
// A bracket holds comma-separated numbers and ranges "lo-hi" (lo <= hi).
// A low bound with leading zeros sets the width of the range ("01-10"); a
// high bound with leading zeros must have that same width. Numbers have at
// most 18 digits. n01 and n1 are different nodes.
//
// # Dash ranges and names with dashes
//
// A word without brackets is a dash range when it splits at a '-' into two
// sides that both end in digits and have the same non-empty text before
// those digits; the first such '-' from the left is used. Otherwise the
// word is a plain name. Hence:
//
//	n1-n5          range n1 ... n5
//	n01-n10        range n01 ... n10
//	rack-1-rack-3  range rack-1 ... rack-3
//	rack-1         name (the left side "rack" has no digits)
//	n1-m5          name: the prefixes n and m differ, so this names one
//	               node "n1-m5", and Eval reports it as unknown (with a
//	               hint) unless such a node exists
//	n1-n5-mgmt     name (the right side does not end in digits); the
//	               range is written n[1-5]-mgmt
//	1-5            name (no text before the digits)
//	n5-n1          error: the range goes backwards
//
// A node really named like a dash range is written with a bracket,
// "n1-n[5]", or as a regular expression, "/n1-n5/"; Fold does this itself.
//
// # The plain site list: east,west%n[1-5]
//
// Besides "(east,west)%n[1-5]", the plain form "east,west%n[1-5]" means
// nodes n1..n5 of sites east and west. Whether a word before a qualified
// term is a site or a local node depends on which sites exist, so Eval
// decides it, by this rule:
//
// Take a site-qualified term whose qualifier is a single name or name
// pattern (not "all", not a parenthesised list) and which is joined to
// what precedes it by a plain ','. Walk back from it over the terms that
// are bare words (unqualified names without brackets or dash ranges),
// each joined to the next by a plain ',', as long as the word is a known
// site and was not itself introduced by '-', '!' or '&'. Those words join
// the term's site list. So, with sites east and west:
//
//	east,west%n[1-5]     (east,west)%n[1-5]
//	n1,east%n2           local n1, plus east%n2 (n1 is not a site)
//	n1,east,west%n2      local n1, plus (east,west)%n2
//	east,-west%n2        local node east minus west%n2 ('-' breaks the list)
//	@r=x&east,west%n2    (@r=x & local node east), plus west%n2
//	west%n2,east         west%n2 plus local node east
//
// A word that is both a known site and a node of the local site is an
// error (*AmbiguousError) in that position; write the list in
// parentheses, or move the local node after the qualified term. Fold
// never writes this form.
//
// # Evaluation and errors
//
// Parse checks syntax only and reports the first problem as a
// *SyntaxError naming its 1-based byte position:
//
//	noderange: at 6: expected ',' or ']' to close the range opened at 2, found end of input
//
// Eval resolves an expression against a Universe. Every site and every node
// named by a name or range must exist; otherwise Eval fails with an
// *UnknownError that lists all of them (nothing is dropped silently,
// exclusions included, so that a typo in "all,-n7" cannot widen a
// command):
//
//	noderange: unknown site north; unknown nodes east%n7, west%n9
//
// 'all', groups and regular expressions that match nothing are not errors.
//
// # Limits
//
// An expression is at most MaxInputLen bytes, and its names and ranges may
// expand to at most MaxExpansion names in all, counting each site of a
// qualified term; beyond that Parse or Eval fail with an error matching
// ErrTooLarge. Nodes selected by 'all', groups and regular expressions do
// not count: they already exist.
//
// # Node sets
//
// A NodeSet holds nodes of any sites; Nodes lists them by site then name in
// natural order (n2 before n10). Fold writes a set back as a short
// expression that evaluates to the same set: Parse(s.Fold()) evaluated
// against any universe holding the nodes of s gives s again.
package noderange
