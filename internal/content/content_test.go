package content

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/drover-project/drover/api"
)

func mustLoad(t *testing.T, path string) *Pack {
	t.Helper()
	p, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return p
}

func TestLoadDir(t *testing.T) {
	p := mustLoad(t, "testdata/site")
	if p.Name != "site" || p.Version != "1.2.0" || p.Description == "" {
		t.Errorf("header = %+v (a leading v is dropped from the version)", p.Header)
	}
	if want := []Requirement{{Name: "base", Version: ">=1.0.0, <2.0.0", Line: 5}}; !reflect.DeepEqual(p.Requires, want) {
		t.Errorf("requires = %+v, want %+v", p.Requires, want)
	}
	if p.File != "pack.yaml" || p.Line != 1 {
		t.Errorf("header at %s:%d", p.File, p.Line)
	}
	// Sorted by path; hidden files and directories and non-content files
	// skipped; a templates/ file is a Template named after it.
	var got []string
	for _, o := range p.Objects {
		got = append(got, o.Kind+" "+o.Name+" "+o.File)
	}
	want := []string{
		"Param site/ntp-server params.yaml",
		"Param burnin/seconds params.yaml",
		"Profile site profiles.json",
		"Task burnin tasks/burnin.yaml",
		"Task ntp tasks/ntp.yml",
		"Workflow site-commission tasks/ntp.yml",
		"Template motd.tmpl templates/motd.tmpl",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("objects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	motd := p.Find(api.KindTemplate, "motd.tmpl")
	obj, err := motd.Decode()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := obj.(*api.Template)
	data, _ := os.ReadFile("testdata/site/templates/motd.tmpl")
	if tmpl.Content != string(data) || tmpl.Kind != api.KindTemplate || tmpl.Name != "motd.tmpl" {
		t.Errorf("template from file = %+v", tmpl)
	}
	burnin := p.Find(api.KindTask, "burnin")
	if burnin.Line != 1 || burnin.BodyLine != 5 || burnin.Lines["timeout"] != 3 {
		t.Errorf("burnin at line %d, body at %d, lines %v", burnin.Line, burnin.BodyLine, burnin.Lines)
	}
	if wf := p.Find(api.KindWorkflow, "site-commission"); wf.Line != 7 || wf.Lines["tasks[1]"] != 9 {
		t.Errorf("workflow at %d, lines %v", wf.Line, wf.Lines)
	}
	if !strings.HasPrefix(p.Digest, "sha256:") || len(p.Digest) != len("sha256:")+64 {
		t.Errorf("digest %q", p.Digest)
	}
}

func TestLoadSingleFile(t *testing.T) {
	p := mustLoad(t, "testdata/site.yaml")
	if p.Name != "site" || p.Version != "1.2.0" || p.File != "site.yaml" || p.Line != 2 {
		t.Errorf("header = %+v", p.Header)
	}
	if len(p.Objects) != 7 {
		t.Fatalf("%d objects", len(p.Objects))
	}
	if o := p.Objects[0]; o.Kind != api.KindProfile || o.File != "site.yaml" || o.Line != 9 {
		t.Errorf("first object %s %s at %s:%d", o.Kind, o.Name, o.File, o.Line)
	}
	if o := p.Find(api.KindTemplate, "motd.tmpl"); o.BodyLine != 18 {
		t.Errorf("template body at %d", o.BodyLine)
	}
	// The same content laid out differently has the same digest.
	dir := mustLoad(t, "testdata/site")
	if p.Digest != dir.Digest {
		t.Errorf("digest of the single file %s != digest of the directory %s", p.Digest, dir.Digest)
	}
	if d := Diff(dir, p); !d.Empty() {
		t.Errorf("Diff(dir, file) = %+v", d)
	}
	// LoadFS reads both forms.
	fsys := os.DirFS("testdata")
	for _, root := range []string{"site", "site.yaml"} {
		q, err := LoadFS(fsys, root)
		if err != nil {
			t.Fatal(err)
		}
		if q.Digest != p.Digest {
			t.Errorf("LoadFS(%s) digest %s", root, q.Digest)
		}
	}
}

func TestValidateGood(t *testing.T) {
	base := mustLoad(t, "testdata/base")
	site := mustLoad(t, "testdata/site")
	if err := base.Validate(nil); err != nil {
		t.Errorf("base: %v", err)
	}
	if err := site.Validate([]*Pack{base}); err != nil {
		t.Errorf("site with base installed: %v", err)
	}
	// An older version of the pack itself among the installed ones is
	// ignored, not taken as what it requires.
	old := mustLoad(t, "testdata/site")
	old.Version = "0.1.0"
	if err := site.Validate([]*Pack{old, base}); err != nil {
		t.Errorf("site with an old site installed: %v", err)
	}
	if err := Default().Validate(nil); err != nil {
		t.Errorf("default pack: %v", err)
	}
}

func TestDigestStable(t *testing.T) {
	a := mustLoad(t, "testdata/site")
	b := mustLoad(t, "testdata/site")
	// Order of objects and requirements, files and lines do not count.
	for i, j := 0, len(b.Objects)-1; i < j; i, j = i+1, j-1 {
		b.Objects[i], b.Objects[j] = b.Objects[j], b.Objects[i]
	}
	for i := range b.Objects {
		b.Objects[i].File = "elsewhere.yaml"
		b.Objects[i].Line += 100
	}
	if a.Sum() != b.Sum() || a.Sum() != a.Digest {
		t.Errorf("reordered: %s != %s", a.Sum(), b.Sum())
	}
	// Content does.
	for name, change := range map[string]func(p *Pack){
		"version":     func(p *Pack) { p.Version = "1.2.1" },
		"description": func(p *Pack) { p.Description = "x" },
		"requires":    func(p *Pack) { p.Requires[0].Version = ">=1.1.0" },
		"object": func(p *Pack) {
			p.Objects[0].Data = json.RawMessage(strings.Replace(string(p.Objects[0].Data), "ntp.example.org", "ntp2.example.org", 1))
		},
		"object removed": func(p *Pack) { p.Objects = p.Objects[1:] },
	} {
		c := mustLoad(t, "testdata/site")
		change(c)
		if c.Sum() == a.Digest {
			t.Errorf("changing the %s kept the digest", name)
		}
	}
	if Default().Digest != Default().Digest {
		t.Error("the default pack's digest changes from load to load")
	}
}

// roundTrip encodes a pack to JSON and decodes it, failing unless the copy
// equals the pack; it returns the copy and the JSON.
func roundTrip(t testing.TB, p *Pack) (*Pack, []byte) {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back Pack
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, &back) {
		t.Fatalf("%s: JSON round trip changed the pack:\n%s", p.Name, data)
	}
	return &back, data
}

func TestJSONRoundTrip(t *testing.T) {
	for _, p := range []*Pack{mustLoad(t, "testdata/site"), mustLoad(t, "testdata/site.yaml"), Default()} {
		back, data := roundTrip(t, p)
		if back.Sum() != p.Digest {
			t.Errorf("%s: digest after the round trip %s, want %s", p.Name, back.Sum(), p.Digest)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(data) {
			t.Errorf("%s: second encoding differs", p.Name)
		}
	}
}

func TestDiff(t *testing.T) {
	old := mustLoad(t, "testdata/site")
	new := mustLoad(t, "testdata/site")
	new.Version = "1.3.0"
	// Changed: the param's default. Removed: the ntp task. Added: a task.
	p := new.Find(api.KindParam, "site/ntp-server")
	p.Data = json.RawMessage(strings.Replace(string(p.Data), "ntp.example.org", "ntp.example.net", 1))
	var kept []Object
	for _, o := range new.Objects {
		if o.Name != "ntp" {
			kept = append(kept, o)
		}
	}
	new.Objects = append(kept, Object{Kind: api.KindTask, Name: "extra", Data: json.RawMessage(`{"kind":"Task","name":"extra","script":"true"}`)})
	// Moving an object or re-spacing its JSON is not a change.
	b := new.Find(api.KindTask, "burnin")
	b.File, b.Line = "moved.yaml", 99
	wf := new.Find(api.KindWorkflow, "site-commission")
	wf.Data = json.RawMessage(`{ "tasks": ["base-hello","burnin","ntp"], "name": "site-commission", "kind": "Workflow" }`)

	got := Diff(old, new)
	want := Changes{
		Added:   []Ref{{api.KindTask, "extra"}},
		Changed: []Ref{{api.KindParam, "site/ntp-server"}},
		Removed: []Ref{{api.KindTask, "ntp"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff = %+v, want %+v", got, want)
	}
	if got.Empty() || !Diff(old, old).Empty() {
		t.Error("Empty is wrong")
	}
	// From nothing everything is added, to nothing everything removed,
	// sorted by kind and name.
	all := Diff(nil, old)
	if len(all.Added) != len(old.Objects) || all.Changed != nil || all.Removed != nil {
		t.Errorf("Diff(nil, p) = %+v", all)
	}
	for i := 1; i < len(all.Added); i++ {
		if !all.Added[i-1].less(all.Added[i]) {
			t.Errorf("not sorted: %v", all.Added)
		}
	}
	if gone := Diff(old, nil); len(gone.Removed) != len(old.Objects) || gone.Added != nil {
		t.Errorf("Diff(p, nil) = %+v", gone)
	}
	if s := (Ref{api.KindTask, "x"}).String(); s != "Task/x" {
		t.Errorf("Ref.String = %q", s)
	}
}

func TestErrorsType(t *testing.T) {
	_, err := Parse("p.yaml", []byte("kind: ContentPack\nname: Bad_Name\nversion: 1\n---\nkind: User\nname: u\nrole: admin\n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 3 {
		t.Fatalf("got %v, want 3 errors", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.File != "p.yaml" || e.Line != 1 {
		t.Errorf("errors.As(*Error) = %+v", e)
	}
	if len(errs.Unwrap()) != 3 || !strings.Contains(err.Error(), "\n") {
		t.Errorf("Unwrap/Error: %v", err)
	}
}

// A pack directory that does not hold what Load needs.
func TestLoadFSErrors(t *testing.T) {
	if _, err := Load("testdata/nope"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing path: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("kind: Task\nname: t\nscript: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), "pack.yaml: "+dir+" has no pack.yaml") {
		t.Errorf("no pack.yaml: %v", err)
	}
	_, err = LoadFS(fstest.MapFS{"p/pack.yaml": {Data: []byte("name: p\nversion: 1.0.0\n")}}, "q")
	if err == nil {
		t.Error("missing root in an FS loaded")
	}
}
