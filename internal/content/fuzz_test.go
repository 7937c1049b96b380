package content

import (
	"os"
	"testing"
)

// FuzzParse: the single-file parser never panics; a pack it accepts has a
// digest that matches its content, survives a JSON round trip unchanged,
// and can be validated (with or without errors) without panicking.
func FuzzParse(f *testing.F) {
	for _, path := range []string{"testdata/site.yaml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"kind: ContentPack\nname: p\nversion: 1.0.0\n",
		"kind: ContentPack\nname: p\nversion: v1.0.0-rc.1+b2\nrequires: [{name: q, version: '^1 || >=3.0.0 <4'}]\n---\nkind: Task\nname: t\nscript: |\n  {{ param \"x\" }}\n",
		"kind: ContentPack\nname: p\nversion: 1.0.0\n---\nkind: Workflow\nname: w\ntasks: [a, b]\n---\nkind: Profile\nname: pr\nparams: {a/workflow: w, n: 1}\n",
		"kind: ContentPack\nname: p\nversion: 1.0.0\n---\nkind: Machine\nname: m\n---\nkind: Task\nname: t\nscript: x\n---\nkind: Task\nname: t\nscript: y\n",
		"kind: ContentPack\nname: p\nversion: 1.0\n---\nkind: Template\nname: t\ncontent: '{{ template \"u\" }}{{ define \"u\" }}{{ end }}'\n",
		"kind: ContentPack\nname: p\nversion: 1.0.0\n---\nkind: Param\nname: x\ntype: integer\nschema: {minimum: 1}\ndefault: 0\n",
		`{"kind":"ContentPack","name":"p","version":"1.0.0"}`,
		"kind: ContentPack\n---\n- 1\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			if p != nil {
				t.Fatalf("Parse returned a pack and an error: %v", err)
			}
			if _, ok := err.(Errors); !ok {
				t.Fatalf("Parse error is %T, not Errors: %v", err, err)
			}
			return
		}
		if p.Digest != p.Sum() {
			t.Fatalf("digest %s, content sums to %s", p.Digest, p.Sum())
		}
		back, _ := roundTrip(t, p)
		_ = p.Validate([]*Pack{p})
		if d := Diff(p, back); !d.Empty() {
			t.Fatalf("Diff of a pack and its copy: %+v", d)
		}
	})
}
