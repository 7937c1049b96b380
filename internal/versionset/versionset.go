// Package versionset compares what a site has with the version set it is
// kept at: which packs are missing, at another version or with other
// content, which cannot be pushed because the manager does not hold them,
// whether the site runs the drover version the set wants, and in which
// order the packs to push must go (a pack after the packs it requires).
//
// It decides nothing about time or transport: the manager's sync loop
// (internal/server) feeds it the set, its pack library and its mirror of
// the site, and acts on the answer.
package versionset

import (
	"fmt"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/drover-project/drover/api"
)

// Installed is a pack installed on the site (from the manager's mirror).
type Installed struct {
	Name, Version, Digest string
}

// Kept is a pack version the manager holds in its library.
type Kept struct {
	Version, Digest string
	// Requires are the packs it requires.
	Requires []Requirement
}

// Requirement is a pack a kept pack requires, with its version
// constraint ("" for any).
type Requirement struct {
	Name, Constraint string
}

// Library is the manager's pack library: pack name to the versions it
// holds.
type Library map[string][]Kept

// find returns the kept version of a pack.
func (l Library) find(name, version string) (Kept, bool) {
	for _, k := range l[name] {
		if k.Version == version {
			return k, true
		}
	}
	return Kept{}, false
}

// versions lists the versions held of a pack, oldest first.
func (l Library) versions(name string) []string {
	var vs []*semver.Version
	var raw []string
	for _, k := range l[name] {
		if v, err := semver.NewVersion(k.Version); err == nil {
			vs = append(vs, v)
		} else {
			raw = append(raw, k.Version)
		}
	}
	sort.Sort(semver.Collection(vs))
	out := make([]string, 0, len(vs)+len(raw))
	for _, v := range vs {
		out = append(out, v.Original())
	}
	sort.Strings(raw)
	return append(out, raw...)
}

// What a pack of the set needs (Result.Packs).
const (
	ActionNone   = ""        // the site has it as the set wants
	ActionPush   = "push"    // push the library's copy to the site
	ActionCannot = "missing" // differs (or cannot be checked) and the manager does not hold it
)

// Pack is one pack of the set and what it needs.
type Pack struct {
	Name, Version string
	// Digest is the library copy's digest (empty when not held).
	Digest string
	Action string
	// Difference is set when the site differs from the set (or the pack
	// cannot be checked).
	Difference *api.SyncDifference
}

// Result is the comparison of a site with its set.
type Result struct {
	// Packs are the set's packs in push order: a pack after the packs of
	// the set it requires, otherwise in the set's order.
	Packs []Pack
	// Drover is set when the site runs another drover version than the
	// set wants.
	Drover *api.SyncDifference
	// Unmanaged are the site's packs the set does not name, "name
	// version", sorted.
	Unmanaged []string
}

// Differences lists every difference, packs in push order then drover.
func (r *Result) Differences() []api.SyncDifference {
	var out []api.SyncDifference
	for _, p := range r.Packs {
		if p.Difference != nil {
			out = append(out, *p.Difference)
		}
	}
	if r.Drover != nil {
		out = append(out, *r.Drover)
	}
	return out
}

// InSync reports whether the site has everything as the set wants.
func (r *Result) InSync() bool { return len(r.Differences()) == 0 }

// NotHeldError says that the manager lacks a pack version the set names,
// and what to do.
func NotHeldError(lib Library, name, version string) string {
	held := lib.versions(name)
	what := "holds no version of pack " + name
	if len(held) > 0 {
		what = "holds " + name + " " + strings.Join(held, ", ")
	}
	return fmt.Sprintf("the manager %s; the version set wants %s: push it to the manager first (drover content push DIR on the manager; --library-only keeps it without installing it there)", what, version)
}

