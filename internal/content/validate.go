package content

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/render"
)

// Validate checks the pack as a whole against the packs installed beside
// it (a pack in installed with p's own name is an older version of p and
// is ignored):
//   - the header and every object are valid on their own (the model's
//     rules), and the digest matches the content;
//   - task scripts and templates parse with the renderer's functions;
//   - workflows name tasks, and templates include templates, that exist in
//     the pack or the packs it requires, directly or not;
//   - params read by name from templates are declared as Params there, or
//     are built into drover (model.BuiltinParams);
//   - profile values (and param defaults) fit the declared params, and
//     params named ".../workflow" name workflows that exist;
//   - every required pack is installed in a version that meets its
//     constraint.
//
// All problems are returned at once as Errors.
func (p *Pack) Validate(installed []*Pack) error {
	var errs errorList
	checkHeader(&p.Header, &errs)
	checkObjects(p, &errs)
	if p.Digest != "" && p.Digest != p.Sum() {
		errs.add(&Error{File: p.File, Line: p.Line, Kind: KindContentPack, Name: p.Name, Field: "digest",
			Err: fmt.Errorf("%s does not match the content (%s): the pack was changed after it was loaded; load it again", p.Digest, p.Sum())})
	}
	v := &validator{errs: &errs, scope: newScope(p)}
	for _, dep := range v.resolve(p, installed) {
		v.scope.add(dep)
	}
	for i := range p.Objects {
		v.object(&p.Objects[i])
	}
	return errs.err()
}

// scope is what a pack's objects may refer to: its own objects and those
// of the packs it requires.
type scope struct {
	objects map[Ref]api.Object
	from    map[Ref]string // the pack an object comes from
}

func newScope(p *Pack) *scope {
	s := &scope{objects: map[Ref]api.Object{}, from: map[Ref]string{}}
	s.add(p)
	return s
}

// add puts a pack's objects in scope; objects already there win.
func (s *scope) add(p *Pack) {
	for i := range p.Objects {
		o := &p.Objects[i]
		if _, ok := s.objects[o.Ref()]; ok {
			continue
		}
		obj, err := o.Decode()
		if err != nil {
			continue // reported when the pack holding it is validated
		}
		s.objects[o.Ref()] = obj
		s.from[o.Ref()] = p.Name
	}
}

func (s *scope) has(kind, name string) bool {
	_, ok := s.objects[Ref{kind, name}]
	return ok
}

func (s *scope) param(name string) *api.Param {
	p, _ := s.objects[Ref{api.KindParam, name}].(*api.Param)
	return p
}

type validator struct {
	errs  *errorList
	scope *scope
}

// resolve finds the installed packs p requires, directly or through other
// packs, and reports requirements that are not met.
func (v *validator) resolve(p *Pack, installed []*Pack) []*Pack {
	byName := map[string][]*Pack{}
	for _, ip := range installed {
		if ip != nil && ip.Name != p.Name {
			byName[ip.Name] = append(byName[ip.Name], ip)
		}
	}
	var out []*Pack
	seen := map[string]bool{p.Name: true}
	type todo struct {
		req   Requirement
		field string   // p's requirement that led to req
		line  int      // where that requirement is written
		via   []string // the chain of packs that led to req, from p
	}
	var queue []todo
	for i, r := range p.Requires {
		line := r.Line
		if line == 0 {
			line = p.Line
		}
		queue = append(queue, todo{req: r, field: fmt.Sprintf("requires[%d]", i), line: line, via: []string{p.Name}})
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		if seen[t.req.Name] {
			continue
		}
		dep, problem := pick(t.req, byName[t.req.Name])
		if problem != "" {
			if len(t.via) > 1 {
				problem = fmt.Sprintf("%s (required through %s)", problem, strings.Join(t.via, " → "))
			}
			v.errs.add(&Error{File: p.File, Line: t.line, Kind: KindContentPack, Name: p.Name, Field: t.field, Err: errors.New(problem)})
			if dep == nil {
				continue
			}
		}
		seen[t.req.Name] = true
		out = append(out, dep)
		via := append(append([]string(nil), t.via...), dep.Name)
		for _, r := range dep.Requires {
			queue = append(queue, todo{req: r, field: t.field, line: t.line, via: via})
		}
	}
	return out
}

