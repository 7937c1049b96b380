package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/content"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/versionset"
)

// The pack library: every pack version an endpoint installs is kept as a
// PackVersion (PACK@VERSION), and so is every pack pushed with
// ?library=1, which is kept without being installed. A manager pushes
// its sites' packs from it, so sites can be kept at versions other than
// the one the manager runs itself (docs/decisions.md).

// keepOp returns the op keeping pack in the library, or nil when the
// library holds it already with this content. replaced is true when the
// library held this version with other content.
func (s *Server) keepOp(ctx context.Context, p *principal, pack *content.Pack, now time.Time) (op *store.Op, replaced bool, err error) {
	name := api.PackVersionName(pack.Name, pack.Version)
	cur, err := s.st.Get(ctx, api.KindPackVersion, name)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	pv := &api.PackVersion{
		Meta:    api.Meta{Kind: api.KindPackVersion, Name: name, Labels: map[string]string{"pack": pack.Name}},
		Pack:    pack.Name,
		Version: pack.Version,
		Digest:  pack.Digest,
		KeptAt:  now,
		KeptBy:  p.String(),
	}
	if exists {
		var old api.PackVersion
		if err := model.Decode(cur, &old); err != nil {
			return nil, false, err
		}
		if old.Digest == pack.Digest {
			return nil, false, nil
		}
		replaced = true
	}
	if pv.Content, err = json.Marshal(pack); err != nil {
		return nil, false, err
	}
	lbls, data, err := model.Encode(pv)
	if err != nil {
		return nil, false, err
	}
	o := store.Op{Type: store.OpCreate, Kind: api.KindPackVersion, Name: name, Labels: lbls, Data: data}
	if exists {
		o.Type, o.ExpectRevision = store.OpUpdate, cur.Revision
	}
	return &o, replaced, nil
}

// keptNote says what keeping a pack in the library did, for the push's
// answer.
func keptNote(op *store.Op, replaced bool) string {
	switch {
	case op == nil:
		return ""
	case replaced:
		return "replaced"
	}
	return "kept"
}

