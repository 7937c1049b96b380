package versionset

import (
	"reflect"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func set(drover string, packs ...string) *api.VersionSet {
	vs := &api.VersionSet{Drover: drover}
	for i := 0; i+1 < len(packs); i += 2 {
		vs.Packs = append(vs.Packs, api.VersionSetPack{Name: packs[i], Version: packs[i+1]})
	}
	return vs
}

var lib = Library{
	"drover-default": {{Version: "1.2.0", Digest: "sha256:d120"}, {Version: "1.1.0", Digest: "sha256:d110"}},
	"site": {
		{Version: "1.0.0", Digest: "sha256:s100", Requires: []Requirement{{"drover-default", ""}}},
		{Version: "1.1.0", Digest: "sha256:s110", Requires: []Requirement{{"drover-default", "^1.2.0"}, {"base", ""}}},
	},
	"base": {{Version: "0.3.0", Digest: "sha256:b030"}},
}

func TestCompareInSync(t *testing.T) {
	res := Compare(set("v1.4.0", "drover-default", "1.2.0", "site", "1.0.0"), lib,
		[]Installed{{"drover-default", "1.2.0", "sha256:d120"}, {"site", "1.0.0", "sha256:s100"}, {"extra", "0.1.0", "sha256:x"}}, "1.4.0")
	if !res.InSync() {
		t.Fatalf("want in sync, got %+v", res.Differences())
	}
	if !reflect.DeepEqual(res.Unmanaged, []string{"extra 0.1.0"}) {
		t.Fatalf("unmanaged: %v", res.Unmanaged)
	}
	for _, p := range res.Packs {
		if p.Action != ActionNone {
			t.Fatalf("%s: action %q on a pack in sync", p.Name, p.Action)
		}
	}
}

func TestCompareDifferences(t *testing.T) {
	res := Compare(set("v1.4.0", "site", "1.1.0", "drover-default", "1.2.0", "base", "0.3.0"), lib,
		[]Installed{{"drover-default", "1.2.0", "sha256:tampered"}, {"site", "1.0.0", "sha256:s100"}}, "v1.3.2")
	var got []string
	for _, d := range res.Differences() {
		got = append(got, d.String())
	}
	want := []string{
		"pack drover-default 1.2.0: site's content differs (sha256:tampered, set wants sha256:d120)",
		"pack base: missing on the site, set wants 0.3.0",
		"pack site: site has 1.0.0, set wants 1.1.0",
		"drover version: site runs v1.3.2, set wants v1.4.0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("differences:\n got %q\nwant %q", got, want)
	}
	// site requires drover-default and base: both go first, whatever the
	// set's order.
	var order []string
	for _, p := range res.Packs {
		order = append(order, p.Name+":"+p.Action)
	}
	if !reflect.DeepEqual(order, []string{"drover-default:push", "base:push", "site:push"}) {
		t.Fatalf("push order %v", order)
	}
	if res.Drover == nil || res.Drover.Action == "" {
		t.Fatalf("drover difference without an action: %+v", res.Drover)
	}
}

func TestCompareNotHeld(t *testing.T) {
	res := Compare(set("", "site", "1.3.0", "base", "9.0.0", "nowhere", "1.0.0"), lib,
		[]Installed{{"site", "1.1.0", "sha256:s110"}, {"base", "9.0.0", "sha256:b900"}}, "dev")
	byName := map[string]Pack{}
	for _, p := range res.Packs {
		byName[p.Name] = p
	}
	s := byName["site"]
	if s.Action != ActionCannot || s.Difference == nil || s.Difference.Error != "the manager holds site 1.0.0, 1.1.0; the version set wants 1.3.0: push it to the manager first (drover content push DIR on the manager; --library-only keeps it without installing it there)" {
		t.Fatalf("site: %+v %+v", s, s.Difference)
	}
	// The right version on the site, but nothing to check it against.
	b := byName["base"]
	if b.Action != ActionCannot || b.Difference == nil || b.Difference.What != api.DiffContent || !strings.Contains(b.Difference.Error, "holds base 0.3.0") {
		t.Fatalf("base: %+v %+v", b, b.Difference)
	}
	n := byName["nowhere"]
	if n.Difference == nil || n.Difference.What != api.DiffMissing || !strings.Contains(n.Difference.Error, "holds no version of pack nowhere") {
		t.Fatalf("nowhere: %+v", n.Difference)
	}
	if res.Drover != nil {
		t.Fatalf("no drover version in the set, yet %+v", res.Drover)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  *api.VersionSet
		want []string
	}{
		{"consistent", set("", "site", "1.1.0", "drover-default", "1.2.0", "base", "0.3.0"), nil},
		{"not held", set("", "site", "1.3.0", "drover-default", "1.2.0", "nowhere", "1.0.0"), []string{
			"pack site: the manager holds site 1.0.0, 1.1.0; the version set wants 1.3.0: push it to the manager first (drover content push DIR on the manager; --library-only keeps it without installing it there)",
			"pack nowhere: the manager holds no version of pack nowhere; the version set wants 1.0.0: push it to the manager first (drover content push DIR on the manager; --library-only keeps it without installing it there)",
		}},
		{"requirement not named", set("", "site", "1.1.0", "drover-default", "1.2.0"), []string{
			"pack site 1.1.0 requires pack base, which the set does not name: a site without it refuses site (add base to the set)",
		}},
		{"requirement outside the constraint", set("", "site", "1.1.0", "drover-default", "1.1.0", "base", "0.3.0"), []string{
			"pack site 1.1.0 requires drover-default ^1.2.0, but the set names drover-default 1.1.0: sites refuse site",
		}},
	} {
		if got := Check(tc.set, lib); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestSameVersion(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"v1.2.0", "1.2.0", true},
		{"1.2.0", "1.2.1", false},
		{"v1.2.0-3-gabcdef", "v1.2.0", false},
		{"1.2.0+b1", "1.2.0+b2", false},
		{"dev", "v1.0.0", false},
		{"", "v1.0.0", false},
		{"dev", "dev", true},
	} {
		if got := sameVersion(tc.a, tc.b); got != tc.same {
			t.Errorf("sameVersion(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

func TestPushOrderCycle(t *testing.T) {
	packs := []Pack{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	out := pushOrder(packs, map[string][]Requirement{"a": {{"b", ""}}, "b": {{"a", ""}}, "c": {{"a", ""}}})
	var names []string
	for _, p := range out {
		names = append(names, p.Name)
	}
	if len(names) != 3 || names[2] != "c" {
		t.Fatalf("order with a cycle: %v", names)
	}
}
