package content

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

const header = "name: p\nversion: 1.0.0\n"

// loadAndValidate loads a pack directory made of files and validates it
// against installed packs; stage says which step failed.
func loadAndValidate(files map[string]string, installed []*Pack) (stage string, err error) {
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys["pack/"+name] = &fstest.MapFile{Data: []byte(data)}
	}
	p, err := LoadFS(fsys, "pack")
	if err != nil {
		return "load", err
	}
	return "validate", p.Validate(installed)
}

func installedPack(t *testing.T, name, version string, requires []Requirement, objects string) *Pack {
	t.Helper()
	var reqs strings.Builder
	for _, r := range requires {
		reqs.WriteString("  - {name: " + r.Name + ", version: \"" + r.Version + "\"}\n")
	}
	src := "kind: ContentPack\nname: " + name + "\nversion: " + version + "\n"
	if reqs.Len() > 0 {
		src += "requires:\n" + reqs.String()
	}
	if objects != "" {
		src += "---\n" + objects
	}
	p, err := Parse(name+".yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidationErrors(t *testing.T) {
	base := installedPack(t, "base", "1.4.0", nil, "kind: Task\nname: base-task\nscript: echo base\n---\nkind: Param\nname: base/p\n---\nkind: Template\nname: base-tmpl\ncontent: x\n---\nkind: Workflow\nname: base-wf\ntasks: [base-task]\n")
	mid := installedPack(t, "mid", "2.0.0", []Requirement{{Name: "base", Version: "^1.0.0"}}, "kind: Task\nname: mid-task\nscript: echo mid\n")
	needsCore := installedPack(t, "mid", "2.0.0", []Requirement{{Name: "core"}}, "")

	cases := []struct {
		name      string
		files     map[string]string
		installed []*Pack
		stage     string
		want      []string // each error, in order (substrings)
	}{
		{
			name: "broken template in a task file names file and line",
			files: map[string]string{"pack.yaml": header, "tasks/burnin.yaml": "kind: Task\nname: burnin\n" +
				"script: |\n" + // 3
				"  echo start\n" + // 4
				"  echo {{ .Param \"x\" }\n" + // 5
				"  echo end\n"},
			stage: "validate",
			want:  []string{`tasks/burnin.yaml:5: Task "burnin": script: template does not parse: line 2: unexpected "}" in operand`},
		},
		{
			name:  "broken template file",
			files: map[string]string{"pack.yaml": header, "templates/motd.tmpl": "hello\n{{ if .Machine.Name }}\n{{ end }}{{ end }}\n"},
			stage: "validate",
			want:  []string{`templates/motd.tmpl:3: Template "motd.tmpl": content: template does not parse: line 3: unexpected {{end}}`},
		},
		{
			name: "a one-line script points at its line; a quoted multi-line one at its key",
			files: map[string]string{"pack.yaml": header, "t.yaml": "kind: Task\nname: a\nscript: echo {{ oops }}\n---\n" +
				"kind: Task\nname: b\nscript: \"echo 1\\necho {{ end }}\"\n"},
			stage: "validate",
			want: []string{
				`t.yaml:3: Task "a": script: template does not parse: line 1: function "oops" not defined`,
				`t.yaml:7: Task "b": script: template does not parse: line 2: unexpected {{end}}`,
			},
		},
		{
			name: "dangling workflow task",
			files: map[string]string{"pack.yaml": header + "requires: [{name: base}]\n", "wf.yaml": "kind: Task\nname: here\nscript: echo\n---\n" +
				"kind: Workflow\nname: w\ntasks:\n  - here\n  - base-task\n  - nope\n"},
			installed: []*Pack{base},
			stage:     "validate",
			want:      []string{`wf.yaml:10: Workflow "w": tasks[2]: task "nope" is not in this pack or the packs it requires (add a Task "nope", or require the pack that has it)`},
		},
		{
			name: "objects of packs that are installed but not required are not in scope",
			files: map[string]string{"pack.yaml": header,
				"wf.yaml": "kind: Workflow\nname: w\ntasks: [base-task]\n"},
			installed: []*Pack{base},
			stage:     "validate",
			want:      []string{`wf.yaml:3: Workflow "w": tasks[0]: task "base-task" is not in this pack`},
		},
		{
			name: "undeclared params, missing templates; built-in and required ones are fine",
			files: map[string]string{"pack.yaml": header + "requires: [{name: mid}]\n", "t.yaml": "kind: Task\nname: t\nscript: |\n" +
				"  {{ param \"commission/workflow\" }} {{ param \"base/p\" }} {{ template \"base-tmpl\" }}\n" + // 4
				"  {{ paramOr \"undeclared/one\" \"x\" }}\n" + // 5
				"  {{ if hasParam \"undeclared/two\" }}{{ template \"missing\" . }}{{ end }}\n"}, // 6
			installed: []*Pack{mid, base},
			stage:     "validate",
			want: []string{
				`t.yaml:5: Task "t": script: line 2: param "undeclared/one" is not declared (add a Param "undeclared/one" to the pack, or require the pack that declares it)`,
				`t.yaml:6: Task "t": script: line 3: includes template "missing", which is not in this pack or the packs it requires`,
				`t.yaml:6: Task "t": script: line 3: param "undeclared/two" is not declared`,
			},
		},
		{
			name:  "undeclared param in a template file",
			files: map[string]string{"pack.yaml": header, "templates/x.cfg": "a\nb={{ .Param \"nope\" }}\n"},
			stage: "validate",
			want:  []string{`templates/x.cfg:2: Template "x.cfg": content: line 2: param "nope" is not declared`},
		},
		{
			name:      "required pack not installed",
			files:     map[string]string{"pack.yaml": header + "requires:\n  - name: base\n    version: \">=1.0.0\"\n  - name: other\n"},
			installed: []*Pack{base},
			stage:     "validate",
			want:      []string{`pack.yaml:6: ContentPack "p": requires[1]: pack "other" is not installed (install it first with drover content push)`},
		},
		{
			name: "required version not installed: the installed one is still seen, so its tasks are not reported missing too",
			files: map[string]string{"pack.yaml": header + "requires:\n  - name: base\n    version: \">=2.0.0\"\n",
				"w.yaml": "kind: Workflow\nname: w\ntasks: [base-task]\n"},
			installed: []*Pack{base},
			stage:     "validate",
			want:      []string{`pack.yaml:4: ContentPack "p": requires[0]: needs pack "base" version >=2.0.0, but the installed version is 1.4.0 (install a version that matches)`},
		},
		{
			name:      "requirement of a requirement not installed",
			files:     map[string]string{"pack.yaml": header + "requires: [{name: mid}]\n"},
			installed: []*Pack{needsCore},
			stage:     "validate",
			want:      []string{`pack.yaml:3: ContentPack "p": requires[0]: pack "core" is not installed (install it first with drover content push) (required through p → mid)`},
		},
		{
			name:  "kinds a pack cannot hold",
			files: map[string]string{"pack.yaml": header, "m.yaml": "kind: Task\nname: ok\nscript: x\n---\nkind: Machine\nname: n1\n---\nkind: Run\nname: r1\n---\nkind: User\nname: u\nrole: admin\n"},
			stage: "load",
			want: []string{
				`m.yaml:5: Machine "n1": a content pack cannot hold Machine objects (it holds Param, Template, BootEnv, Task, Workflow, Profile)`,
				`m.yaml:8: Run "r1": a content pack cannot hold Run objects`,
				`m.yaml:11: User "u": a content pack cannot hold User objects`,
			},
		},
		{
			name:  "unknown kind and unknown field",
			files: map[string]string{"pack.yaml": header, "a.yaml": "kind: Widget\nname: w\n---\nkind: Task\nname: t\nscirpt: x\n"},
			stage: "load",
			want: []string{
				`a.yaml:1: (no kind)`[:len(`a.yaml:1: `)] + `Widget "w": kind: unknown kind "Widget"`,
				`a.yaml:6: Task "t": scirpt: unknown field "scirpt"`,
			},
		},
		{
			name: "duplicate names both places",
			files: map[string]string{"pack.yaml": header, "a.yaml": "kind: Task\nname: t\nscript: x\n",
				"b/c.yaml":    "kind: Param\nname: t\n---\nkind: Task\nname: t\nscript: y\n",
				"templates/t": "also a Template t",
				"d.yaml":      "kind: Template\nname: t\ncontent: z\n"},
			stage: "load",
			want: []string{
				`b/c.yaml:4: Task "t": defined twice: here and at a.yaml:1 (kind and name must be unique in a pack)`,
				`templates/t:1: Template "t": defined twice: here and at d.yaml:1`,
			},
		},
		{
			name:  "YAML syntax error in one file, others still read",
			files: map[string]string{"pack.yaml": header, "a.yaml": "kind: Task\nname: t\nscript: [\n", "b.yaml": "kind: Task\nname: t2\nscript: x\nnope: 1\n"},
			stage: "load",
			want:  []string{`a.yaml:3: invalid YAML: did not find expected node content`, `b.yaml:4: Task "t2": nope: unknown field "nope"`},
		},
		{
			name:  "the header belongs in pack.yaml",
			files: map[string]string{"pack.yaml": header, "a.yaml": "kind: ContentPack\nname: q\nversion: 1.0.0\n"},
			stage: "load",
			want:  []string{`a.yaml:1: ContentPack "q": the pack header belongs in pack.yaml`},
		},
		{
			name:  "missing pack.yaml",
			files: map[string]string{"a.yaml": "kind: Task\nname: t\nscript: x\n"},
			stage: "load",
			want:  []string{`pack.yaml: pack has no pack.yaml: a pack directory needs one at its root with name and version`},
		},
		{
			name:  "objects in pack.yaml",
			files: map[string]string{"pack.yaml": "kind: Task\nname: t\nscript: x\n"},
			stage: "load",
			want:  []string{`pack.yaml:1: pack.yaml holds the pack header (name, version), not a Task; put objects in other files`},
		},
		{
			name: "bad header",
			files: map[string]string{"pack.yaml": "name: My_Pack\nversion: \"1.0\"\nrequires:\n" +
				"  - name: base\n    version: \">= one\"\n" + // 4
				"  - name: base\n" + // 6
				"  - name: My_Pack\n"}, // 7
			stage: "load",
			want: []string{
				`pack.yaml:1: ContentPack "My_Pack": name: invalid pack name "My_Pack": use 1 to 63 lowercase letters, digits and '-'`,
				`pack.yaml:1: ContentPack "My_Pack": version: "1.0" is not a semantic version (MAJOR.MINOR.PATCH, like 1.0.0)`,
				`pack.yaml:4: ContentPack "My_Pack": requires[0]: version constraint ">= one": `,
				`pack.yaml:6: ContentPack "My_Pack": requires[1]: pack "base" is required twice`,
				`pack.yaml:7: ContentPack "My_Pack": requires[2]: invalid pack name "My_Pack"`,
			},
		},
		{
			name:  "unknown header field",
			files: map[string]string{"pack.yaml": "name: p\nversion: 1.0.0\nrequire: [x]\n"},
			stage: "load",
			want:  []string{`pack.yaml:3: ContentPack "": require: unknown field "require" (a header has name, version, description and requires)`},
		},
		{
			name:  "a pack cannot require itself; versions are numbers",
			files: map[string]string{"pack.yaml": "name: p\nversion: 1.0\nrequires: [{name: p}]\n"},
			stage: "load",
			want: []string{
				`pack.yaml:1: ContentPack "p": version: "1.0" is not a semantic version`,
				`pack.yaml:3: ContentPack "p": requires[0]: a pack cannot require itself`,
			},
		},
		{
			name: "profile values: workflow params name workflows, values fit their params",
			files: map[string]string{"pack.yaml": header + "requires: [{name: base}]\n",
				"p.yaml": "kind: Param\nname: size\ntype: integer\nschema: {minimum: 1}\n---\n" +
					"kind: Param\nname: pw\ntype: string\nsecure: true\nschema: {pattern: '^[0-9]+$'}\n---\n" +
					"kind: Profile\nname: prof\nparams:\n" + // 12-14
					"  commission/workflow: base-wf\n" + // 15
					"  verify/workflow: nope\n" + // 16
					"  size: 0\n" + // 17
					"  pw: hunter2\n" + // 18
					"  deploy/workflow: 3\n" + // 19
					"  free/form: anything\n" + // 20
					"---\nkind: Param\nname: upgrade/workflow\ndefault: gone\n"}, // 22-24
			installed: []*Pack{base},
			stage:     "validate",
			want: []string{
				`p.yaml:16: Profile "prof": params.verify/workflow: param "verify/workflow" names workflow "nope", which is not in this pack or the packs it requires`,
				`p.yaml:17: Profile "prof": params.size: param "size": value does not match its schema: at /: minimum: got 0, want 1`,
				`p.yaml:18: Profile "prof": params.pw: param "pw": value does not match its schema: at /: fails "pattern"`,
				`p.yaml:19: Profile "prof": params.deploy/workflow: param "deploy/workflow" must name a workflow, got 3`,
				`p.yaml:24: Param "upgrade/workflow": default: param "upgrade/workflow" names workflow "gone"`,
			},
		},
		{
			name: "the model's own checks, one per object, with the field's line",
			files: map[string]string{"pack.yaml": header, "m.yaml": "kind: Task\nname: t\nscript: x\ntimeout: forever\n---\n" +
				"kind: Workflow\nname: w\ntasks: []\n---\nkind: Param\nname: p\ntype: strnig\n---\n" +
				"kind: Profile\nname: pr\nlabels: {\"bad key!\": x}\n"},
			stage: "validate",
			want: []string{
				`m.yaml:4: Task "t": timeout: "forever" is not a duration`,
				`m.yaml:8: Workflow "w": tasks: a workflow needs at least one task`,
				`m.yaml:12: Param "p": type: unknown type "strnig"`,
				`m.yaml:16: Profile "pr": labels.bad key!: `,
			},
		},
		{
			name:  "all errors at once, in file and line order",
			files: map[string]string{"pack.yaml": header, "b.yaml": "kind: Workflow\nname: w\ntasks: [x]\n", "a.yaml": "kind: Task\nname: t\nscript: \"{{ param \\\"zz\\\" }}\"\n"},
			stage: "validate",
			want: []string{
				`a.yaml:3: Task "t": script: line 1: param "zz" is not declared`,
				`b.yaml:3: Workflow "w": tasks[0]: task "x" is not in this pack`,
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stage, err := loadAndValidate(c.files, c.installed)
			if err == nil {
				t.Fatalf("no error; want %q", c.want)
			}
			if stage != c.stage {
				t.Errorf("failed at %s, want at %s: %v", stage, c.stage, err)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("%T is not Errors: %v", err, err)
			}
			if len(errs) != len(c.want) {
				t.Errorf("%d errors, want %d:\n%v", len(errs), len(c.want), err)
			}
			for i, w := range c.want {
				if i < len(errs) && !strings.HasPrefix(errs[i].Error(), w) && !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d:\n got %s\nwant %s", i, errs[i], w)
				}
			}
		})
	}
}

