package noderange

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// set builds a NodeSet from "site%name" and "name" strings.
func set(specs ...string) *NodeSet {
	s := NewNodeSet()
	for _, spec := range specs {
		if site, name, ok := strings.Cut(spec, "%"); ok {
			s.Add(Node{site, name})
		} else {
			s.Add(Node{"", spec})
		}
	}
	return s
}

func seq(format string, lo, hi int) []string {
	var out []string
	for i := lo; i <= hi; i++ {
		out = append(out, fmt.Sprintf(format, i))
	}
	return out
}

func cat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestFold(t *testing.T) {
	tests := []struct {
		nodes []string
		want  string
	}{
		{nil, ""},
		{[]string{"n1"}, "n1"},
		{cat(seq("n%d", 1, 5), []string{"n7"}), "n[1-5,7]"},
		{seq("n%d", 1, 10), "n[1-10]"},
		{seq("n%02d", 1, 10), "n[01-10]"},
		{cat(seq("n%02d", 1, 11), []string{"n100"}), "n[01-11,100]"},
		{seq("n%03d", 98, 101), "n[098-101]"},
		{[]string{"n1", "n01"}, "n[1,01]"},
		{[]string{"n0", "n00", "n000"}, "n[0,00,000]"},
		{cat(seq("n%d", 1, 9), seq("n%02d", 1, 3)), "n[1-9,01-03]"},
		{cat(seq("r1n%d", 1, 3), seq("r2n%d", 1, 3)), "r[1-2]n[1-3]"},
		{[]string{"r1n1", "r1n2", "r2n1"}, "r1n[1-2],r2n1"},
		{[]string{"r1n1", "r2n1", "r3n1"}, "r[1-3]n1"},
		{cat(seq("r1u%02d", 1, 4), seq("r2u%02d", 1, 4), seq("r3u%02d", 3, 4)), "r[1-2]u[01-04],r3u[03-04]"},
		{[]string{"login", "master"}, "login,master"},
		{[]string{"n1", "login"}, "login,n1"},
		{seq("rack-%d", 1, 3), "rack-[1-3]"},
		{seq("n%d-mgmt", 1, 3), "n[1-3]-mgmt"},
		{seq("%d", 8, 12), "[8-12]"},
		{[]string{"rack-1"}, "rack-1"},
		{[]string{"n1-m5"}, "n1-m5"},
		{[]string{"n1-n5"}, "n1-n[5]"},
		{[]string{"n1-n5", "n1-n6"}, "n1-n[5-6]"},
		{[]string{"rack-1-rack-3"}, "rack-1-rack-[3]"},
		{[]string{"all"}, "/all/"},
		{[]string{"a b", "x/y", "-lead", "é1"}, `/-lead|a b|x\/y|é1/`},
		{[]string{"n1234567890123456789"}, "n1234567890123456789"},
		{[]string{"n123456789012345678"}, "n123456789012345678"},
		{[]string{"n123456789012345678", "n123456789012345677"}, "n[123456789012345677-123456789012345678]"},
		{[]string{"n1234567890123456789-n1234567890123456789"}, "/n1234567890123456789-n1234567890123456789/"},
		// Several sites.
		{cat(seq("east%%n%d", 1, 3), []string{"east%n5", "west%n01", "west%n02"}), "east%n[1-3,5],west%n[01-02]"},
		{cat(seq("east%%n%d", 1, 5), seq("west%%n%d", 1, 5)), "(east,west)%n[1-5]"},
		{cat(seq("site1%%n%d", 1, 5), seq("site2%%n%d", 1, 5), seq("site3%%n%d", 1, 5)), "site[1-3]%n[1-5]"},
		{cat(seq("east%%n%d", 1, 2), seq("n%d", 1, 2)), "east%n[1-2],n[1-2]"},
		{[]string{"east%n1", "east%login", "west%n1", "west%login"}, "(east,west)%login,(east,west)%n1"},
		{[]string{"east%all", "n1"}, "east%/all/,n1"},
		{[]string{"b%n1", "a%n2", "east"}, "a%n2,b%n1,east"},
	}
	for _, tt := range tests {
		s := set(tt.nodes...)
		if got := s.Fold(); got != tt.want {
			t.Errorf("Fold(%q)\n got %s\nwant %s", tt.nodes, got, tt.want)
		}
		if s.Len() > 0 {
			checkRoundTrip(t, s, nil)
		}
	}
}

