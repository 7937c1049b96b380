package model

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func split(t *testing.T, in string) []Document {
	t.Helper()
	docs, err := SplitYAML(strings.NewReader(in))
	if err != nil {
		t.Fatalf("SplitYAML(%q): %v", in, err)
	}
	return docs
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func TestSplitYAML(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		json  []string
		lines []int
	}{
		{"one", "kind: Machine\nname: n1\n", []string{`{"kind":"Machine","name":"n1"}`}, []int{1}},
		{"several, empty ones skipped", "---\n---\nkind: A\nname: a\n---\n# only a comment\n---\nkind: B\nname: b\n...\n", []string{`{"kind":"A","name":"a"}`, `{"kind":"B","name":"b"}`}, []int{3, 8}},
		{"json is yaml", `{"kind": "Machine", "name": "n1", "params": {"x": [1, 2.5, "3"]}}`, []string{`{"kind":"Machine","name":"n1","params":{"x":[1,2.5,"3"]}}`}, []int{1}},
		{"yaml 1.2 strings stay strings", "params:\n  a: yes\n  b: no\n  c: on\n  y: off\n  n: y\n", []string{`{"params":{"a":"yes","b":"no","c":"on","y":"off","n":"y"}}`}, []int{1}},
		{"numbers", "a: 0x1F\nb: 1_000\nc: 123456789012345678901234567890\nd: 1.50\ne: -0\nf: 1e3\ng: 012\n", []string{`{"a":31,"b":1000,"c":123456789012345678901234567890,"d":1.50,"e":-0,"f":1e3,"g":10}`}, []int{1}},
		{"quoted stays string", "a: \"12\"\nb: '0x1F'\nc: !!str 5\nd: 2001-12-14\n", []string{`{"a":"12","b":"0x1F","c":"5","d":"2001-12-14"}`}, []int{1}},
		{"nulls", "a: ~\nb: null\nc:\n", []string{`{"a":null,"b":null,"c":null}`}, []int{1}},
		{"anchors and merges", "base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n", []string{`{"base":{"x":1,"y":2},"m":{"x":1,"y":3}}`}, []int{1}},
		{"block scalars", "script: |\n  echo one\n  echo two\n", []string{`{"script":"echo one\necho two\n"}`}, []int{1}},
		{"binary", "a: !!binary aGVsbG8=\n", []string{`{"a":"hello"}`}, []int{1}},
		{"null document skipped", "~\n---\na: 1\n", []string{`{"a":1}`}, []int{3}},
		{"non-string keys", "1: a\ntrue: b\n", []string{`{"1":"a","true":"b"}`}, []int{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs := split(t, c.in)
			if len(docs) != len(c.json) {
				t.Fatalf("%d documents, want %d: %+v", len(docs), len(c.json), docs)
			}
			for i, d := range docs {
				if d.Index != i+1 {
					t.Errorf("document %d has index %d", i+1, d.Index)
				}
				if !jsonEqual(d.JSON, []byte(c.json[i])) {
					t.Errorf("document %d:\n got %s\nwant %s", i+1, d.JSON, c.json[i])
				}
				if d.Line != c.lines[i] {
					t.Errorf("document %d starts at line %d, want %d", i+1, d.Line, c.lines[i])
				}
			}
		})
	}
}

func TestSplitYAMLFieldLines(t *testing.T) {
	docs := split(t, "kind: Machine\nname: n1\n---\nkind: Task\nname: t1\nlabels:\n  role: x\nscript: |\n  echo\n  echo\ntimeout: 5m\n---\nkind: Workflow\nname: w\ntasks:\n  - a\n  - b\n")
	want := []map[string]int{
		{"kind": 1, "name": 2},
		{"kind": 4, "name": 5, "labels": 6, "labels.role": 7, "script": 8, "timeout": 11},
		{"kind": 13, "name": 14, "tasks": 15, "tasks[0]": 16, "tasks[1]": 17},
	}
	for i, d := range docs {
		if !reflect.DeepEqual(d.Lines, want[i]) {
			t.Errorf("document %d lines %v, want %v", i+1, d.Lines, want[i])
		}
	}
}

