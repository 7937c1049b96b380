package noderange

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func nodes(names ...string) []NodeInfo {
	out := make([]NodeInfo, len(names))
	for i, n := range names {
		out[i] = NodeInfo{Name: n}
	}
	return out
}

func labeled(name string, kv ...string) NodeInfo {
	labels := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		labels[kv[i]] = kv[i+1]
	}
	return NodeInfo{Name: name, Labels: labels}
}

// testUniverse is a manager with a local site and a few remote ones.
func testUniverse() MapUniverse {
	return MapUniverse{
		"": append(nodes("n1", "n2", "n3", "n01", "rack-1", "n1-m5", "n1-n5", "all", "login"),
			labeled("db1", "role", "db"), labeled("db2", "role", "db", "env", "")),
		"east": append(nodes("n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10"),
			labeled("c1", "role", "compute"), labeled("c2", "role", "compute"),
			labeled("g1", "role", "gpu", "drover.io/rack", "r1")),
		"west": append(nodes("n1", "n2", "n3", "n4", "n5", "n01", "n02"),
			labeled("c1", "role", "compute")),
		"site1": nodes("n1", "n2"),
		"site2": nodes("n1", "n2"),
		"site3": nodes("n1"),
	}
}

func TestEval(t *testing.T) {
	u := testUniverse()
	tests := []struct {
		in   string
		want string // nodes joined by space, as Node.String
	}{
		{"n1", "n1"},
		{"n[1-3]", "n1 n2 n3"},
		{"n01", "n01"},
		{"rack-1", "rack-1"},
		{"n1-m5", "n1-m5"}, // a name, and it exists
		{"n1-n[5]", "n1-n5"},
		{"/n1-n5/", "n1-n5"},
		{"/all/", "all"},
		{"east%n[1-3]", "east%n1 east%n2 east%n3"},
		{"east%n1-n3", "east%n1 east%n2 east%n3"},
		{"west%n[01-02]", "west%n01 west%n02"},
		{"east%n[1-3],-east%n2", "east%n1 east%n3"},
		{"east%all,-east%n[1-10]", "east%c1 east%c2 east%g1"},
		{"all%all,-all%/n.*/", "all db1 db2 login rack-1 east%c1 east%c2 east%g1 west%c1"},
		{"all%n1", "n1 east%n1 site1%n1 site2%n1 site3%n1 west%n1"},
		{"all%@role=compute", "east%c1 east%c2 west%c1"},
		{"all%@role", "db1 db2 east%c1 east%c2 east%g1 west%c1"},
		{"@role=db", "db1 db2"},
		{"@env=", "db2"},
		{"@env", "db2"},
		{"east%@drover.io/rack=r1", "east%g1"},
		{"@role=nothing", ""},
		{"east%/x.*/", ""},
		{"all%@role=compute&east%all", "east%c1 east%c2"},
		{"east%all&east%@role=compute", "east%c1 east%c2"},
		{"site[1-3]%n1", "site1%n1 site2%n1 site3%n1"},
		{"site1-site2%n[1-2]", "site1%n1 site1%n2 site2%n1 site2%n2"},
		{"(east,west)%n[1-2]", "east%n1 east%n2 west%n1 west%n2"},
		{"(east,site[1-2])%n1", "east%n1 site1%n1 site2%n1"},
		{"(all)%n1", "n1 east%n1 site1%n1 site2%n1 site3%n1 west%n1"},
		{"all%all,-west%n3", strings.Join(allBut(u, Node{"west", "n3"}), " ")},
		// The plain site list.
		{"east,west%n[1-2]", "east%n1 east%n2 west%n1 west%n2"},
		{"east , west%n[1-2]", "east%n1 east%n2 west%n1 west%n2"},
		{"east,west,site1%n1", "east%n1 site1%n1 west%n1"},
		{"n1,east%n2", "n1 east%n2"},
		{"n1,east,west%n2", "n1 east%n2 west%n2"},
		{"login,east,west%n2", "login east%n2 west%n2"},
		{"east,west%@role=compute", "east%c1 east%c2 west%c1"},
		{"east,site[1-2]%n2", "east%n2 site1%n2 site2%n2"},
		{"east,west%n2,n3", "n3 east%n2 west%n2"},
		{"west%n2,login", "login west%n2"},
		{"n[1-3]&n1,west%n2", "n1 west%n2"},
		{"east%n1,west%n2", "east%n1 west%n2"},
	}
	for _, tt := range tests {
		set, err := Resolve(tt.in, u)
		if err != nil {
			t.Errorf("Resolve(%q): %v", tt.in, err)
			continue
		}
		if got := nodeStrings(set); got != tt.want {
			t.Errorf("Resolve(%q)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

func allBut(u MapUniverse, skip Node) []string {
	s := NewNodeSet()
	for site, ns := range u {
		for _, n := range ns {
			s.Add(Node{site, n.Name})
		}
	}
	s.Remove(skip)
	var out []string
	for _, n := range s.Nodes() {
		out = append(out, n.String())
	}
	return out
}

func nodeStrings(s *NodeSet) string {
	var out []string
	for _, n := range s.Nodes() {
		out = append(out, n.String())
	}
	return strings.Join(out, " ")
}

func TestEvalErrors(t *testing.T) {
	u := testUniverse()
	tests := []struct {
		in, want string
	}{
		{"n7", "noderange: unknown node n7"},
		{"east%n17,west%n9", "noderange: unknown nodes east%n17, west%n9"},
		{"(all)%login", "noderange: unknown nodes (east,site[1-3],west)%login"},
		{"east%n[9-12],west%n9", "noderange: unknown nodes east%n[11-12], west%n9"},
		{"n[1-5]", "noderange: unknown nodes n[4-5]"},
		{"north%n1", "noderange: unknown site north"},
		{"(north,south)%n1,east%n99", "noderange: unknown sites north, south; unknown node east%n99"},
		{"site[1-5]%n1", "noderange: unknown sites site4, site5"},
		{"site[1-3]%n2", "noderange: unknown node site3%n2"},
		{"all%n2", "noderange: unknown node site3%n2"},
		// Exclusions and intersections are checked too: a typo must not widen a command.
		{"all,-n99", "noderange: unknown node n99"},
		{"east%all,-east%n11", "noderange: unknown node east%n11"},
		{"n1&n99", "noderange: unknown node n99"},
		// Hints.
		{"east", "noderange: unknown node east (east is a site: write east%all for all its nodes)"},
		{"n2-m5", "noderange: unknown node n2-m5 (n2-m5 is read as one name: a dash range needs the same prefix on both ends, as in n1-n5)"},
		{"north,east%n1", "noderange: unknown node north"},
		{"east,north%n1", "noderange: unknown site north"},
		{"n1,west,-east%n1", "noderange: unknown node west (west is a site"},
	}
	for _, tt := range tests {
		_, err := Resolve(tt.in, u)
		if err == nil {
			t.Errorf("Resolve(%q): no error, want %q", tt.in, tt.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Resolve(%q):\n got %s\nwant %s", tt.in, err, tt.want)
		}
	}
}

func TestUnknownErrorLists(t *testing.T) {
	_, err := Resolve("east%n[11-12],west%n9,(north,south)%n1,n[1-4]", testUniverse())
	var ue *UnknownError
	if !errors.As(err, &ue) {
		t.Fatalf("got %T %v, want *UnknownError", err, err)
	}
	if !slices.Equal(ue.Sites, []string{"north", "south"}) {
		t.Errorf("Sites = %q", ue.Sites)
	}
	want := []Node{{"", "n4"}, {"east", "n11"}, {"east", "n12"}, {"west", "n9"}}
	if !slices.Equal(ue.Nodes, want) {
		t.Errorf("Nodes = %v, want %v", ue.Nodes, want)
	}
}

func TestEvalNoLocalSite(t *testing.T) {
	u := testUniverse()
	delete(u, "")
	_, err := Resolve("n1", u)
	want := "noderange: unknown node n1 (there is no local site here: qualify names with their site, as in east%n1)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	// all, groups and regexes on the missing local site match nothing.
	for _, in := range []string{"all", "@role", "/.*/"} {
		set, err := Resolve(in, u)
		if err != nil || set.Len() != 0 {
			t.Errorf("Resolve(%q) = %v, %v; want empty", in, set, err)
		}
	}
	// The plain site list needs no local site.
	set, err := Resolve("east,west%n1", u)
	if err != nil || nodeStrings(set) != "east%n1 west%n1" {
		t.Errorf("east,west%%n1 = %v, %v", set, err)
	}
}

func TestEvalSingleSite(t *testing.T) {
	u := MapUniverse{"": nodes("n1", "n2", "east")}
	for in, want := range map[string]string{
		"all":        "east n1 n2",
		"all%all":    "east n1 n2",
		"n1,east":    "east n1",
		"east,n1":    "east n1",
		"all%n[1-2]": "n1 n2",
	} {
		set, err := Resolve(in, u)
		if err != nil || nodeStrings(set) != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", in, set, err, want)
		}
	}
	_, err := Resolve("east,west%n1", u)
	if err == nil || err.Error() != "noderange: unknown site west" {
		t.Errorf("east,west%%n1 on a single site: %v", err)
	}
}

func TestEvalAmbiguous(t *testing.T) {
	u := testUniverse()
	u[""] = append(u[""], NodeInfo{Name: "east"})
	_, err := Resolve("east,west%n1", u)
	var ae *AmbiguousError
	if !errors.As(err, &ae) || ae.Word != "east" || ae.Pos != 1 {
		t.Fatalf("got %v, want *AmbiguousError for east at 1", err)
	}
	want := `noderange: at 1: "east" is both a site and a local node, so "east,west%n1" is ambiguous: write (east,...)%nodes for the site, or put the local node after the site-qualified term`
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
	// The ways out.
	for in, want := range map[string]string{
		"(east,west)%n1": "east%n1 west%n1",
		"west%n1,east":   "east west%n1",
		"east":           "east",
	} {
		set, err := Resolve(in, u)
		if err != nil || nodeStrings(set) != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", in, set, err, want)
		}
	}
}

func TestEvalLimit(t *testing.T) {
	u := MapUniverse{}
	for i := range 2000 {
		u[fmt.Sprintf("s%d", i)] = nil
	}
	_, err := Resolve("all%n[1-1000]", u)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), `noderange: at 1: "all%n[1-1000]" expands to more than 1000000 names over 2000 sites`) {
		t.Errorf("message: %s", err)
	}
}

type failingUniverse struct{ MapUniverse }

func (f failingUniverse) Nodes(site string) ([]NodeInfo, error) {
	if site == "west" {
		return nil, errors.New("link down")
	}
	return f.MapUniverse.Nodes(site)
}

func TestEvalUniverseError(t *testing.T) {
	_, err := Resolve("all%n1", failingUniverse{testUniverse()})
	if err == nil || err.Error() != `noderange: listing the nodes of site "west": link down` {
		t.Errorf("got %v", err)
	}
}

func TestNodeSet(t *testing.T) {
	var z NodeSet // the zero value works
	z.Add(Node{"b", "n10"}, Node{"b", "n2"}, Node{"", "x"}, Node{"a", "n1"})
	if z.Len() != 4 || !z.Contains(Node{"b", "n2"}) || z.Contains(Node{"a", "n2"}) {
		t.Fatalf("zero NodeSet: %v", z.Nodes())
	}
	if got := fmt.Sprint(z.Nodes()); got != "[x a%n1 b%n2 b%n10]" {
		t.Errorf("Nodes() = %s", got)
	}
	if got := z.Sites(); !slices.Equal(got, []string{"", "a", "b"}) {
		t.Errorf("Sites() = %q", got)
	}
	if got := z.Names("b"); !slices.Equal(got, []string{"n2", "n10"}) {
		t.Errorf("Names(b) = %q", got)
	}
	o := NewNodeSet(Node{"b", "n2"}, Node{"c", "n1"})
	if got := z.Union(o).Len(); got != 5 {
		t.Errorf("Union len %d", got)
	}
	if got := nodeStrings(z.Intersect(o)); got != "b%n2" {
		t.Errorf("Intersect = %s", got)
	}
	if got := nodeStrings(z.Difference(o)); got != "x a%n1 b%n10" {
		t.Errorf("Difference = %s", got)
	}
	if z.Len() != 4 || o.Len() != 2 {
		t.Errorf("set operations changed their operands")
	}
	c := z.Clone()
	c.Remove(Node{"", "x"}, Node{"nope", "n"})
	if c.Len() != 3 || z.Len() != 4 || c.Equal(&z) || !c.Equal(z.Difference(NewNodeSet(Node{"", "x"}))) {
		t.Errorf("Clone/Remove/Equal")
	}
	var nilSet *NodeSet
	if nilSet.Len() != 0 || nilSet.Contains(Node{}) || nilSet.Nodes() != nil || !nilSet.Equal(NewNodeSet()) {
		t.Errorf("nil set")
	}
	if got := z.String(); got != "a%n1,b%n[2,10],x" {
		t.Errorf("String() = %s", got)
	}
}