// pick chooses the newest candidate that meets a requirement, or says why
// none does. When none does, it still returns the newest candidate, whose
// objects the pack can then see: its references are checked against the
// version installed rather than reported missing on top of the version.
func pick(r Requirement, candidates []*Pack) (*Pack, string) {
	if len(candidates) == 0 {
		version := ""
		if r.Version != "" {
			version = " (version " + r.Version + ")"
		}
		return nil, fmt.Sprintf("pack %q%s is not installed (install it first with drover content push)", r.Name, version)
	}
	var constraint *semver.Constraints
	if r.Version != "" {
		c, err := semver.NewConstraint(r.Version)
		if err != nil {
			return nil, fmt.Sprintf("bad version constraint %q: %v", r.Version, err)
		}
		constraint = c
	}
	var best, newest *Pack
	var bestVersion, newestVersion *semver.Version
	var have []string
	for _, c := range candidates {
		have = append(have, c.Version)
		ver, err := semver.NewVersion(c.Version)
		if err != nil {
			continue
		}
		if newest == nil || ver.GreaterThan(newestVersion) {
			newest, newestVersion = c, ver
		}
		if constraint != nil && !constraint.Check(ver) {
			continue
		}
		if best == nil || ver.GreaterThan(bestVersion) {
			best, bestVersion = c, ver
		}
	}
	if best != nil {
		return best, ""
	}
	installed := "the installed version is " + have[0]
	if len(have) > 1 {
		installed = "the installed versions are " + strings.Join(have, ", ")
	}
	return newest, fmt.Sprintf("needs pack %q version %s, but %s (install a version that matches)", r.Name, r.Version, installed)
}

// object checks one object of the pack.
func (v *validator) object(o *Object) {
	obj, err := model.ParseDocument(model.Document{Line: o.Line, JSON: o.Data, Lines: o.Lines})
	if err != nil {
		var de *model.DocError
		if errors.As(err, &de) {
			v.errs.objf(o, de.Field, 0, "%v", de.Err)
		} else {
			v.errs.objf(o, "", 0, "%v", err)
		}
		return
	}
	if m := obj.GetMeta(); m.Kind != o.Kind || m.Name != o.Name {
		v.errs.objf(o, "", 0, "its data is %s %q, not %s %q", m.Kind, m.Name, o.Kind, o.Name)
		return
	}
	switch x := obj.(type) {
	case *api.Task:
		if !v.template(o, "script", x.Script) {
			return // the model would report the same syntax error
		}
	case *api.Template:
		if !v.template(o, "content", x.Content) {
			return
		}
	case *api.BootEnv:
		if !v.bootEnv(o, x) {
			return // the model would report the same syntax error
		}
	case *api.Workflow:
		for i, t := range x.Tasks {
			if t != "" && !v.scope.has(api.KindTask, t) {
				field := fmt.Sprintf("tasks[%d]", i)
				v.errs.objf(o, field, 0, "task %q is not in this pack or the packs it requires (add a Task %q, or require the pack that has it)", t, t)
			}
		}
	case *api.Profile:
		for _, name := range model.SortedKeys(x.Params) {
			v.paramValue(o, "params."+name, name, x.Params[name])
		}
	case *api.Param:
		if len(x.Default) > 0 {
			v.workflowValue(o, "default", x.Name, x.Default)
		}
	}
	if err := model.Validate(obj); err != nil {
		var fe *model.FieldError
		if errors.As(err, &fe) {
			v.errs.objf(o, fe.Field, 0, "%v", fe.Err)
		} else {
			v.errs.objf(o, "", 0, "%v", err)
		}
	}
}