func TestSplitYAMLErrors(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		index int
		line  int
		want  string
	}{
		{"bad indentation in document 2", "kind: A\nname: a\n---\nkind: B\nname: b\n  bad: indent\n", 2, 6, "invalid YAML"},
		{"unclosed flow in document 2 after an empty one", "kind: A\nname: a\n---\n---\nkind: B\nx: [1,\n", 2, 6, "invalid YAML: did not find"},
		{"tab indentation", "kind: A\nparams:\n\tx: 1\n", 1, 3, "invalid YAML"},
		{"duplicate key", "kind: A\nname: a\nname: b\n", 1, 3, `key "name" appears twice`},
		{"duplicate nested key", "kind: A\nname: a\nparams:\n  x: 1\n  y: 2\n  x: 3\n", 1, 6, `key "x" appears twice`},
		{"list as key", "kind: A\nparams:\n  ? [1, 2]\n  : x\n", 1, 3, "mapping key"},
		{"infinity", "kind: A\nname: a\nparams:\n  x: .inf\n", 1, 4, ".inf has no JSON form"},
		{"nan in document 3", "a: 1\n---\nb: 2\n---\nc: .nan\n", 3, 5, ".nan has no JSON form"},
		{"unknown tag", "kind: A\nname: !vault secret\n", 1, 2, "unsupported YAML tag !vault"},
		{"unknown alias (yaml.v3 gives no line)", "a: 1\n---\na: *nope\n", 2, 0, "invalid YAML: unknown anchor 'nope'"},
		{"merge of a list", "a: &l [1]\nb:\n  <<: *l\n", 1, 3, "merges mappings only"},
		{"binary that is not text", "a: !!binary //79\n", 1, 1, "UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := SplitYAML(strings.NewReader(c.in))
			var de *DocError
			if !errors.As(err, &de) {
				t.Fatalf("got %v, want a *DocError", err)
			}
			if de.Index != c.index || de.Line != c.line || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %q (index %d, line %d), want document %d line %d %q", err, de.Index, de.Line, c.index, c.line, c.want)
			}
			prefix := "document " + itoa(c.index) + " (line " + itoa(c.line) + "): "
			if c.line == 0 {
				prefix = "document " + itoa(c.index) + ": "
			}
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message %q does not start with %q", err, prefix)
			}
			if strings.Count(err.Error(), "line") > 1 {
				t.Errorf("message %q gives the line twice", err)
			}
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// Aliases that expand exponentially are refused, not expanded.
func TestSplitYAMLAliasBomb(t *testing.T) {
	in := `a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
`
	_, err := SplitYAML(strings.NewReader(in))
	if err == nil {
		t.Fatal("a billion-laughs document was expanded")
	}
	t.Log(err)
}

