package noderange

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var fuzzUniverse = MapUniverse{
	"":      append(nodes("n1", "n2", "n3", "n01", "rack-1", "n1-m5", "west", "all"), labeled("db1", "role", "db")),
	"east":  append(nodes("n1", "n2", "n3", "n4", "n10", "n11", "rack-1"), labeled("c1", "role", "compute")),
	"west":  nodes("n1", "n2", "n01", "n02"),
	"site1": nodes("n1"),
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"n[1-5,7]", "n[01-10]", "r[1-2]n[1-3]", "n1-n5", "n01-n10", "n1-m5", "rack-1-rack-3",
		"all", "@role=compute&n[1-20]", "@drover.io/role", "/n[0-9]+/", "/a\\/b/",
		"n[1-10],!n3", "n[1-10],-n3", "n[1-10]!n3", "all%all,-west%n3", "east%n[1-3]&east%@role",
		"east,west%n[1-5]", "n1,east%n2", "(east,west)%n[1-5]", "site[1-3]%n1", "( east , west )%all",
		"n[1-5", "n[5-1]", "n1,,n2", "-n1", "a%b%c", "//", "/(/", "n[1-999999999]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		expanded, expandErr := Expand(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q): %T %v, want *SyntaxError", s, err, err)
			}
			if se.Pos < 1 || se.Pos > len(s)+1 {
				t.Fatalf("Parse(%q): position %d outside the input", s, se.Pos)
			}
			if !strings.HasPrefix(err.Error(), "noderange: at ") {
				t.Fatalf("Parse(%q): message %q", s, err)
			}
			if expandErr == nil {
				t.Fatalf("Expand(%q) succeeded where Parse failed", s)
			}
			return
		}
		canon := e.String()
		e2, err := Parse(canon)
		if err != nil {
			if errors.Is(err, ErrTooLarge) && len(canon) > MaxInputLen {
				return // the canonical form of an input near the limit may be longer
			}
			t.Fatalf("Parse(%q) ok, but its String %q does not parse: %v", s, canon, err)
		}
		if again := e2.String(); again != canon {
			t.Fatalf("String is not stable: %q -> %q -> %q", s, canon, again)
		}
		if e.names > 20000 {
			return // equivalence below is checked on small expansions only, to keep the fuzzer fast
		}
		expanded2, expandErr2 := Expand(canon)
		if (expandErr == nil) != (expandErr2 == nil) || !slices.Equal(expanded, expanded2) {
			t.Fatalf("Expand differs: %q -> %q, %v; %q -> %q, %v", s, expanded, expandErr, canon, expanded2, expandErr2)
		}
		set1, err1 := e.Eval(fuzzUniverse)
		set2, err2 := e2.Eval(fuzzUniverse)
		switch {
		case (err1 == nil) != (err2 == nil):
			t.Fatalf("Eval differs: %q: %v; %q: %v", s, err1, canon, err2)
		case err1 != nil:
			var ae *AmbiguousError
			if errors.As(err1, &ae) {
				return // its message quotes the canonical expression; positions agree below
			}
			if err1.Error() != err2.Error() {
				t.Fatalf("Eval errors differ: %q: %v; %q: %v", s, err1, canon, err2)
			}
		case !set1.Equal(set2):
			t.Fatalf("Eval differs: %q: %v; %q: %v", s, set1, canon, set2)
		default:
			// A result folds back to itself.
			if set1.Len() > 0 {
				checkRoundTrip(t, set1, nil)
			}
		}
	})
}
