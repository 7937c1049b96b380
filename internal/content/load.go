package content

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
)

// HeaderFile is the file at the root of a pack directory that names the
// pack.
const HeaderFile = "pack.yaml"

// TemplatesDir is the directory of a pack whose files (other than YAML
// and JSON) are Template objects named after the file.
const TemplatesDir = "templates"

// Load reads a pack from a directory or a single YAML file.
func Load(p string) (*Pack, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return loadDir(os.DirFS(p), p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return Parse(filepath.Base(p), data)
}

// LoadFS reads a pack from a directory or a single YAML file of fsys.
func LoadFS(fsys fs.FS, root string) (*Pack, error) {
	st, err := fs.Stat(fsys, root)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		data, err := fs.ReadFile(fsys, root)
		if err != nil {
			return nil, err
		}
		return Parse(path.Base(root), data)
	}
	sub, err := fs.Sub(fsys, root)
	if err != nil {
		return nil, err
	}
	return loadDir(sub, root)
}

// Parse reads a single-file pack: a ContentPack header document, then the
// objects. name is the file name errors give.
func Parse(name string, data []byte) (*Pack, error) {
	var errs errorList
	docs, err := model.SplitYAML(bytes.NewReader(data))
	if err != nil {
		errs.add(docError(name, err))
		return nil, errs.err()
	}
	if len(docs) == 0 {
		errs.addf(name, 0, "empty pack: start with a header document (kind: %s, name, version), then the objects", KindContentPack)
		return nil, errs.err()
	}
	p := &Pack{}
	headerOK := false
	if docKind(docs[0]) != KindContentPack {
		errs.addf(name, docs[0].Line, "the first document must be the pack header (kind: %s, with name and version)", KindContentPack)
	} else {
		p.Header, headerOK = parseHeader(name, docs[0], &errs)
		docs = docs[1:]
	}
	lines := splitLines(data)
	for _, d := range docs {
		addDocument(p, name, lines, d, &errs, "only the first document of a file may be the pack header")
	}
	return finish(p, &errs, headerOK)
}

// loadDir reads a pack directory: pack.yaml, object files and templates.
func loadDir(fsys fs.FS, display string) (*Pack, error) {
	var errs errorList
	p := &Pack{}
	headerOK := false
	head, err := fs.ReadFile(fsys, HeaderFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		errs.addf(HeaderFile, 0, "%s has no %s: a pack directory needs one at its root with name and version", display, HeaderFile)
	case err != nil:
		errs.addf(HeaderFile, 0, "%v", err)
	default:
		docs, err := model.SplitYAML(bytes.NewReader(head))
		switch {
		case err != nil:
			errs.add(docError(HeaderFile, err))
		case len(docs) != 1:
			errs.addf(HeaderFile, 0, "%s must hold exactly one document (the header), not %d; put objects in other files", HeaderFile, len(docs))
		case docKind(docs[0]) != "" && docKind(docs[0]) != KindContentPack:
			errs.addf(HeaderFile, docs[0].Line, "%s holds the pack header (name, version), not a %s; put objects in other files", HeaderFile, docKind(docs[0]))
		default:
			p.Header, headerOK = parseHeader(HeaderFile, docs[0], &errs)
		}
	}
	err = fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			errs.addf(name, 0, "%v", err)
			return nil
		}
		if name != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || name == HeaderFile {
			return nil
		}
		switch ext := strings.ToLower(path.Ext(name)); {
		case ext == ".yaml" || ext == ".yml" || ext == ".json":
			data, err := fs.ReadFile(fsys, name)
			if err != nil {
				errs.addf(name, 0, "%v", err)
				return nil
			}
			docs, err := model.SplitYAML(bytes.NewReader(data))
			if err != nil {
				errs.add(docError(name, err))
				return nil
			}
			lines := splitLines(data)
			for _, doc := range docs {
				addDocument(p, name, lines, doc, &errs, "the pack header belongs in "+HeaderFile)
			}
		case strings.HasPrefix(name, TemplatesDir+"/"):
			data, err := fs.ReadFile(fsys, name)
			if err != nil {
				errs.addf(name, 0, "%v", err)
				return nil
			}
			addTemplateFile(p, name, data, &errs)
		}
		// Other files (README.md, LICENSE) are not content.
		return nil
	})
	if err != nil {
		errs.addf(display, 0, "%v", err)
	}
	return finish(p, &errs, headerOK)
}

// finish checks the pack's structure, computes its digest and returns it,
// or every error found while loading. A header that could not be read has
// been reported already, and is not checked again.
func finish(p *Pack, errs *errorList, headerOK bool) (*Pack, error) {
	if headerOK {
		checkHeader(&p.Header, errs)
	}
	checkObjects(p, errs)
	if err := errs.err(); err != nil {
		return nil, err
	}
	p.Digest = p.Sum()
	return p, nil
}