// template checks a script or template body: it parses, and what it
// includes and reads exists. It reports false when the body does not parse.
func (v *validator) template(o *Object, field, body string) bool {
	refs, err := render.Inspect(o.Kind+" "+o.Name, body)
	if err != nil {
		var se *render.SyntaxError
		if errors.As(err, &se) {
			v.errs.objf(o, field, o.bodyLine(field, se.Line), "template does not parse: %s%s", lineNote(se.Line), se.Msg)
		} else {
			v.errs.objf(o, field, 0, "template does not parse: %v", err)
		}
		return false
	}
	for _, t := range refs.Templates {
		if !v.scope.has(api.KindTemplate, t.Name) {
			v.errs.objf(o, field, o.bodyLine(field, t.Line), "%sincludes template %q, which is not in this pack or the packs it requires", lineNote(t.Line), t.Name)
		}
	}
	for _, p := range refs.Params {
		if v.scope.param(p.Name) == nil && !model.IsBuiltinParam(p.Name) {
			v.errs.objf(o, field, o.bodyLine(field, p.Line), "%sparam %q is not declared (add a Param %q to the pack, or require the pack that declares it)", lineNote(p.Line), p.Name, p.Name)
		}
	}
	return true
}

// bootEnv checks a boot environment's templates like task scripts, and
// that the Template objects it serves and the params it requires exist.
// It reports false when a template does not parse.
func (v *validator) bootEnv(o *Object, b *api.BootEnv) bool {
	ok := v.template(o, "kernel", b.Kernel)
	for i, s := range b.Initrds {
		ok = v.template(o, fmt.Sprintf("initrds[%d]", i), s) && ok
	}
	ok = v.template(o, "kernelParams", b.KernelParams) && ok
	ok = v.template(o, "installSource", b.InstallSource) && ok
	ok = v.template(o, "ipxeScript", b.IPXEScript) && ok
	for i, t := range b.Templates {
		field := fmt.Sprintf("templates[%d]", i)
		if t.Content != "" {
			ok = v.template(o, field+".content", t.Content) && ok
		}
		if t.Template != "" && !v.scope.has(api.KindTemplate, t.Template) {
			v.errs.objf(o, field+".template", 0, "template %q is not in this pack or the packs it requires", t.Template)
		}
	}
	for i, p := range b.RequiredParams {
		if v.scope.param(p) == nil && !model.IsBuiltinParam(p) {
			v.errs.objf(o, fmt.Sprintf("requiredParams[%d]", i), 0, "param %q is not declared (add a Param %q to the pack, or require the pack that declares it)", p, p)
		}
	}
	return ok
}

// lineNote names the line within a body, which the file line alone does
// not show when the body is not a literal block.
func lineNote(line int) string {
	if line <= 0 {
		return ""
	}
	return fmt.Sprintf("line %d: ", line)
}

// paramValue checks a value a profile gives a param.
func (v *validator) paramValue(o *Object, field, name string, value json.RawMessage) {
	if decl := v.scope.param(name); decl != nil {
		if err := model.CheckParamValue(decl, value); err != nil {
			v.errs.objf(o, field, 0, "%v", err)
			return
		}
	}
	v.workflowValue(o, field, name, value)
}

// workflowValue checks that a ".../workflow" param names a workflow.
func (v *validator) workflowValue(o *Object, field, name string, value json.RawMessage) {
	if !strings.HasSuffix(name, "/workflow") {
		return
	}
	var wf string
	if err := json.Unmarshal(value, &wf); err != nil || wf == "" {
		v.errs.objf(o, field, 0, "param %q must name a workflow, got %s", name, value)
		return
	}
	if !v.scope.has(api.KindWorkflow, wf) {
		v.errs.objf(o, field, 0, "param %q names workflow %q, which is not in this pack or the packs it requires", name, wf)
	}
}