// libraryPacks returns every pack version in the library, plus installed
// packs the library lacks (installed before endpoints kept a library).
func (s *Server) libraryPacks(ctx context.Context) ([]*content.Pack, error) {
	recs, _, err := s.st.List(ctx, api.KindPackVersion, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []*content.Pack
	have := map[string]bool{}
	for _, rec := range recs {
		var pv api.PackVersion
		if err := model.Decode(rec, &pv); err != nil {
			return nil, err
		}
		var p content.Pack
		if err := json.Unmarshal(pv.Content, &p); err != nil {
			return nil, fmt.Errorf("PackVersion %q: %w", rec.Name, err)
		}
		have[rec.Name] = true
		out = append(out, &p)
	}
	installed, err := s.installedPacks(ctx)
	if err != nil {
		return nil, err
	}
	for _, cp := range installed {
		if have[api.PackVersionName(cp.Name, cp.Version)] {
			continue
		}
		p, err := asContent(cp)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// library indexes the library for comparisons, and by name@version for
// pushes.
func (s *Server) library(ctx context.Context) (versionset.Library, map[string]*content.Pack, error) {
	packs, err := s.libraryPacks(ctx)
	if err != nil {
		return nil, nil, err
	}
	lib := versionset.Library{}
	byKey := map[string]*content.Pack{}
	for _, p := range packs {
		var reqs []versionset.Requirement
		for _, r := range p.Requires {
			reqs = append(reqs, versionset.Requirement{Name: r.Name, Constraint: r.Version})
		}
		lib[p.Name] = append(lib[p.Name], versionset.Kept{Version: p.Version, Digest: p.Digest, Requires: reqs})
		byKey[api.PackVersionName(p.Name, p.Version)] = p
	}
	return lib, byKey, nil
}

// keepPack keeps a pack in the library without installing it (POST
// /api/v1/content?library=1). It is checked as a whole against the
// library's packs, as an install is checked against the installed ones.
func (s *Server) keepPack(ctx context.Context, p *principal, pack *content.Pack) (*api.ContentPushResponse, error) {
	s.contentMu.Lock()
	defer s.contentMu.Unlock()
	if err := content.ValidatePackName(pack.Name); err != nil {
		return nil, packError(pack.Name, err)
	}
	others, err := s.libraryPacks(ctx)
	if err != nil {
		return nil, err
	}
	if err := pack.Validate(others); err != nil {
		return nil, apiError(http.StatusUnprocessableEntity, "invalid_pack", "content pack %q was not kept:\n%v", pack.Name, err)
	}
	now := time.Now().UTC()
	op, replaced, err := s.keepOp(ctx, p, pack, now)
	if err != nil {
		return nil, err
	}
	resp := &api.ContentPushResponse{Pack: pack.Name, Version: pack.Version, LibraryOnly: true, Kept: keptNote(op, replaced)}
	if op == nil {
		resp.Unchanged = true
		resp.Revision, err = s.st.Revision(ctx)
		return resp, err
	}
	detail := "kept in the library, not installed"
	if replaced {
		detail = "replaced in the library (same version, other content), not installed"
	}
	_, resp.Revision, err = s.st.Txn(ctx, []store.Op{*op, s.auditOp(p, "kept", op.Name, detail, now, 1)})
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, apiError(http.StatusConflict, "conflict", "PackVersion %q was changed meanwhile; nothing was written, push again", op.Name)
		}
		return nil, err
	}
	return resp, nil
}

// versionSetsUsing names the version sets that name pack at version (any
// version when version is empty).
func (s *Server) versionSetsUsing(ctx context.Context, pack, version string) ([]string, error) {
	recs, _, err := s.st.List(ctx, api.KindVersionSet, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rec := range recs {
		var vs api.VersionSet
		if err := model.Decode(rec, &vs); err != nil {
			return nil, err
		}
		for _, p := range vs.Packs {
			if p.Name == pack && (version == "" || p.Version == version) {
				out = append(out, vs.Name)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// refuseDeleteInUse refuses deleting a version set a site is kept at, or
// a kept pack version a version set names; nil lets the delete go on.
func (s *Server) refuseDeleteInUse(ctx context.Context, kind, name string) error {
	switch kind {
	case api.KindPackVersion:
		pack, version, _ := strings.Cut(name, "@")
		sets, err := s.versionSetsUsing(ctx, pack, version)
		if err != nil || len(sets) == 0 {
			return err
		}
		return apiError(http.StatusConflict, "in_use", "PackVersion %q is named by version set %s: change the set first (sites kept at it are pushed from this copy)", name, strings.Join(sets, ", "))
	case api.KindVersionSet:
		sites, err := s.sitesKeptAt(ctx, name)
		if err != nil || len(sites) == 0 {
			return err
		}
		return apiError(http.StatusConflict, "in_use", "version set %q is in use by site %s: give the site another set first (drover sites sync %s --version-set OTHER, or --clear)", name, strings.Join(sites, ", "), sites[0])
	}
	return nil
}

// sitesKeptAt names the sites whose version set is name.
func (s *Server) sitesKeptAt(ctx context.Context, name string) ([]string, error) {
	recs, _, err := s.st.List(ctx, api.KindSite, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rec := range recs {
		var site api.Site
		if err := model.Decode(rec, &site); err != nil {
			return nil, err
		}
		if site.Sync != nil && site.Sync.VersionSet == name {
			out = append(out, site.Name)
		}
	}
	return out, nil
}

// versionSetWarnings notes, on the apply results of version sets, what
// sites kept at them would fail on: pack versions the library does not
// hold, requirements the set does not meet. Applying such a set is
// allowed (the packs may be pushed next), and the sync status says the
// same per site.
func (s *Server) versionSetWarnings(ctx context.Context, objs []api.Object, results []api.ApplyResult) {
	var lib versionset.Library
	for i, obj := range objs {
		vs, ok := obj.(*api.VersionSet)
		if !ok || i >= len(results) {
			continue
		}
		if lib == nil {
			var err error
			if lib, _, err = s.library(ctx); err != nil {
				s.log.Warn("cannot read the pack library to check a version set", "err", err)
				return
			}
		}
		results[i].Warnings = versionset.Check(vs, lib)
	}
}
