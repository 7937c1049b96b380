package content

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
)

// Sum computes the pack's digest from its content (see Pack.Digest).
func (p *Pack) Sum() string {
	type canonReq struct {
		Name    string `json:"name"`
		Version string `json:"version,omitempty"`
	}
	type canonObj struct {
		Kind string          `json:"kind"`
		Name string          `json:"name"`
		Data json.RawMessage `json:"data"`
	}
	canon := struct {
		Name        string     `json:"name"`
		Version     string     `json:"version"`
		Description string     `json:"description,omitempty"`
		Requires    []canonReq `json:"requires,omitempty"`
		Objects     []canonObj `json:"objects"`
	}{Name: p.Name, Version: p.Version, Description: p.Description, Objects: []canonObj{}}
	for _, r := range p.Requires {
		canon.Requires = append(canon.Requires, canonReq{Name: r.Name, Version: r.Version})
	}
	sort.Slice(canon.Requires, func(i, j int) bool { return canon.Requires[i].Name < canon.Requires[j].Name })
	for _, o := range p.Objects {
		canon.Objects = append(canon.Objects, canonObj{Kind: o.Kind, Name: o.Name, Data: canonicalData(o.Data)})
	}
	sort.SliceStable(canon.Objects, func(i, j int) bool {
		return Ref{canon.Objects[i].Kind, canon.Objects[i].Name}.less(Ref{canon.Objects[j].Kind, canon.Objects[j].Name})
	})
	b, err := json.Marshal(canon)
	if err != nil {
		// Only invalid Data can fail here, and canonicalData quotes it.
		panic(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// canonicalData is an object's JSON in canonical form; data that is not
// JSON is kept, quoted, so it still counts.
func canonicalData(data json.RawMessage) json.RawMessage {
	c, err := canonicalJSON(data)
	if err != nil {
		q, _ := json.Marshal(string(data))
		return q
	}
	return c
}

// Changes lists what an upgrade from one version of a pack to another
// adds, changes and removes, each list sorted by kind and name.
type Changes struct {
	Added   []Ref `json:"added,omitempty"`
	Changed []Ref `json:"changed,omitempty"`
	Removed []Ref `json:"removed,omitempty"`
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Added) == 0 && len(c.Changed) == 0 && len(c.Removed) == 0
}

// Diff compares two packs' objects (either may be nil: nothing). Where an
// object is written, and how its JSON is laid out, do not count.
func Diff(old, new *Pack) Changes {
	index := func(p *Pack) map[Ref]json.RawMessage {
		m := map[Ref]json.RawMessage{}
		if p != nil {
			for _, o := range p.Objects {
				m[o.Ref()] = canonicalData(o.Data)
			}
		}
		return m
	}
	before, after := index(old), index(new)
	var c Changes
	for r, data := range after {
		prev, ok := before[r]
		switch {
		case !ok:
			c.Added = append(c.Added, r)
		case !bytes.Equal(prev, data):
			c.Changed = append(c.Changed, r)
		}
	}
	for r := range before {
		if _, ok := after[r]; !ok {
			c.Removed = append(c.Removed, r)
		}
	}
	for _, l := range [][]Ref{c.Added, c.Changed, c.Removed} {
		sort.Slice(l, func(i, j int) bool { return l[i].less(l[j]) })
	}
	return c
}