// Compare compares a site's installed packs and drover version with a set.
func Compare(set *api.VersionSet, lib Library, site []Installed, siteDrover string) *Result {
	res := &Result{}
	have := map[string]Installed{}
	for _, p := range site {
		have[p.Name] = p
	}
	named := map[string]bool{}
	packs := make([]Pack, 0, len(set.Packs))
	requires := map[string][]Requirement{}
	for _, want := range set.Packs {
		named[want.Name] = true
		p := Pack{Name: want.Name, Version: want.Version}
		kept, held := lib.find(want.Name, want.Version)
		if held {
			p.Digest = kept.Digest
			requires[want.Name] = kept.Requires
		}
		cur, installed := have[want.Name]
		var d *api.SyncDifference
		switch {
		case !installed:
			d = &api.SyncDifference{Pack: want.Name, What: api.DiffMissing, Want: want.Version}
		case !sameVersion(cur.Version, want.Version):
			d = &api.SyncDifference{Pack: want.Name, What: api.DiffVersion, Site: cur.Version, Want: want.Version}
		case held && cur.Digest != kept.Digest:
			d = &api.SyncDifference{Pack: want.Name, What: api.DiffContent, Site: cur.Version, Want: want.Version, SiteDigest: cur.Digest, WantDigest: kept.Digest}
		case !held:
			// The right version, but nothing to check its content
			// against: the manager is the source of truth.
			d = &api.SyncDifference{Pack: want.Name, What: api.DiffContent, Site: cur.Version, Want: want.Version, SiteDigest: cur.Digest}
		}
		if d != nil {
			if held {
				p.Action = ActionPush
			} else {
				p.Action = ActionCannot
				d.Action = "cannot be pushed: the manager does not hold it"
				d.Error = NotHeldError(lib, want.Name, want.Version)
			}
			p.Difference = d
		}
		packs = append(packs, p)
	}
	res.Packs = pushOrder(packs, requires)
	for _, p := range site {
		if !named[p.Name] {
			res.Unmanaged = append(res.Unmanaged, p.Name+" "+p.Version)
		}
	}
	sort.Strings(res.Unmanaged)
	if set.Drover != "" && !sameVersion(siteDrover, set.Drover) {
		res.Drover = &api.SyncDifference{What: api.DiffDrover, Site: siteDrover, Want: set.Drover, Action: "cannot be pushed: upgrade drover on the site"}
	}
	return res
}

// sameVersion compares two versions as semantic versions (v1.2.0 is
// 1.2.0), or as strings when one is not a semantic version (a
// development build's "dev").
func sameVersion(a, b string) bool {
	va, errA := semver.NewVersion(a)
	vb, errB := semver.NewVersion(b)
	if errA != nil || errB != nil {
		return strings.TrimPrefix(a, "v") == strings.TrimPrefix(b, "v")
	}
	return va.Equal(vb) && va.Metadata() == vb.Metadata()
}

// pushOrder puts each pack after the packs of the set it requires,
// keeping the set's order otherwise (a cycle, which a pack library cannot
// hold, keeps the set's order for the packs in it).
func pushOrder(packs []Pack, requires map[string][]Requirement) []Pack {
	index := map[string]int{}
	for i, p := range packs {
		index[p.Name] = i
	}
	out := make([]Pack, 0, len(packs))
	state := make([]int, len(packs)) // 0 new, 1 visiting, 2 done
	var visit func(i int)
	visit = func(i int) {
		if state[i] != 0 {
			return
		}
		state[i] = 1
		for _, r := range requires[packs[i].Name] {
			if j, ok := index[r.Name]; ok {
				visit(j)
			}
		}
		state[i] = 2
		out = append(out, packs[i])
	}
	for i := range packs {
		visit(i)
	}
	return out
}

// Check says what is wrong with a set against the library, each with what
// to do: pack versions the library does not hold, and packs whose
// requirements the set does not meet (a site without the required pack,
// or with a version outside the constraint, refuses them).
func Check(set *api.VersionSet, lib Library) []string {
	var out []string
	named := map[string]string{}
	for _, p := range set.Packs {
		named[p.Name] = p.Version
	}
	for _, p := range set.Packs {
		kept, ok := lib.find(p.Name, p.Version)
		if !ok {
			out = append(out, "pack "+p.Name+": "+NotHeldError(lib, p.Name, p.Version))
			continue
		}
		for _, r := range kept.Requires {
			v, inSet := named[r.Name]
			if !inSet {
				out = append(out, fmt.Sprintf("pack %s %s requires pack %s, which the set does not name: a site without it refuses %s (add %s to the set)", p.Name, p.Version, r.Name, p.Name, r.Name))
				continue
			}
			if r.Constraint == "" {
				continue
			}
			c, err1 := semver.NewConstraint(r.Constraint)
			sv, err2 := semver.NewVersion(v)
			if err1 == nil && err2 == nil && !c.Check(sv) {
				out = append(out, fmt.Sprintf("pack %s %s requires %s %s, but the set names %s %s: sites refuse %s", p.Name, p.Version, r.Name, r.Constraint, r.Name, v, p.Name))
			}
		}
	}
	return out
}
