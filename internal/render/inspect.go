package render

import (
	"sort"
	"strconv"
	"strings"
	"text/template/parse"

	"github.com/drover-project/drover/internal/model"
)

// ParamFuncs are the template functions whose first argument is a param
// name: {{ param "x" }}, {{ paramOr "x" "fallback" }}, {{ hasParam "x" }}.
// The method {{ .Param "x" }} takes one too.
var ParamFuncs = []string{"param", "paramOr", "hasParam"}

// Refs is what a template refers to by constant name: the params it reads
// and the named templates it includes. Names built at render time
// ({{ param (printf "%s/x" .Machine.Name) }}) cannot be known and are not
// listed. Both lists are sorted by name and hold each name once, at the
// line of its first use.
type Refs struct {
	Params    []Ref
	Templates []Ref
}

// Ref is a name a template uses and the line (from 1, within the body)
// where it first does.
type Ref struct {
	Name string
	Line int
}

// SyntaxError is a template that does not parse, with the line (from 1,
// within the body) the parser stopped at, or 0 when it gave none.
type SyntaxError struct {
	Name string
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return "template " + strconv.Quote(e.Name) + ": line " + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return "template " + strconv.Quote(e.Name) + ": " + e.Msg
}

// Inspect parses a script or template body with the functions Render
// binds, without executing it, and lists what it refers to. Templates the
// body defines itself ({{ define }}, {{ block }}) are not listed as
// references. A body that does not parse gives a *SyntaxError.
func Inspect(name, body string) (Refs, error) {
	t, err := model.ParseTemplate(name, body)
	if err != nil {
		return Refs{}, syntaxError(name, err)
	}
	w := &walker{body: body, params: map[string]int{}, included: map[string]int{}}
	defined := map[string]bool{}
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Root == nil {
			continue
		}
		if tt.Name() != name {
			defined[tt.Name()] = true
		}
		w.walk(tt.Root)
	}
	for n := range defined {
		delete(w.included, n)
	}
	return Refs{Params: sortedRefs(w.params), Templates: sortedRefs(w.included)}, nil
}

func sortedRefs(m map[string]int) []Ref {
	var out []Ref
	for n, l := range m {
		out = append(out, Ref{Name: n, Line: l})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// syntaxError splits text/template's "template: NAME:LINE: MSG".
func syntaxError(name string, err error) *SyntaxError {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, "template: "+name+":")
	if !ok {
		return &SyntaxError{Name: name, Msg: strings.TrimPrefix(msg, "template: ")}
	}
	num, after, ok := strings.Cut(rest, ": ")
	line, convErr := strconv.Atoi(num)
	if !ok || convErr != nil {
		return &SyntaxError{Name: name, Msg: strings.TrimPrefix(msg, "template: ")}
	}
	return &SyntaxError{Name: name, Line: line, Msg: after}
}

// walker collects the names a parse tree uses, with the line of each
// name's first use (node positions are offsets in the whole body, also
// inside {{ define }}).
type walker struct {
	body             string
	params, included map[string]int
}

func (w *walker) note(m map[string]int, name string, pos parse.Pos) {
	line := 1 + strings.Count(w.body[:min(int(pos), len(w.body))], "\n")
	if prev, ok := m[name]; !ok || line < prev {
		m[name] = line
	}
}

func (w *walker) walk(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			w.walk(c)
		}
	case *parse.ActionNode:
		w.walk(n.Pipe)
	case *parse.IfNode:
		w.branch(&n.BranchNode)
	case *parse.RangeNode:
		w.branch(&n.BranchNode)
	case *parse.WithNode:
		w.branch(&n.BranchNode)
	case *parse.TemplateNode:
		w.note(w.included, n.Name, n.Pos)
		w.walk(n.Pipe)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for i, cmd := range n.Cmds {
			// {{ "x" | param }}: the piped value is the name.
			if i > 0 && len(cmd.Args) == 1 && isParamCall(cmd.Args[0]) {
				if prev := n.Cmds[i-1]; len(prev.Args) == 1 {
					if s, ok := prev.Args[0].(*parse.StringNode); ok {
						w.note(w.params, s.Text, s.Pos)
					}
				}
			}
			w.walk(cmd)
		}
	case *parse.CommandNode:
		if len(n.Args) >= 2 && isParamCall(n.Args[0]) {
			if s, ok := n.Args[1].(*parse.StringNode); ok {
				w.note(w.params, s.Text, s.Pos)
			}
		}
		for _, a := range n.Args {
			w.walk(a)
		}
	case *parse.ChainNode:
		w.walk(n.Node)
	}
}

func (w *walker) branch(b *parse.BranchNode) {
	w.walk(b.Pipe)
	w.walk(b.List)
	w.walk(b.ElseList)
}

// isParamCall reports whether a command's first word reads a param:
// param, paramOr, hasParam, .Param or $.Param.
func isParamCall(n parse.Node) bool {
	switch n := n.(type) {
	case *parse.IdentifierNode:
		for _, f := range ParamFuncs {
			if n.Ident == f {
				return true
			}
		}
	case *parse.FieldNode:
		return len(n.Ident) == 1 && n.Ident[0] == "Param"
	case *parse.VariableNode:
		return len(n.Ident) == 2 && n.Ident[0] == "$" && n.Ident[1] == "Param"
	}
	return false
}
