package noderange

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	tests := []struct {
		in   string
		want string // names joined by space
	}{
		{"n1", "n1"},
		{"  n1  ", "n1"},
		{"n[1-5,7]", "n1 n2 n3 n4 n5 n7"},
		{"n[7,1-3]", "n1 n2 n3 n7"},
		{"n[1-3,2-4]", "n1 n2 n3 n4"},
		{"n[01-10]", "n01 n02 n03 n04 n05 n06 n07 n08 n09 n10"},
		{"n[01-5]", "n01 n02 n03 n04 n05"},
		{"n[098-101]", "n098 n099 n100 n101"},
		{"n[9-11]", "n9 n10 n11"},
		{"n[1,01]", "n01 n1"},
		{"n[0]", "n0"},
		{"n[00]", "n00"},
		{"r[1-2]n[1-3]", "r1n1 r1n2 r1n3 r2n1 r2n2 r2n3"},
		{"[1-3]x", "1x 2x 3x"},
		{"n[1-2]-mgmt", "n1-mgmt n2-mgmt"},
		{"n[1-2].east.example", "n1.east.example n2.east.example"},
		{"n[1-3]-n2", "n1-n2 n2-n2 n3-n2"},
		// dash ranges
		{"n1-n5", "n1 n2 n3 n4 n5"},
		{"n01-n10", "n01 n02 n03 n04 n05 n06 n07 n08 n09 n10"},
		{"n8-n8", "n8"},
		{"rack-1-rack-3", "rack-1 rack-2 rack-3"},
		{"r1n1-r1n3", "r1n1 r1n2 r1n3"},
		{"a1-b1-a1-b3", "a1-b1 a1-b2 a1-b3"},
		// names with dashes that are not ranges
		{"rack-1", "rack-1"},
		{"n1-m5", "n1-m5"},
		{"n1-n5-mgmt", "n1-n5-mgmt"},
		{"1-5", "1-5"},
		{"n-1", "n-1"},
		{"n1-n", "n1-n"},
		{"n1-", "n1-"},
		{"web-db", "web-db"},
		{"a.b_c-d", "a.b_c-d"},
		{".hidden", ".hidden"},
		{"_x", "_x"},
		{"allx", "allx"},
		{"all1-all3", "all1 all2 all3"},
		{"all[1-2]", "all1 all2"},
		// operators
		{"n1,n2", "n1 n2"},
		{"n1 , n2", "n1 n2"},
		{"n[1-10],!n3", "n1 n2 n4 n5 n6 n7 n8 n9 n10"},
		{"n[1-10],-n3", "n1 n2 n4 n5 n6 n7 n8 n9 n10"},
		{"n[1-10] , - n3", "n1 n2 n4 n5 n6 n7 n8 n9 n10"},
		{"n[1-10]!n[3-10]", "n1 n2"},
		{"n[1-10]&n[3-4,12]", "n3 n4"},
		{"n[1-10] & n[3-4]", "n3 n4"},
		{"n[1-3],-n2,n2&n[2-3]", "n2 n3"},
		{"n1,n2&n2", "n2"},     // left to right: (n1,n2)&n2
		{"n1&n2,n2", "n2"},     // (n1&n2),n2
		{"n1,-n1,n1", "n1"},    // ((n1-n1),n1)
		{"n1&n2", ""},          // empty result is fine
		{"n1\t,\nn2", "n1 n2"}, // any blank
		{"n[1-3],-n[1-3]", ""}, // empty
		{"n10,n9,n1,n01", "n01 n1 n9 n10"},
	}
	for _, tt := range tests {
		got, err := Expand(tt.in)
		if err != nil {
			t.Errorf("Expand(%q): %v", tt.in, err)
			continue
		}
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("Expand(%q) = %q, want %q", tt.in, s, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", "noderange: at 1: empty expression: expected a node name, 'all', '@group', '/regex/' or 'site%nodes'"},
		{"   ", "noderange: at 4: empty expression"},
		{"n[1-5", "noderange: at 6: expected ',' or ']' to close the range opened at 2, found end of input"},
		{"n[1-5;", "noderange: at 6: expected ',' or ']' to close the range opened at 2, found ';'"},
		{"n[]", "noderange: at 3: expected a number in the range opened at 2, found ']'"},
		{"n[a]", "noderange: at 3: expected a number in the range opened at 2, found 'a'"},
		{"n[1-]", "noderange: at 5: expected a number after '-' in the range opened at 2, found ']'"},
		{"n[1,]", "noderange: at 5: expected a number in the range opened at 2, found ']'"},
		{"n[[1]]", "noderange: at 3: expected a number in the range opened at 2, found '['"},
		{"n1]", "noderange: at 3: unexpected ']' without a matching '['"},
		{"n[5-1]", "noderange: at 3: range 5-1 goes backwards: write the low number first"},
		{"n5-n1", "noderange: at 2: range 5-1 goes backwards"},
		{"n[1-010]", "noderange: at 5: inconsistent zero padding in 1-010: pad both ends to the same width, as in 01-10"},
		{"n[01-005]", "noderange: at 6: inconsistent zero padding in 01-005"},
		{"n1-n05", "noderange: at 5: inconsistent zero padding in 1-05"},
		{"n[1234567890123456789]", "noderange: at 3: number 1234567890123456789 is too long (at most 18 digits)"},
		{"n1-n1234567890123456789", "noderange: at 5: number 1234567890123456789 is too long"},
		{"n1,", "noderange: at 4: expected a term after \",\" at 3, found end of input"},
		{"n1 ,- ", "noderange: at 7: expected a term after \",- \" at 4, found end of input"},
		{"n1&", "noderange: at 4: expected a term after \"&\" at 3, found end of input"},
		{"n1,,n2", "noderange: at 4: expected a node name, 'all', '@group', '/regex/' or 'site%nodes', found ','"},
		{"n1,!-n2", "noderange: at 5: expected a node name"},
		{"n1&!n2", "noderange: at 4: expected a node name, 'all', '@group', '/regex/' or 'site%nodes', found '!'"},
		{"n1 n2", "noderange: at 4: expected ',', '!' or '&' after \"n1\", found 'n'"},
		{"n1;n2", "noderange: at 3: expected ',', '!' or '&' after \"n1\", found ';'"},
		{"n1,né", "noderange: at 5: expected ',', '!' or '&' after \"n\", found 'é'"},
		{"-n1", "noderange: at 1: '-' excludes nodes but nothing comes before it: write the nodes to exclude from first, as in all,-n1"},
		{"!n1", "noderange: at 1: '!' excludes nodes but nothing comes before it"},
		{"east%", "noderange: at 6: expected nodes (a name, 'all', '@group' or '/regex/') after '%', found end of input"},
		{"east%-n1", "noderange: at 6: expected nodes"},
		{"%n1", "noderange: at 1: expected a node name, 'all', '@group', '/regex/' or 'site%nodes', found '%'"},
		{"a%b%c", "noderange: at 4: unexpected '%': a term has at most one site qualifier"},
		{"@role=x%n1", "noderange: at 8: unexpected '%'"},
		{"/n/%n1", "noderange: at 4: unexpected '%'"},
		{"(east,west)", "noderange: at 12: expected '%' after the site list, found end of input"},
		{"(east,west) %n1", "noderange: at 12: expected '%' after the site list, found ' '"},
		{"()%n1", "noderange: at 2: expected a site name in the site list opened at 1, found ')'"},
		{"(east,)%n1", "noderange: at 7: expected a site name in the site list opened at 1, found ')'"},
		{"(east west)%n1", "noderange: at 7: expected ',' or ')' in the site list opened at 1, found 'w'"},
		{"(east", "noderange: at 6: expected ',' or ')' in the site list opened at 1, found end of input"},
		{"(@x)%n1", "noderange: at 2: expected a site name in the site list opened at 1, found '@'"},
		{"@", "noderange: at 2: expected a label name after '@' at 1, found end of input"},
		{"@=x", "noderange: at 2: expected a label name after '@' at 1, found '='"},
		{"@role=a b", "noderange: at 9: expected ',', '!' or '&' after \"@role=a\", found 'b'"},
		{"//", "noderange: at 1: empty regular expression '//'"},
		{"/n[/", "noderange: at 2: bad regular expression /n[/: missing closing ]: \"[\""},
		{"/a)|(b/", "noderange: at 2: bad regular expression /a)|(b/: unexpected ): \"a)|(b\""},
		{"/abc", "noderange: at 5: expected '/' to close the regular expression opened at 1, found end of input"},
		{"/abc\\/", "noderange: at 7: expected '/' to close the regular expression opened at 1"},
		{"n[1-999999999]", "noderange: at 1: \"n[1-999999999]\" makes the expression expand to more than 1000000 names; split the work into smaller ranges"},
		{"n[1-600000],m[1-600000]", "noderange: at 13: \"m[1-600000]\" makes the expression expand to more than 1000000 names"},
		{"s[1-1000]%n[1-1001]", "noderange: at 1: \"s[1-1000]%n[1-1001]\" makes the expression expand to more than 1000000 names"},
		{"n[1-999999999999999999]", "makes the expression expand to more than 1000000 names"},
		{"[1-999999999999999999][1-999999999999999999]", "makes the expression expand to more than 1000000 names"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q): no error, want %q", tt.in, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q):\n got %s\nwant %s", tt.in, err, tt.want)
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q): error %T, want *SyntaxError", tt.in, err)
		}
	}
}

