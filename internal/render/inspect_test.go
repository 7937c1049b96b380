package render

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/drover-project/drover/internal/model"
)

func TestInspect(t *testing.T) {
	cases := []struct {
		name      string
		body      string
		params    []string
		templates []string
	}{
		{"nothing", `echo hi {{ .Machine.Name }}`, nil, nil},
		{"every way to read a param", `{{ param "a" }} {{ paramOr "b" "x" }} {{ hasParam "c" }} {{ .Param "d" }} {{ $.Param "e" }} {{ "f" | param }}`,
			[]string{"a", "b", "c", "d", "e", "f"}, nil},
		{"inside branches, ranges and withs", `{{ if hasParam "a" }}{{ range param "b" }}{{ . }}{{ end }}{{ else }}{{ with .Param "c" }}{{ . }}{{ end }}{{ end }}`,
			[]string{"a", "b", "c"}, nil},
		{"nested and chained", `{{ shellQuote (param "a/b") }} {{ (.Param "obj").user }} {{ join (paramOr "list" "") "," }}`,
			[]string{"a/b", "list", "obj"}, nil},
		{"names built at render time are not known", `{{ param (printf "%s/x" .Machine.Name) }} {{ $n := "y" }}{{ param $n }}`, nil, nil},
		{"a param read twice is listed once", `{{ param "a" }}{{ param "a" }}`, []string{"a"}, nil},
		{"includes", `{{ template "header" . }}{{ template "footer" }}{{ template "header" . }}`, nil, []string{"footer", "header"}},
		{"templates it defines are not references", `{{ define "local" }}{{ param "in-define" }}{{ end }}{{ template "local" . }}{{ block "blk" . }}x{{ end }}`,
			[]string{"in-define"}, nil},
		{"an include's pipeline is walked", `{{ template "t" (param "ctx") }}`, []string{"ctx"}, []string{"t"}},
		{"a method named like a func on another field is not a param", `{{ .Machine.Param "x" }}`, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			refs, err := Inspect("task t", c.body)
			if err != nil {
				t.Fatal(err)
			}
			if got := refNames(refs.Params); !reflect.DeepEqual(got, c.params) {
				t.Errorf("params = %q, want %q", got, c.params)
			}
			if got := refNames(refs.Templates); !reflect.DeepEqual(got, c.templates) {
				t.Errorf("templates = %q, want %q", got, c.templates)
			}
		})
	}
}

func refNames(refs []Ref) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return out
}

// Each name is reported at the line of its first use, also inside
// {{ define }} blocks.
func TestInspectLines(t *testing.T) {
	body := "#!/bin/sh\n" + // 1
		"echo {{ .Param \"b\" }}\n" + // 2
		"{{ define \"d\" }}\n" + // 3
		"{{ param \"a\" }}{{ template \"inc\" }}\n" + // 4
		"{{ end }}\n" + // 5
		"{{ param \"b\" }} {{ template \"inc\" . }}\n" + // 6
		"{{ \"c\" |\n param }}\n" // 7-8
	refs, err := Inspect("t", body)
	if err != nil {
		t.Fatal(err)
	}
	wantParams := []Ref{{"a", 4}, {"b", 2}, {"c", 7}}
	wantTemplates := []Ref{{"inc", 4}}
	if !reflect.DeepEqual(refs.Params, wantParams) || !reflect.DeepEqual(refs.Templates, wantTemplates) {
		t.Errorf("got %+v, want params %+v and templates %+v", refs, wantParams, wantTemplates)
	}
}

func TestInspectSyntaxError(t *testing.T) {
	cases := []struct {
		body string
		line int
		msg  string
	}{
		{"echo 1\necho 2\necho {{ .Param \"x\" }\n", 3, `unexpected "}"`},
		{"{{ nosuchfunc }}", 1, `function "nosuchfunc" not defined`},
		{"a\n{{ if true }}\nb\n", 0, "unexpected EOF"},
		{"{{ end }}", 1, "unexpected {{end}}"},
	}
	for _, c := range cases {
		_, err := Inspect("task t", c.body)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("%q: got %v, want a SyntaxError", c.body, err)
		}
		if c.line > 0 && se.Line != c.line {
			t.Errorf("%q: line %d, want %d (%v)", c.body, se.Line, c.line, err)
		}
		if !strings.Contains(se.Msg, c.msg) || strings.Contains(se.Msg, "template:") {
			t.Errorf("%q: message %q, want it to hold %q without the parser's prefix", c.body, se.Msg, c.msg)
		}
		if se.Name != "task t" || !strings.Contains(err.Error(), `"task t"`) {
			t.Errorf("%q: error %q does not name the template", c.body, err)
		}
	}
}

// What Inspect accepts, Render must accept: every function the parser
// knows is bound by the renderer.
func TestInspectFuncsAreRenderFuncs(t *testing.T) {
	in := input(t, newBox(t))
	for name := range model.TemplateFuncs() {
		body := `{{ if false }}{{ ` + name + ` }}{{ end }}`
		if _, err := Inspect("t", body); err != nil {
			t.Fatalf("Inspect refuses %s: %v", name, err)
		}
		if _, err := Render(in, "t", body); err != nil {
			t.Errorf("Render does not bind %s, which templates may use: %v", name, err)
		}
	}
	for _, name := range ParamFuncs {
		if _, ok := model.TemplateFuncs()[name]; !ok {
			t.Errorf("ParamFuncs lists %s, which is not a template function", name)
		}
	}
}