func docKind(d model.Document) string {
	var head struct {
		Kind string `json:"kind"`
	}
	_ = json.Unmarshal(d.JSON, &head)
	return head.Kind
}

// headerDoc is the header as written.
type headerDoc struct {
	Kind        string          `json:"kind"`
	Name        string          `json:"name"`
	Version     json.RawMessage `json:"version"`
	Description string          `json:"description"`
	Requires    []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"requires"`
}

// parseHeader reads a header document; ok is false when it could not be
// decoded (the reason is recorded).
func parseHeader(file string, d model.Document, errs *errorList) (h Header, ok bool) {
	h = Header{File: file, Line: d.Line}
	fail := func(field string, err error) {
		_, line := d.LineOf(field)
		errs.add(&Error{File: file, Line: line, Kind: KindContentPack, Name: h.Name, Field: field, Err: err})
	}
	if firstNonSpace(d.JSON) != '{' {
		fail("", errors.New("the header must be a mapping with name and version"))
		return h, false
	}
	var hd headerDoc
	dec := json.NewDecoder(bytes.NewReader(d.JSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hd); err != nil {
		var te *json.UnmarshalTypeError
		field := ""
		if errors.As(err, &te) {
			field = te.Field
			err = fmt.Errorf("expected %s, got JSON %s", te.Type, te.Value)
		} else if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			field = strings.Trim(f, `"`)
			err = fmt.Errorf("unknown field %s (a header has name, version, description and requires)", f)
		}
		fail(field, err)
		return h, false
	}
	h.Name, h.Description = hd.Name, hd.Description
	var version any
	if len(hd.Version) > 0 {
		dec := json.NewDecoder(bytes.NewReader(hd.Version))
		dec.UseNumber()
		_ = dec.Decode(&version)
	}
	switch v := version.(type) {
	case string:
		h.Version = v
	case json.Number:
		h.Version = string(v)
	case nil:
	default:
		fail("version", fmt.Errorf("expected a version like 1.0.0, got JSON %s", hd.Version))
		return h, false
	}
	for i, r := range hd.Requires {
		_, line := d.LineOf(fmt.Sprintf("requires[%d]", i))
		h.Requires = append(h.Requires, Requirement{Name: r.Name, Version: r.Version, Line: line})
	}
	// Strict semantic versions compare the same everywhere; a leading v
	// is accepted and dropped.
	if sv, err := semver.StrictNewVersion(strings.TrimPrefix(h.Version, "v")); err == nil {
		h.Version = sv.String()
	}
	return h, true
}

// checkHeader reports what is wrong with a header's name, version and
// requirements.
func checkHeader(h *Header, errs *errorList) {
	file := h.File
	if file == "" {
		file = HeaderFile
	}
	fail := func(line int, field, format string, args ...any) {
		errs.add(&Error{File: file, Line: line, Kind: KindContentPack, Name: h.Name, Field: field, Err: fmt.Errorf(format, args...)})
	}
	if err := ValidatePackName(h.Name); err != nil {
		fail(h.Line, "name", "%v", err)
	}
	if h.Version == "" {
		fail(h.Line, "version", "missing version (a semantic version like 1.0.0)")
	} else if _, err := semver.StrictNewVersion(strings.TrimPrefix(h.Version, "v")); err != nil {
		fail(h.Line, "version", "%q is not a semantic version (MAJOR.MINOR.PATCH, like 1.0.0)", h.Version)
	}
	seen := map[string]bool{}
	for i, r := range h.Requires {
		field := fmt.Sprintf("requires[%d]", i)
		line := r.Line
		if line == 0 {
			line = h.Line
		}
		if err := ValidatePackName(r.Name); err != nil {
			fail(line, field, "%v", err)
			continue
		}
		if r.Name == h.Name {
			fail(line, field, "a pack cannot require itself")
		}
		if seen[r.Name] {
			fail(line, field, "pack %q is required twice (join the constraints with a comma)", r.Name)
		}
		seen[r.Name] = true
		if r.Version != "" {
			if _, err := semver.NewConstraint(r.Version); err != nil {
				fail(line, field, "version constraint %q: %v (examples: >=1.0.0, ^1.2, >=1.0.0 <2.0.0)", r.Version, err)
			}
		}
	}
}

// ValidatePackName checks a pack name: a DNS label (1 to 63 lowercase
// letters, digits and '-', starting and ending with a letter or digit).
func ValidatePackName(name string) error { return model.ValidatePackName(name) }