func TestLimitErrors(t *testing.T) {
	for _, in := range []string{"n[1-999999999]", strings.Repeat("n", MaxInputLen+1)} {
		_, err := Parse(in)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("Parse(%.20q...): %v, want ErrTooLarge", in, err)
		}
	}
	// Exactly at the limit is fine.
	if _, err := Parse("n[1-1000000]"); err != nil {
		t.Errorf("Parse at the limit: %v", err)
	}
	long := strings.Repeat("n", MaxInputLen)
	if _, err := Parse(long); err != nil {
		t.Errorf("Parse of a %d-byte name: %v", MaxInputLen, err)
	}
}

func TestExpandRefusesUniverseTerms(t *testing.T) {
	for _, in := range []string{"all", "@role=x", "/n.*/", "east%n1", "n1,east,west%n2", "(a,b)%n1"} {
		_, err := Expand(in)
		if err == nil || !strings.Contains(err.Error(), "needs the list of sites and nodes") {
			t.Errorf("Expand(%q): %v, want an error saying it needs a universe", in, err)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"n1", "n1"},
		{" n1 , n2 ", "n1,n2"},
		{"n[1-10],!n3", "n[1-10],-n3"},
		{"n[1-10]!n3", "n[1-10],-n3"},
		{"n[1-10] & n3", "n[1-10]&n3"},
		{"n1-n5", "n[1-5]"},
		{"n01-n10", "n[01-10]"},
		{"n[01-5]", "n[01-05]"},
		{"n[5]", "n[5]"},
		{"n1-n[5]", "n1-n[5]"},
		{"rack-1", "rack-1"},
		{"all", "all"},
		{"all%all", "all%all"},
		{"east%n[1-3]", "east%n[1-3]"},
		{"east,west%n1", "east,west%n1"},
		{"( east , west )%n1", "(east,west)%n1"},
		{"(west)%n1", "(west)%n1"},
		{"site[1-3]%@role=db", "site[1-3]%@role=db"},
		{"site1-site3%@role", "site[1-3]%@role"},
		{"@drover.io/role=", "@drover.io/role="},
		{"/n[0-9]+\\/x/", "/n[0-9]+\\/x/"},
		{"(all,east)%all", "(all,east)%all"},
	}
	for _, tt := range tests {
		e, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := e.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		e2, err := Parse(e.String())
		if err != nil || e2.String() != e.String() {
			t.Errorf("re-parse of %q: %v, %v", e.String(), e2, err)
		}
	}
}

