// Package content reads and checks content packs: versioned bundles of
// params, templates, tasks, workflows and profiles, written as a directory
// (pack.yaml plus object files) or as one multi-document YAML file.
//
// Loading (Load, LoadFS, Parse) checks what a pack is made of: YAML
// syntax, known fields, allowed kinds, names and duplicates. Validate
// checks what it means: templates parse, workflows name tasks that exist,
// params used are declared, required packs are installed. Both report
// every problem they find at once, each with its file and line, as Errors.
package content

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
)

// KindContentPack is the kind of the header document of a single-file
// pack (and, optionally, of pack.yaml).
const KindContentPack = "ContentPack"

// packKinds are the kinds a pack may hold, in the order a server should
// apply them: params first so that profile values can be checked against
// their declarations, templates before the tasks and boot environments
// that include them.
var packKinds = []string{api.KindParam, api.KindTemplate, api.KindBootEnv, api.KindTask, api.KindWorkflow, api.KindProfile}

// Kinds lists the kinds a content pack may hold, in the order to apply them.
func Kinds() []string { return append([]string(nil), packKinds...) }

// KindAllowed reports whether a pack may hold objects of a kind.
func KindAllowed(kind string) bool {
	for _, k := range packKinds {
		if k == kind {
			return true
		}
	}
	return false
}

// Requirement is another pack that must be installed for this one to work.
type Requirement struct {
	Name string `json:"name"`
	// Version is a semantic version constraint (">=1.0.0", "^1.2",
	// ">=1.0.0, <2.0.0"); empty accepts any version.
	Version string `json:"version,omitempty"`
	// Line is where the requirement is written in the header's file.
	Line int `json:"line,omitempty"`
}

// Header names and versions a pack.
type Header struct {
	Name        string        `json:"name"`
	Version     string        `json:"version"`
	Description string        `json:"description,omitempty"`
	Requires    []Requirement `json:"requires,omitempty"`
	// File and Line locate the header: pack.yaml, or the first document
	// of a single-file pack.
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// Object is one object of a pack, as JSON the model decodes, with where it
// was written.
type Object struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Data is the object's JSON as the model encodes it (kind and name
	// included, no revisions).
	Data json.RawMessage `json:"data"`
	File string          `json:"file"`
	// Line is where the object starts in File.
	Line int `json:"line"`
	// Lines maps field paths ("script", "tasks[1]", "params.role") to
	// their lines in File.
	Lines map[string]int `json:"lines,omitempty"`
	// BodyLine is the line of File that holds the first line of a task's
	// script or a template's content when the body's lines are the file's
	// lines (a YAML literal block, a one-line value, a template file);
	// 0 when they are not.
	BodyLine int `json:"bodyLine,omitempty"`
}

// Ref returns the object's kind and name.
func (o *Object) Ref() Ref { return Ref{Kind: o.Kind, Name: o.Name} }

// Decode returns the typed object.
func (o *Object) Decode() (api.Object, error) {
	k, err := model.Lookup(o.Kind)
	if err != nil {
		return nil, err
	}
	obj := k.New()
	if err := json.Unmarshal(o.Data, obj); err != nil {
		return nil, fmt.Errorf("%s %q: %w", o.Kind, o.Name, err)
	}
	return obj, nil
}

// lineOf gives the line of a field, or of the object when the field's line
// is not known.
func (o *Object) lineOf(field string) int {
	_, line := model.Document{Line: o.Line, Lines: o.Lines}.LineOf(field)
	return line
}

// bodyLine maps a line of a script or template body (from 1) to its line
// in the file.
func (o *Object) bodyLine(field string, line int) int {
	if o.BodyLine > 0 && line > 0 {
		return o.BodyLine + line - 1
	}
	return o.lineOf(field)
}

// Pack is a loaded content pack.
type Pack struct {
	Header
	Objects []Object `json:"objects"`
	// Digest is "sha256:" and the hex SHA-256 of the pack's canonical
	// form: header and objects sorted by kind and name, without file
	// positions. Two packs with the same content have the same digest
	// however their files are laid out.
	Digest string `json:"digest"`
}

// Find returns the pack's object of a kind and name, or nil.
func (p *Pack) Find(kind, name string) *Object {
	for i := range p.Objects {
		if p.Objects[i].Kind == kind && p.Objects[i].Name == name {
			return &p.Objects[i]
		}
	}
	return nil
}

// Ref names an object by kind and name.
type Ref struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (r Ref) String() string { return r.Kind + "/" + r.Name }

func (r Ref) less(o Ref) bool {
	if r.Kind != o.Kind {
		return r.Kind < o.Kind
	}
	return r.Name < o.Name
}

// Error is one problem in a pack, with where it is.
type Error struct {
	File string
	Line int
	// Kind and Name are the object the problem is about, if any.
	Kind string
	Name string
	// Field is the object's field ("script", "tasks[1]"), if known.
	Field string
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Kind != "" {
		fmt.Fprintf(&b, "%s %q: ", e.Kind, e.Name)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Errors is every problem found in a pack, in file and line order. Load,
// Parse and Validate return it (as error) so that a caller can show or
// send all of them.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap gives the errors to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// errorList collects errors while loading or validating.
type errorList struct{ list Errors }

func (l *errorList) add(e *Error) { l.list = append(l.list, e) }

func (l *errorList) addf(file string, line int, format string, args ...any) {
	l.add(&Error{File: file, Line: line, Err: fmt.Errorf(format, args...)})
}

// objf records a problem about an object's field at a line (0: the field's).
func (l *errorList) objf(o *Object, field string, line int, format string, args ...any) {
	if line == 0 {
		line = o.lineOf(field)
	}
	l.add(&Error{File: o.File, Line: line, Kind: o.Kind, Name: o.Name, Field: field, Err: fmt.Errorf(format, args...)})
}

// err returns the errors sorted by file and line, or nil.
func (l *errorList) err() error {
	if len(l.list) == 0 {
		return nil
	}
	sort.SliceStable(l.list, func(i, j int) bool {
		a, b := l.list[i], l.list[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	return l.list
}

// docError turns a model error about a document into a pack error.
func docError(file string, err error) *Error {
	var de *model.DocError
	if errors.As(err, &de) {
		return &Error{File: file, Line: de.Line, Kind: de.Kind, Name: de.Name, Field: de.Field, Err: de.Err}
	}
	return &Error{File: file, Err: err}
}

// canonicalJSON re-encodes JSON with sorted keys and no spaces, keeping
// numbers as written.
func canonicalJSON(data []byte) ([]byte, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