// addDocument adds one object document to the pack, or records why not.
func addDocument(p *Pack, file string, lines []string, d model.Document, errs *errorList, headerHint string) {
	var head struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	}
	_ = json.Unmarshal(d.JSON, &head)
	if head.Kind == KindContentPack {
		errs.add(&Error{File: file, Line: d.Line, Kind: head.Kind, Name: head.Name, Err: errors.New(headerHint)})
		return
	}
	if k, err := model.Lookup(head.Kind); err == nil && k.Kind == head.Kind && !KindAllowed(head.Kind) {
		_, line := d.LineOf("kind")
		errs.add(&Error{File: file, Line: line, Kind: head.Kind, Name: head.Name,
			Err: fmt.Errorf("a content pack cannot hold %s objects (it holds %s)", head.Kind, strings.Join(packKinds, ", "))})
		return
	}
	obj, err := model.ParseDocument(d)
	if err != nil {
		errs.add(docError(file, err))
		return
	}
	if !KindAllowed(obj.GetMeta().Kind) {
		// Not reached while every kind the model knows is checked above;
		// kept so a kind added to the model is refused until allowed.
		errs.add(&Error{File: file, Line: d.Line, Kind: obj.GetMeta().Kind, Name: obj.GetMeta().Name,
			Err: fmt.Errorf("a content pack cannot hold %s objects", obj.GetMeta().Kind)})
		return
	}
	_, data, err := model.Encode(obj)
	if err != nil {
		errs.add(docError(file, err))
		return
	}
	m := obj.GetMeta()
	o := Object{Kind: m.Kind, Name: m.Name, Data: data, File: file, Line: d.Line, Lines: d.Lines}
	switch x := obj.(type) {
	case *api.Task:
		o.BodyLine = bodyStart(lines, d.Lines["script"], "script", x.Script)
	case *api.Template:
		o.BodyLine = bodyStart(lines, d.Lines["content"], "content", x.Content)
	}
	p.Objects = append(p.Objects, o)
}

// addTemplateFile adds a file of the templates directory as a Template
// named after the file.
func addTemplateFile(p *Pack, file string, data []byte, errs *errorList) {
	name := path.Base(file)
	if err := model.ValidateName(name); err != nil {
		errs.add(&Error{File: file, Kind: api.KindTemplate, Name: name, Err: fmt.Errorf("%v (the file name is the template's name)", err)})
		return
	}
	if !utf8.Valid(data) {
		errs.add(&Error{File: file, Kind: api.KindTemplate, Name: name, Err: errors.New("a template must be UTF-8 text")})
		return
	}
	t := &api.Template{Meta: api.Meta{Kind: api.KindTemplate, Name: name}, Content: string(data)}
	_, js, err := model.Encode(t)
	if err != nil {
		errs.add(&Error{File: file, Kind: api.KindTemplate, Name: name, Err: err})
		return
	}
	p.Objects = append(p.Objects, Object{Kind: api.KindTemplate, Name: name, Data: js, File: file, Line: 1, BodyLine: 1})
}

// literalBlock is what follows "script:" when the value is a YAML literal
// block: its lines are the file's lines from the next one on.
var literalBlock = regexp.MustCompile(`^\|[1-9]?[-+]?[1-9]?\s*(#.*)?$`)

// bodyStart finds the file line of a body's first line, or 0.
func bodyStart(lines []string, keyLine int, key, body string) int {
	if keyLine < 1 || keyLine > len(lines) {
		return 0
	}
	text := strings.TrimSpace(lines[keyLine-1])
	text = strings.TrimPrefix(text, "- ")
	rest, ok := strings.CutPrefix(text, key)
	if !ok {
		if rest, ok = strings.CutPrefix(text, `"`+key+`"`); !ok {
			return 0
		}
	}
	rest, ok = strings.CutPrefix(strings.TrimLeft(rest, " \t"), ":")
	if !ok {
		return 0
	}
	rest = strings.TrimSpace(rest)
	if literalBlock.MatchString(rest) {
		return keyLine + 1
	}
	if rest != "" && !strings.HasPrefix(rest, ">") && !strings.Contains(strings.TrimRight(body, "\n"), "\n") {
		return keyLine
	}
	return 0
}

func splitLines(data []byte) []string { return strings.Split(string(data), "\n") }

func firstNonSpace(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// checkObjects reports objects a pack may not hold and objects given
// twice. Load runs it; so does Validate, for packs that came as JSON.
func checkObjects(p *Pack, errs *errorList) {
	first := map[Ref]*Object{}
	for i := range p.Objects {
		o := &p.Objects[i]
		if !KindAllowed(o.Kind) {
			errs.objf(o, "kind", 0, "a content pack cannot hold %s objects (it holds %s)", o.Kind, strings.Join(packKinds, ", "))
			continue
		}
		if prev, dup := first[o.Ref()]; dup {
			errs.objf(o, "", 0, "defined twice: here and at %s:%d (kind and name must be unique in a pack)", prev.File, prev.Line)
			continue
		}
		first[o.Ref()] = o
	}
}