func TestParseDocumentErrors(t *testing.T) {
	cases := []struct {
		name  string
		in    string // YAML; the error is about its last document
		index int
		line  int
		field string
		want  []string
	}{
		{"unknown kind", "kind: Machine\nname: a\n---\nkind: Widget\nname: w\n", 2, 4, "kind", []string{`Widget "w"`, `unknown kind "Widget"`, "known kinds"}},
		{"kind in lower case", "kind: machine\nname: a\n", 1, 1, "kind", []string{`did you mean "Machine"`}},
		{"missing kind", "name: a\n", 1, 1, "kind", []string{"missing kind"}},
		{"unknown field", "kind: Task\nname: t1\nscirpt: echo\n", 1, 3, "scirpt", []string{`Task "t1"`, `unknown field "scirpt"`}},
		{"unknown nested field", "kind: Machine\nname: n1\nstatus:\n  state: ready\n  stat: x\n", 1, 5, "status.stat", []string{`unknown field "stat"`}},
		{"wrong type", "kind: Task\nname: t1\nscript: x\nretries: many\n", 1, 4, "retries", []string{"expected int"}},
		{"wrong type nested", "kind: Workflow\nname: w\ntasks:\n  - a\n  - {x: 1}\n", 1, 3, "tasks", []string{"expected string"}},
		{"bad name", "kind: Profile\nname: a b\n", 1, 2, "name", []string{`"a b"`}},
		{"param names may have slashes, others not", "kind: Profile\nname: a/b\n", 1, 2, "name", []string{`"a/b"`}},
		{"missing name", "kind: Profile\n", 1, 1, "name", []string{"missing name"}},
		{"a list", "- kind: Machine\n", 1, 1, "", []string{"not a list"}},
		{"a scalar", "hello\n", 1, 1, "", []string{"not a single value"}},
		{"kind not a string", "kind: [Machine]\nname: a\n", 1, 1, "kind", []string{"not a mapping with kind and name"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs := split(t, c.in)
			_, err := ParseDocument(docs[len(docs)-1])
			var de *DocError
			if !errors.As(err, &de) {
				t.Fatalf("got %v, want a *DocError", err)
			}
			t.Log(err)
			if de.Index != c.index || de.Line != c.line || de.Field != c.field {
				t.Errorf("document %d line %d field %q, want document %d line %d field %q (%v)", de.Index, de.Line, de.Field, c.index, c.line, c.field, err)
			}
			prefix := "document " + itoa(c.index) + " (line " + itoa(c.line) + ")"
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message %q does not start with %q", err, prefix)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q lacks %q", err, w)
				}
			}
		})
	}
}

// Documents given as JSON (the API) have no lines: errors still name the
// document and field.
func TestParseDocumentJSONErrors(t *testing.T) {
	_, err := ParseDocument(Document{Index: 3, JSON: []byte(`{"kind":"Task","name":"t","scirpt":"x"}`)})
	if err == nil || err.Error() != `document 3 Task "t", field scirpt: unknown field "scirpt"` {
		t.Errorf("got %v", err)
	}
}

func TestParseDocumentEveryKind(t *testing.T) {
	for _, k := range Kinds() {
		name := "x1"
		doc := Document{Index: 1, JSON: []byte(`{"kind":"` + k.Kind + `","name":"` + name + `","labels":{"a":"b"}}`)}
		obj, err := ParseDocument(doc)
		if err != nil {
			t.Errorf("%s: %v", k.Kind, err)
			continue
		}
		if reflect.TypeOf(obj) != reflect.TypeOf(k.New()) || obj.GetMeta().Name != name || obj.GetMeta().Labels["a"] != "b" {
			t.Errorf("%s: got %#v", k.Kind, obj)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name  string
		obj   api.Object
		field string
		want  string
	}{
		{"task without script", &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}}, "script", "missing script"},
		{"bad template", &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}, Script: "{{ if }}"}, "script", "bad template"},
		{"unknown function", &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}, Script: "{{ exec }}"}, "script", `"exec" not defined`},
		{"bad timeout", &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}, Script: "x", Timeout: "soon"}, "timeout", `"soon"`},
		{"too long timeout", &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}, Script: "x", Timeout: "8000h"}, "timeout", `"8000h"`},
		{"negative retries", &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}, Script: "x", Retries: -1}, "retries", "-1"},
		{"bad template content", &api.Template{Meta: api.Meta{Kind: api.KindTemplate, Name: "t"}, Content: "{{ .X "}, "content", "bad template"},
		{"workflow task name", &api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "w"}, Tasks: []string{"ok", "not ok"}}, "tasks[1]", `"not ok"`},
		{"machine profile name", &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "m"}, Profiles: []string{"a b"}}, "profiles[0]", `"a b"`},
		{"param name in a profile", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p"}, Params: map[string]json.RawMessage{"a//b": json.RawMessage(`1`)}}, "params.a//b", "a//b"},
		{"label value", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p", Labels: map[string]string{"a": "b c"}}}, "labels.a", "b c"},
		{"profile selector syntax", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p"}, Selector: "role in ("}, "selector", `label selector "role in ("`},
		{"profile selector bad value", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p"}, Selector: "role=a b"}, "selector", `label selector`},
		{"empty profile selector", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p"}, Selector: "  "}, "selector", "every machine"},
		{"global with a selector", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: api.GlobalProfile}, Selector: "role=storage"}, "selector", "global profile applies to every machine"},
		{"param type", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "p"}, Type: "str"}, "type", `"str"`},
		{"param default type", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "p"}, Type: "boolean", Default: json.RawMessage(`"yes"`)}, "default", "wants a boolean"},
		{"schema not JSON", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "p"}, Schema: json.RawMessage(`{`)}, "schema", "not valid JSON"},
		{"schema invalid", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "p"}, Schema: json.RawMessage(`{"minimum":"one"}`)}, "schema", "/minimum"},
		{"user role", &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "u"}, Role: "root"}, "role", `"root"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.obj)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FieldError", err)
			}
			if fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got field %q: %v; want field %q with %q", fe.Field, err, c.field, c.want)
			}
		})
	}
}

// A param schema is checked on its own: references to files (or anything
// else) are refused, never loaded.
func TestSchemaDoesNotLoadReferences(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.json")
	if err := os.WriteFile(path, []byte(`{"type":"string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"file://" + path, "secret.json", "https://example.com/s.json"} {
		p := &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "p"}, Schema: json.RawMessage(`{"$ref":"` + ref + `"}`)}
		err := Validate(p)
		if err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("$ref %s: %v, want refused", ref, err)
		}
	}
	// Local references work.
	p := &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "p"}, Schema: json.RawMessage(`{"$defs":{"s":{"type":"string"}},"$ref":"#/$defs/s"}`)}
	if err := Validate(p); err != nil {
		t.Errorf("local $ref: %v", err)
	}
	if err := CheckParamValue(p, json.RawMessage(`5`)); err == nil {
		t.Error("local $ref not applied")
	}
}

