package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/content"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/render"
	"github.com/drover-project/drover/internal/store"
)

// Content packs are materialized: installing one writes its objects as
// ordinary records with Meta.Source "pack:NAME@VERSION", so the engine,
// lists and the event stream need to know nothing about packs. The pack's
// own record keeps every object, which is what lets a deleted override
// bring the pack's version back and an upgrade tell what changed.

// systemPrincipal is who the server acts as for its own writes.
var systemPrincipal = &principal{User: "drover", Role: api.RoleAdmin}

func packSourcePrefix(name string) string { return "pack:" + name + "@" }

// sourceOf reads Meta.Source from a stored record without decoding it all.
func sourceOf(rec store.Record) string {
	if !bytes.Contains(rec.Data, []byte(`"source"`)) {
		return ""
	}
	var m struct {
		Source string `json:"source"`
	}
	_ = json.Unmarshal(rec.Data, &m)
	return m.Source
}

func canWriteContent(p *principal) bool {
	for _, k := range content.Kinds() {
		if !auth.Allowed(p.Role, auth.Write, k) {
			return false
		}
	}
	return true
}

func (s *Server) handleContentPush(w http.ResponseWriter, r *http.Request, p *principal) {
	if !canWriteContent(p) {
		writeError(w, forbidden(p, "install content packs"))
		return
	}
	var pack content.Pack
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPackBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pack); err != nil {
		writeError(w, badRequest("bad content pack: %s (send what `drover content push` sends: a pack loaded with internal/content, as JSON)", strings.TrimPrefix(err.Error(), "json: ")))
		return
	}
	install := s.installPack
	if r.URL.Query().Get("library") != "" {
		install = func(ctx context.Context, p *principal, pack *content.Pack, _ bool) (*api.ContentPushResponse, error) {
			return s.keepPack(ctx, p, pack)
		}
	}
	resp, err := install(r.Context(), p, &pack, false)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// maxPackBody bounds an uploaded pack; the built-in one is ~20 KB.
const maxPackBody = 32 << 20

// installedPacks returns the installed packs by name with their records.
func (s *Server) installedPacks(ctx context.Context) (map[string]*api.ContentPack, error) {
	recs, _, err := s.st.List(ctx, api.KindContentPack, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]*api.ContentPack, len(recs))
	for _, rec := range recs {
		var cp api.ContentPack
		if err := model.Decode(rec, &cp); err != nil {
			return nil, err
		}
		out[cp.Name] = &cp
	}
	return out, nil
}

// asContent turns a stored pack back into the form internal/content checks:
// the two share their JSON (the stored form adds kind, revisions and
// status, which content.Pack leaves out).
func asContent(cp *api.ContentPack) (*content.Pack, error) {
	b, err := json.Marshal(cp)
	if err != nil {
		return nil, err
	}
	var p content.Pack
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("stored content pack %q: %w", cp.Name, err)
	}
	return &p, nil
}

func asStored(p *content.Pack) (*api.ContentPack, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var cp api.ContentPack
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, err
	}
	cp.Kind, cp.Name = api.KindContentPack, p.Name
	return &cp, nil
}

func refStrings(refs []content.Ref) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.Kind+"/"+r.Name)
	}
	return out
}

// packError is a pack refused before anything was written: every problem,
// one per line, each with its file and line.
func packError(name string, err error) error {
	return apiError(http.StatusUnprocessableEntity, "invalid_pack", "content pack %q was not installed:\n%v", name, err)
}