// Of several installed versions of a required pack, the newest that meets
// the constraint is in scope, and only it.
func TestValidatePicksNewestMatching(t *testing.T) {
	v1 := installedPack(t, "base", "1.4.0", nil, "kind: Task\nname: in-v1\nscript: x\n")
	v1old := installedPack(t, "base", "1.1.0", nil, "kind: Task\nname: in-v1-old\nscript: x\n")
	v2 := installedPack(t, "base", "2.0.0", nil, "kind: Task\nname: in-v2\nscript: x\n")
	installed := []*Pack{v2, v1old, v1}
	for task, ok := range map[string]bool{"in-v1": true, "in-v1-old": false, "in-v2": false} {
		files := map[string]string{"pack.yaml": header + "requires: [{name: base, version: ^1.0.0}]\n", "w.yaml": "kind: Workflow\nname: w\ntasks: [" + task + "]\n"}
		_, err := loadAndValidate(files, installed)
		if (err == nil) != ok {
			t.Errorf("workflow of task %s: %v", task, err)
		}
	}
	// None matches: every installed version is named, and the newest is
	// in scope.
	files := map[string]string{"pack.yaml": header + "requires: [{name: base, version: \">=3.0.0\"}]\n", "w.yaml": "kind: Workflow\nname: w\ntasks: [in-v2]\n"}
	_, err := loadAndValidate(files, installed)
	if want := `pack.yaml:3: ContentPack "p": requires[0]: needs pack "base" version >=3.0.0, but the installed versions are 2.0.0, 1.1.0, 1.4.0 (install a version that matches)`; err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	// Without a constraint the newest is used.
	files = map[string]string{"pack.yaml": header + "requires: [{name: base}]\n", "w.yaml": "kind: Workflow\nname: w\ntasks: [in-v2]\n"}
	if _, err := loadAndValidate(files, installed); err != nil {
		t.Error(err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"empty", "# nothing\n", `x.yaml: empty pack: start with a header document (kind: ContentPack, name, version), then the objects`},
		{"no header", "kind: Task\nname: t\nscript: x\n", `x.yaml:1: the first document must be the pack header (kind: ContentPack, with name and version)`},
		{"second header", "kind: ContentPack\nname: p\nversion: 1.0.0\n---\nkind: ContentPack\nname: q\nversion: 1.0.0\n", `x.yaml:5: ContentPack "q": only the first document of a file may be the pack header`},
		{"header not a mapping", "- kind: ContentPack\n", `x.yaml:1: the first document must be the pack header`},
		{"syntax", "kind: ContentPack\nname: p\nversion: 1.0.0\n---\nkind: Task\n  name: t\n", `x.yaml:6: invalid YAML`},
		{"version of the wrong type", "kind: ContentPack\nname: p\nversion: [1]\n", `x.yaml:3: ContentPack "p": version: expected a version like 1.0.0, got JSON [1]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse("x.yaml", []byte(c.src))
			if err == nil {
				t.Fatalf("parsed: %+v", p)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("got  %v\nwant %s", err, c.want)
			}
		})
	}
}

// A pack that came as JSON (an API upload, a stored record) is checked as
// thoroughly as one loaded from files.
func TestValidateDecodedPack(t *testing.T) {
	p := mustLoad(t, "testdata/base")
	p.Objects = append(p.Objects,
		Object{Kind: "Machine", Name: "n1", Data: []byte(`{"kind":"Machine","name":"n1"}`), File: "x.json", Line: 1},
		Object{Kind: "Task", Name: "base-hello", Data: []byte(`{"kind":"Task","name":"base-hello","script":"x"}`), File: "x.json", Line: 2},
		Object{Kind: "Task", Name: "a", Data: []byte(`{"kind":"Task","name":"b","script":"x"}`), File: "x.json", Line: 3},
		Object{Kind: "Task", Name: "c", Data: []byte(`{"kind":"Task","name":"c","script":"x","extra":1}`), File: "x.json", Line: 4},
	)
	err := p.Validate(nil)
	for _, w := range []string{
		`pack.yaml:1: ContentPack "base": digest: sha256:`,
		`x.json:1: Machine "n1": kind: a content pack cannot hold Machine objects`,
		`x.json:2: Task "base-hello": defined twice: here and at objects.yaml:5`,
		`x.json:3: Task "a": its data is Task "b", not Task "a"`,
		`x.json:4: Task "c": extra: unknown field "extra"`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}