func TestCheckParamValue(t *testing.T) {
	p := &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "pin"}, Type: "string", Schema: json.RawMessage(`{"pattern":"^[0-9]+$","maxLength":6}`)}
	if err := CheckParamValue(p, json.RawMessage(`"1234"`)); err != nil {
		t.Fatal(err)
	}
	err := CheckParamValue(p, json.RawMessage(`"abcdefgh"`))
	if err == nil || !strings.Contains(err.Error(), `param "pin"`) || !strings.Contains(err.Error(), "abcdefgh") || !strings.Contains(err.Error(), "maxLength") {
		t.Errorf("plain param: %v", err)
	}
	p.Secure = true
	err = CheckParamValue(p, json.RawMessage(`"abcdefgh"`))
	if err == nil || !strings.Contains(err.Error(), `param "pin"`) || !strings.Contains(err.Error(), "pattern") || strings.Contains(err.Error(), "abcdefgh") {
		t.Errorf("secure param: %v (must name the rule, not the value)", err)
	}
	for _, c := range []struct {
		typ, val string
		ok       bool
	}{
		{"integer", `3`, true}, {"integer", `3.5`, false}, {"integer", `1e2`, false}, {"integer", `"3"`, false},
		{"number", `3.5`, true}, {"boolean", `false`, true}, {"boolean", `"false"`, false},
		{"object", `{}`, true}, {"array", `[]`, true}, {"array", `{}`, false}, {"any", `null`, true}, {"string", `null`, false},
	} {
		err := CheckParamValue(&api.Param{Meta: api.Meta{Name: "x"}, Type: c.typ}, json.RawMessage(c.val))
		if (err == nil) != c.ok {
			t.Errorf("%s %s: %v", c.typ, c.val, err)
		}
	}
}

func TestLookup(t *testing.T) {
	for _, n := range []string{"Machine", "machine", "machines", "m", "MACHINES"} {
		if k, err := Lookup(n); err != nil || k.Kind != api.KindMachine {
			t.Errorf("Lookup(%q) = %v, %v", n, k, err)
		}
	}
	if _, err := Lookup("widgets"); err == nil || !strings.Contains(err.Error(), `"widgets"`) {
		t.Errorf("Lookup(widgets): %v", err)
	}
}