// installPack validates a pack against the installed ones and installs (or
// upgrades) it in one transaction.
func (s *Server) installPack(ctx context.Context, p *principal, pack *content.Pack, builtin bool) (*api.ContentPushResponse, error) {
	s.contentMu.Lock()
	defer s.contentMu.Unlock()
	if err := content.ValidatePackName(pack.Name); err != nil {
		return nil, packError(pack.Name, err)
	}
	installed, err := s.installedPacks(ctx)
	if err != nil {
		return nil, err
	}
	var others []*content.Pack
	for name, cp := range installed {
		if name == pack.Name {
			continue
		}
		cpk, err := asContent(cp)
		if err != nil {
			return nil, err
		}
		others = append(others, cpk)
	}
	if err := pack.Validate(others); err != nil {
		return nil, packError(pack.Name, err)
	}
	// One object, one pack: a second pack may override nothing silently.
	var clashes []string
	for _, o := range pack.Objects {
		for _, other := range others {
			if other.Find(o.Kind, o.Name) != nil {
				clashes = append(clashes, fmt.Sprintf("%s:%d: %s %q is already provided by content pack %q", o.File, o.Line, o.Kind, o.Name, other.Name))
			}
		}
	}
	if len(clashes) > 0 {
		sort.Strings(clashes)
		return nil, apiError(http.StatusConflict, "conflict", "content pack %q was not installed:\n%s", pack.Name, strings.Join(clashes, "\n"))
	}
	old := installed[pack.Name]
	var oldPack *content.Pack
	if old != nil {
		if oldPack, err = asContent(old); err != nil {
			return nil, err
		}
	}
	src := api.PackSource(pack.Name, pack.Version)
	prefix := packSourcePrefix(pack.Name)
	now := time.Now().UTC()
	keep, replaced, err := s.keepOp(ctx, p, pack, now)
	if err != nil {
		return nil, err
	}
	if old != nil && old.Digest == pack.Digest && old.Version == pack.Version {
		resp := &api.ContentPushResponse{Pack: pack.Name, Version: pack.Version, Unchanged: true, Overridden: old.Status.Overridden, Kept: keptNote(keep, replaced)}
		if keep == nil {
			resp.Revision, err = s.st.Revision(ctx)
		} else {
			_, resp.Revision, err = s.st.Txn(ctx, []store.Op{*keep})
		}
		return resp, err
	}

	// Type every object as the model would for an apply, so a pack can
	// hold nothing an apply would refuse.
	objs := make([]api.Object, len(pack.Objects))
	packParams := map[string]*api.Param{}
	var bad []string
	for i, o := range pack.Objects {
		where := fmt.Sprintf("%s:%d: %s %q", o.File, o.Line, o.Kind, o.Name)
		obj, err := model.ParseDocument(model.Document{Index: i + 1, Line: o.Line, JSON: o.Data, Lines: o.Lines})
		if err == nil {
			err = model.Validate(obj)
		}
		if err != nil {
			bad = append(bad, where+": "+err.Error())
			continue
		}
		obj.GetMeta().Source = src
		obj.GetMeta().Revision = 0
		if pa, ok := obj.(*api.Param); ok {
			packParams[pa.Name] = pa
		}
		objs[i] = obj
	}
	if len(bad) > 0 {
		return nil, packError(pack.Name, errors.New(strings.Join(bad, "\n")))
	}
	declared, err := s.declaredParams(ctx, packParams)
	if err != nil {
		return nil, err
	}
	var ops []store.Op
	var overridden []string
	for i, obj := range objs {
		m := obj.GetMeta()
		o := pack.Objects[i]
		cur, err := s.st.Get(ctx, m.Kind, m.Name)
		exists := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if exists {
			switch cs := sourceOf(cur); {
			case cs == "":
				// The user's object stays: it overrides the pack's.
				overridden = append(overridden, m.Kind+"/"+m.Name)
				continue
			case !strings.HasPrefix(cs, prefix):
				return nil, apiError(http.StatusConflict, "conflict", "content pack %q was not installed: %s:%d: %s %q comes from %s", pack.Name, o.File, o.Line, m.Kind, m.Name, cs)
			}
		}
		if err := s.prepare(obj, cur, exists, declared); err != nil {
			return nil, packError(pack.Name, fmt.Errorf("%s:%d: %s %q: %w", o.File, o.Line, m.Kind, m.Name, err))
		}
		lbls, data, err := model.Encode(obj)
		if err != nil {
			return nil, err
		}
		if exists && bytes.Equal(cur.Data, data) && equalLabels(cur.Labels, lbls) {
			continue
		}
		op := store.Op{Type: store.OpCreate, Kind: m.Kind, Name: m.Name, Labels: lbls, Data: data}
		if exists {
			op.Type, op.ExpectRevision = store.OpUpdate, cur.Revision
		}
		ops = append(ops, op)
	}
	// What the previous version had and this one has not goes, unless a
	// user has made it theirs.
	if oldPack != nil {
		for _, o := range oldPack.Objects {
			if pack.Find(o.Kind, o.Name) != nil {
				continue
			}
			cur, err := s.st.Get(ctx, o.Kind, o.Name)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(sourceOf(cur), prefix) {
				ops = append(ops, store.Op{Type: store.OpDelete, Kind: o.Kind, Name: o.Name, ExpectRevision: cur.Revision})
			}
		}
	}
	changes := content.Diff(oldPack, pack)
	cp, err := asStored(pack)
	if err != nil {
		return nil, err
	}
	cp.Status = api.ContentPackStatus{
		InstalledAt: &now,
		InstalledBy: p.String(),
		Builtin:     builtin,
		Changes:     api.PackChanges{Added: refStrings(changes.Added), Changed: refStrings(changes.Changed), Removed: refStrings(changes.Removed)},
		Overridden:  overridden,
	}
	action, detail := "installed", pack.Version
	if old != nil {
		cp.Status.PreviousVersion = old.Version
		action = "upgraded"
		detail = fmt.Sprintf("%s -> %s: %d added, %d changed, %d removed", old.Version, pack.Version, len(changes.Added), len(changes.Changed), len(changes.Removed))
	}
	lbls, data, err := model.Encode(cp)
	if err != nil {
		return nil, err
	}
	packOp := store.Op{Type: store.OpCreate, Kind: api.KindContentPack, Name: pack.Name, Labels: lbls, Data: data}
	if old != nil {
		packOp.Type, packOp.ExpectRevision = store.OpUpdate, old.Revision
	}
	ops = append(ops, packOp)
	if keep != nil {
		ops = append(ops, *keep)
	}
	if oldPack != nil && oldPack.Version != pack.Version {
		// The version replaced stays in the library (it may have been
		// installed before endpoints kept one); a copy there wins.
		oldKeep, _, err := s.keepOp(ctx, p, oldPack, now)
		if err != nil {
			return nil, err
		}
		if oldKeep != nil && oldKeep.Type == store.OpCreate {
			ops = append(ops, *oldKeep)
		}
	}
	ops = append(ops, s.auditOp(p, action, api.KindContentPack+"/"+pack.Name, detail, now, len(ops)))
	_, rev, err := s.st.Txn(ctx, ops)
	if err != nil {
		var te *store.TxnError
		if errors.As(err, &te) && errors.Is(err, store.ErrConflict) {
			return nil, apiError(http.StatusConflict, "conflict", "%s %q was changed while installing content pack %q; nothing was written, push again", te.Kind, te.Name, pack.Name)
		}
		return nil, err
	}
	return &api.ContentPushResponse{
		Pack: pack.Name, Version: pack.Version, PreviousVersion: cp.Status.PreviousVersion,
		Changes: cp.Status.Changes, Overridden: overridden, Revision: rev, Kept: keptNote(keep, replaced),
	}, nil
}