func TestRegexAnchoring(t *testing.T) {
	tests := []struct {
		re    string
		match []string
		miss  []string
	}{
		{"n1", []string{"n1"}, []string{"n10", "xn1"}},
		{"n1|n2", []string{"n1", "n2"}, []string{"n12", "xn2"}},
		{"a|ab", []string{"a", "ab"}, []string{"abc"}},
		{`\Qa.b`, []string{"a.b"}, []string{"axb", "a.bc"}},
		{"(?i)N1", []string{"n1", "N1"}, []string{"n11"}},
		{`x\/y`, []string{"x/y"}, []string{"xy"}},
	}
	for _, tt := range tests {
		e, err := Parse("/" + tt.re + "/")
		if err != nil {
			t.Errorf("Parse(/%s/): %v", tt.re, err)
			continue
		}
		re := e.terms[0].nodes.re
		for _, m := range tt.match {
			if !re.MatchString(m) {
				t.Errorf("/%s/ does not match %q", tt.re, m)
			}
		}
		for _, m := range tt.miss {
			if re.MatchString(m) {
				t.Errorf("/%s/ matches %q", tt.re, m)
			}
		}
	}
}

func TestSplitDashRange(t *testing.T) {
	tests := []struct {
		w              string
		prefix, lo, hi string
		ok             bool
	}{
		{"n1-n5", "n", "1", "5", true},
		{"rack-1-rack-3", "rack-", "1", "3", true},
		{"n1-m5", "", "", "", false},
		{"rack-1", "", "", "", false},
		{"1-5", "", "", "", false},
		{"-n1-n2", "", "", "", false}, // never reached: names do not start with '-'
		{"n1-n2-", "", "", "", false},
	}
	for _, tt := range tests {
		p, lo, hi, ok := splitDashRange(tt.w)
		if p != tt.prefix || lo != tt.lo || hi != tt.hi || ok != tt.ok {
			t.Errorf("splitDashRange(%q) = %q %q %q %v", tt.w, p, lo, hi, ok)
		}
	}
}

func TestCompareNatural(t *testing.T) {
	want := []string{"", "0", "00", "001", "01", "1", "2", "10", "a", "a0", "a01", "a1", "a2", "a10", "a10b", "a10b2", "a10b10", "a11", "b", "n9", "n10-a", "n10.x"}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortFunc(got, compareNatural)
	if !slices.Equal(got, want) {
		t.Errorf("natural order:\n got %q\nwant %q", got, want)
	}
	for _, a := range want {
		for _, b := range want {
			if c := compareNatural(a, b); (c == 0) != (a == b) || c != -compareNatural(b, a) {
				t.Errorf("compareNatural(%q, %q) = %d is not a total order", a, b, c)
			}
		}
	}
}