// checkRoundTrip checks that Fold(s), parsed and evaluated against a
// universe with the nodes of s plus extra, gives s back.
func checkRoundTrip(t *testing.T, s, extra *NodeSet) {
	t.Helper()
	u := MapUniverse{}
	for _, set := range []*NodeSet{s, extra} {
		for _, n := range set.Nodes() {
			u[n.Site] = append(u[n.Site], NodeInfo{Name: n.Name})
		}
	}
	folded := s.Fold()
	got, err := Resolve(folded, u)
	if err != nil {
		t.Fatalf("Fold(%v) = %q does not evaluate: %v", s.Nodes(), folded, err)
	}
	if !got.Equal(s) {
		t.Fatalf("Fold(%v) = %q evaluates to %v", s.Nodes(), folded, got.Nodes())
	}
	if again := got.Fold(); again != folded {
		t.Fatalf("Fold is not canonical: %q then %q", folded, again)
	}
}

// chooser feeds the node generator: a seeded random source for property
// tests, or the fuzzer's bytes.
type chooser interface{ intn(n int) int }

type randChooser struct{ r *rand.Rand }

func (c randChooser) intn(n int) int { return c.r.IntN(n) }

type byteChooser struct {
	b []byte
	i int
}

func (c *byteChooser) intn(n int) int {
	if c.i >= len(c.b) {
		return 0
	}
	v := int(c.b[c.i])
	c.i++
	return v % n
}

var (
	genSites    = []string{"", "", "", "east", "west", "site1", "site2", "site3", "site10", "dc.eu-1", "a-1-a-2", "s1-s2"}
	genPrefixes = []string{"n", "node", "r", "rack-", "cn.", "a-b-", "N", "x_"}
	genWords    = []string{"login", "master", "db", "web-a", "x.y", "_z", "east", "west", "all", "allx", ".dot", "a--b"}
	genOdd      = []string{"a b", "n/1", "é1", "-lead", "x%y", "a,b", "", "tab\t1", "n[1]", "@x", "a\\b", "(p)"}
)

func genNum(c chooser) string {
	var v int
	switch c.intn(6) {
	case 0:
		v = c.intn(1000)
	case 1:
		v = 100 + c.intn(20)
	default:
		v = c.intn(15)
	}
	width := []int{0, 0, 0, 2, 3}[c.intn(5)]
	return fmt.Sprintf("%0*d", width, v)
}

func genName(c chooser) string {
	p := genPrefixes[c.intn(len(genPrefixes))]
	switch c.intn(10) {
	case 0, 1, 2:
		return p + genNum(c)
	case 3:
		return "r" + genNum(c) + "n" + genNum(c)
	case 4:
		return genWords[c.intn(len(genWords))]
	case 5:
		switch c.intn(4) {
		case 0:
			return "rack-" + genNum(c)
		case 1:
			return "n" + genNum(c) + "-m" + genNum(c)
		case 2:
			return "n" + genNum(c) + "-n" + genNum(c) // reads as a range
		default:
			return genNum(c) + "-" + genNum(c)
		}
	case 6:
		return genOdd[c.intn(len(genOdd))]
	case 7:
		return "n" + strings.Repeat("9", 17+c.intn(4)) + genNum(c)
	case 8:
		return genNum(c)
	default:
		return p + genNum(c) + []string{"-mgmt", ".east", "a", "-1"}[c.intn(4)]
	}
}

func genSet(c chooser, max int) *NodeSet {
	s := NewNodeSet()
	n := c.intn(max + 1)
	for range n {
		site := genSites[c.intn(len(genSites))]
		name := genName(c)
		s.Add(Node{site, name})
		// Runs of neighbours, so that ranges form.
		if c.intn(3) == 0 {
			base := "n"
			if c.intn(2) == 0 {
				base = genPrefixes[c.intn(len(genPrefixes))]
			}
			lo, k, width := c.intn(20), c.intn(30), []int{0, 2, 3}[c.intn(3)]
			for i := lo; i < lo+k; i++ {
				s.Add(Node{site, fmt.Sprintf("%s%0*d", base, width, i)})
			}
		}
	}
	return s
}

func TestFoldRoundTripProperty(t *testing.T) {
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range iterations {
		c := randChooser{r}
		s := genSet(c, 1+i%40)
		if s.Len() == 0 {
			continue
		}
		checkRoundTrip(t, s, genSet(c, 20))
	}
}

func FuzzFoldRoundTrip(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{5, 3, 0, 0, 0, 1, 2, 3, 4, 5})
	f.Add([]byte("east west n[1-5] all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &byteChooser{b: data}
		s := genSet(c, 30)
		if s.Len() == 0 {
			return
		}
		checkRoundTrip(t, s, genSet(c, 10))
	})
}