// installBuiltin installs the pack shipped in the binary, or upgrades it
// when this binary carries a newer version than the one installed.
func (s *Server) installBuiltin(ctx context.Context) error {
	pack := content.Default()
	installed, err := s.installedPacks(ctx)
	if err != nil {
		return err
	}
	if cur := installed[pack.Name]; cur != nil {
		have, err1 := semver.NewVersion(cur.Version)
		want, err2 := semver.NewVersion(pack.Version)
		if err1 == nil && err2 == nil && !want.GreaterThan(have) {
			return nil
		}
	}
	resp, err := s.installPack(ctx, systemPrincipal, pack, true)
	if err != nil {
		return fmt.Errorf("built-in content pack %s %s: %w", pack.Name, pack.Version, err)
	}
	if !resp.Unchanged {
		s.log.Info("built-in content installed", "pack", resp.Pack, "version", resp.Version, "previous", resp.PreviousVersion)
	}
	return nil
}

func (s *Server) handleContentRemove(w http.ResponseWriter, r *http.Request, p *principal) {
	if !canWriteContent(p) {
		writeError(w, forbidden(p, "remove content packs"))
		return
	}
	rev, err := s.removePack(r.Context(), p, r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"removed": r.PathValue("name"), "revision": rev})
}

// removePack deletes a pack and the objects it provides, refusing while
// anything left behind would depend on them.
func (s *Server) removePack(ctx context.Context, p *principal, name string) (int64, error) {
	s.contentMu.Lock()
	defer s.contentMu.Unlock()
	installed, err := s.installedPacks(ctx)
	if err != nil {
		return 0, err
	}
	cp := installed[name]
	if cp == nil {
		return 0, apiError(http.StatusNotFound, "not_found", "content pack %q is not installed", name)
	}
	pack, err := asContent(cp)
	if err != nil {
		return 0, err
	}
	// The objects that would go: the pack's, unless overridden.
	prefix := packSourcePrefix(name)
	going := map[string]store.Record{}
	for _, o := range pack.Objects {
		cur, err := s.st.Get(ctx, o.Kind, o.Name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if strings.HasPrefix(sourceOf(cur), prefix) {
			going[o.Kind+"/"+o.Name] = cur
		}
	}
	users, err := s.packUsers(ctx, name, installed, going)
	if err != nil {
		return 0, err
	}
	if len(users) > 0 {
		return 0, apiError(http.StatusConflict, "in_use", "content pack %q is in use; nothing was removed:\n%s", name, strings.Join(users, "\n"))
	}
	keys := make([]string, 0, len(going))
	for k := range going {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ops := make([]store.Op, 0, len(keys)+2)
	for _, k := range keys {
		rec := going[k]
		ops = append(ops, store.Op{Type: store.OpDelete, Kind: rec.Kind, Name: rec.Name, ExpectRevision: rec.Revision})
	}
	ops = append(ops, store.Op{Type: store.OpDelete, Kind: api.KindContentPack, Name: name, ExpectRevision: cp.Revision})
	ops = append(ops, s.auditOp(p, "removed", api.KindContentPack+"/"+name, cp.Version, time.Now().UTC(), len(ops)))
	_, rev, err := s.st.Txn(ctx, ops)
	if err != nil {
		var te *store.TxnError
		if errors.As(err, &te) && errors.Is(err, store.ErrConflict) {
			return 0, apiError(http.StatusConflict, "conflict", "%s %q changed while removing content pack %q; nothing was removed, try again", te.Kind, te.Name, name)
		}
		return 0, err
	}
	return rev, nil
}

// packUsers lists what still depends on the objects that removing a pack
// would delete: packs that require it, objects that stay and name them,
// and runs in progress of its workflows.
func (s *Server) packUsers(ctx context.Context, name string, installed map[string]*api.ContentPack, going map[string]store.Record) ([]string, error) {
	var users []string
	for _, other := range installed {
		for _, req := range other.Requires {
			if req.Name == name && other.Name != name {
				users = append(users, fmt.Sprintf("content pack %q requires it", other.Name))
			}
		}
	}
	gone := func(kind, n string) bool { _, ok := going[kind+"/"+n]; return ok }
	stays := func(kind, n string) bool { return !gone(kind, n) }
	workflowParams := func(who string, params map[string]json.RawMessage) {
		for k, v := range params {
			var wf string
			if strings.HasSuffix(k, "/workflow") && json.Unmarshal(v, &wf) == nil && gone(api.KindWorkflow, wf) {
				users = append(users, fmt.Sprintf("%s sets %s to Workflow %q", who, k, wf))
			}
		}
	}
	each := func(kind string, fn func(api.Object)) error {
		recs, _, err := s.st.List(ctx, kind, store.ListOptions{})
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if !stays(rec.Kind, rec.Name) {
				continue
			}
			obj, err := model.DecodeNew(rec)
			if err != nil {
				return err
			}
			fn(obj)
		}
		return nil
	}
	err := errors.Join(
		each(api.KindWorkflow, func(o api.Object) {
			wf := o.(*api.Workflow)
			for _, t := range wf.Tasks {
				if gone(api.KindTask, t) {
					users = append(users, fmt.Sprintf("Workflow %q uses Task %q", wf.Name, t))
				}
			}
		}),
		each(api.KindMachine, func(o api.Object) {
			m := o.(*api.Machine)
			for _, pn := range m.Profiles {
				if gone(api.KindProfile, pn) {
					users = append(users, fmt.Sprintf("Machine %q uses Profile %q", m.Name, pn))
				}
			}
			workflowParams(fmt.Sprintf("Machine %q", m.Name), m.Params)
		}),
		each(api.KindProfile, func(o api.Object) {
			pr := o.(*api.Profile)
			workflowParams(fmt.Sprintf("Profile %q", pr.Name), pr.Params)
		}),
		each(api.KindTemplate, func(o api.Object) {
			t := o.(*api.Template)
			users = append(users, templateUsers(fmt.Sprintf("Template %q", t.Name), t.Name, t.Content, gone)...)
		}),
		each(api.KindTask, func(o api.Object) {
			t := o.(*api.Task)
			users = append(users, templateUsers(fmt.Sprintf("Task %q", t.Name), t.Name, t.Script, gone)...)
		}),
		each(api.KindRun, func(o api.Object) {
			run := o.(*api.Run)
			if run.State == api.RunRunning && gone(api.KindWorkflow, run.Workflow) {
				users = append(users, fmt.Sprintf("Run %q of Workflow %q is in progress on Machine %q", run.Name, run.Workflow, run.Machine))
			}
		}),
	)
	if err != nil {
		return nil, err
	}
	sort.Strings(users)
	return slices.Compact(users), nil
}

// templateUsers names the templates a script includes that would go.
func templateUsers(who, name, body string, gone func(kind, name string) bool) []string {
	info, err := render.Inspect(name, body)
	if err != nil {
		return nil
	}
	var out []string
	for _, t := range info.Templates {
		if gone(api.KindTemplate, t.Name) {
			out = append(out, fmt.Sprintf("%s includes Template %q", who, t.Name))
		}
	}
	return out
}

// packProviding returns the installed pack that provides kind/name.
func (s *Server) packProviding(ctx context.Context, kind, name string) (*api.ContentPack, *api.PackObject, error) {
	installed, err := s.installedPacks(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, cp := range installed {
		for i := range cp.Objects {
			if cp.Objects[i].Kind == kind && cp.Objects[i].Name == name {
				return cp, &cp.Objects[i], nil
			}
		}
	}
	return nil, nil, nil
}

// deletePackAware handles deleting an object of a kind packs provide: a
// pack's object cannot be deleted on its own, and deleting a user's
// override brings the pack's version back. It reports whether it answered
// the request.
func (s *Server) deletePackAware(w http.ResponseWriter, r *http.Request, p *principal, kind, name string, expect int64) bool {
	ctx := r.Context()
	cur, err := s.st.Get(ctx, kind, name)
	if err != nil {
		return false // the plain delete reports it
	}
	if src := sourceOf(cur); src != "" {
		writeError(w, apiError(http.StatusConflict, "from_pack", "%s %q comes from content pack %s: it goes when its pack is removed (drover content remove); to change it, apply your own %s %q, which overrides it", kind, name, strings.TrimPrefix(src, "pack:"), kind, name))
		return true
	}
	s.contentMu.Lock()
	defer s.contentMu.Unlock()
	cp, po, err := s.packProviding(ctx, kind, name)
	if err != nil {
		writeError(w, err)
		return true
	}
	if cp == nil {
		return false
	}
	if expect != 0 && expect != cur.Revision {
		writeError(w, apiError(http.StatusConflict, "conflict", "%s %q changed since revision %d (now %d); get it again", kind, name, expect, cur.Revision))
		return true
	}
	obj, err := model.ParseDocument(model.Document{Index: 1, JSON: po.Data})
	if err != nil {
		writeError(w, fmt.Errorf("content pack %q: %s %q: %w", cp.Name, kind, name, err))
		return true
	}
	obj.GetMeta().Source = api.PackSource(cp.Name, cp.Version)
	declared, err := s.declaredParams(ctx, nil)
	if err != nil {
		writeError(w, err)
		return true
	}
	if err := s.prepare(obj, cur, true, declared); err != nil {
		writeError(w, fmt.Errorf("content pack %q: %s %q: %w", cp.Name, kind, name, err))
		return true
	}
	lbls, data, err := model.Encode(obj)
	if err != nil {
		writeError(w, err)
		return true
	}
	ops := []store.Op{
		{Type: store.OpUpdate, Kind: kind, Name: name, Labels: lbls, Data: data, ExpectRevision: cur.Revision},
		s.auditOp(p, "deleted", kind+"/"+name, "override removed; content pack "+cp.Name+" "+cp.Version+" provides it again", time.Now().UTC(), 1),
	}
	_, rev, err := s.st.Txn(ctx, ops)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeError(w, apiError(http.StatusConflict, "conflict", "%s %q changed while deleting; try again", kind, name))
			return true
		}
		writeError(w, err)
		return true
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": kind + "/" + name, "revision": rev, "restored": api.PackSource(cp.Name, cp.Version)})
	return true
}
