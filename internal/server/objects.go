package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/content"
	"github.com/drover-project/drover/internal/labels"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/render"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/tables"
)

// maskedValue replaces secure param values in API output.
const maskedValue = `"********"`

func getObj(ctx context.Context, st store.Store, kind, name string, obj api.Object) error {
	rec, err := st.Get(ctx, kind, name)
	if err != nil {
		return err
	}
	return model.Decode(rec, obj)
}

func kindFromPath(r *http.Request) (*model.KindInfo, error) {
	k, err := model.Lookup(r.PathValue("kind"))
	if err != nil {
		return nil, apiError(http.StatusNotFound, "unknown_kind", "%v", err)
	}
	return k, nil
}

// present turns a record into what callers may see: secrets masked, hashes
// dropped.
func (s *Server) present(rec store.Record) ([]byte, error) {
	switch rec.Kind {
	case api.KindUser, api.KindToken, api.KindJoinToken:
		obj, err := model.DecodeNew(rec)
		if err != nil {
			return nil, err
		}
		switch o := obj.(type) {
		case *api.User:
			o.PasswordHash, o.Password = "", ""
		case *api.Token:
			o.SecretHash = ""
		case *api.JoinToken:
			o.SecretHash = ""
		}
		return json.Marshal(obj)
	case api.KindSite:
		var site api.Site
		if err := model.Decode(rec, &site); err != nil {
			return nil, err
		}
		return json.Marshal(s.siteView(&site))
	case api.KindMachine, api.KindProfile, api.KindParam:
		if !bytes.Contains(rec.Data, []byte(`"enc:v1:`)) {
			return model.Raw(rec), nil
		}
		obj, err := model.DecodeNew(rec)
		if err != nil {
			return nil, err
		}
		switch o := obj.(type) {
		case *api.Machine:
			maskParams(o.Params)
		case *api.Profile:
			maskParams(o.Params)
		case *api.Param:
			if len(o.Default) > 0 {
				o.Default = json.RawMessage(maskedValue)
			}
		}
		return json.Marshal(obj)
	}
	return model.Raw(rec), nil
}

func maskParams(params map[string]json.RawMessage) {
	for k, v := range params {
		var s string
		if json.Unmarshal(v, &s) == nil && strings.HasPrefix(s, "enc:v1:") {
			params[k] = json.RawMessage(maskedValue)
		}
	}
}

// readableKind resolves the kind in the URL and checks the caller may read
// it, answering the request itself when not.
func readableKind(w http.ResponseWriter, r *http.Request, p *principal) (*model.KindInfo, bool) {
	k, err := kindFromPath(r)
	if err != nil {
		writeError(w, err)
		return nil, false
	}
	if !canRead(p, k.Kind) {
		writeError(w, forbidden(p, "read "+k.Plural))
		return nil, false
	}
	return k, true
}

func canRead(p *principal, kind string) bool {
	return auth.Allowed(p.Role, auth.Read, kind)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, p *principal) {
	k, ok := readableKind(w, r, p)
	if !ok {
		return
	}
	var opts store.ListOptions
	if sel := r.URL.Query().Get("selector"); sel != "" {
		ls, err := labels.Parse(sel)
		if err != nil {
			writeError(w, badRequest("selector: %v", err))
			return
		}
		opts.Selector = ls
	}
	view := r.URL.Query().Get("view")
	switch view {
	case "", api.ViewFull:
		view = api.ViewFull
	case api.ViewSummary:
		if k.Kind != api.KindMachine {
			view = api.ViewFull // only machines have a summary
		}
	case api.ViewTable:
		if k.Kind != api.KindMachine {
			writeError(w, badRequest("view %s: only machines have one (use %s)", view, api.ViewFull))
			return
		}
	default:
		writeError(w, badRequest("view %q: use %s, %s or %s", view, api.ViewFull, api.ViewSummary, api.ViewTable))
		return
	}
	head := func(rev int64) string { return fmt.Sprintf(`{"kind":%q,"revision":%d,"items":[`, k.Kind, rev) }
	if view == api.ViewTable {
		cols, _ := json.Marshal(tables.MachineColumns)
		head = func(rev int64) string {
			return fmt.Sprintf(`{"kind":%q,"of":%q,"revision":%d,"columns":%s,"rows":[`, api.KindTable, k.Kind, rev, cols)
		}
	}
	if s.listWithSites(w, r, k.Kind, opts.Selector, view, head) {
		return
	}
	if lc := s.lists[k.Kind]; lc != nil {
		// The cache answers once it holds what the store holds now.
		cur, err := s.st.Revision(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		items, rev, err := lc.snapshot(r.Context(), cur, opts.Selector, view, 2*time.Second)
		if err == nil {
			writeList(w, head(rev), len(items), func(i int, bw *bufio.Writer) { bw.Write(items[i]) })
			return
		}
		if r.Context().Err() != nil {
			return
		}
		s.log.Warn("list cache unavailable; reading the store", "kind", k.Kind, "err", err)
	}
	recs, rev, err := s.st.List(r.Context(), k.Kind, opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeList(w, head(rev), len(recs), func(i int, bw *bufio.Writer) {
		rec := recs[i]
		if !s.needsMasking(rec) && view == api.ViewFull {
			model.WriteRaw(bw, rec)
			return
		}
		item, err := s.present(rec)
		if err == nil && view != api.ViewFull {
			var summary, row []byte
			summary, row, err = machineViews(item)
			if view == api.ViewSummary {
				item = summary
			} else {
				item = row
			}
		}
		if err != nil {
			// Headers are gone: cut the response so the client sees an
			// error rather than a short list.
			s.log.Error("cannot present object in list", "kind", rec.Kind, "name", rec.Name, "err", err)
			panic(http.ErrAbortHandler)
		}
		bw.Write(item)
	})
}

// machineViews makes the summary view of a presented machine (without the
// inventory, with its hardware summary) and its table row.
func machineViews(full []byte) (summary, row []byte, err error) {
	var m api.Machine
	if err := json.Unmarshal(full, &m); err != nil {
		return nil, nil, err
	}
	if row, err = json.Marshal(tables.MachineRow(&m)); err != nil {
		return nil, nil, err
	}
	inv := m.Status.Inventory
	if inv == nil {
		return full, row, nil
	}
	if m.Status.Hardware == nil {
		m.Status.Hardware = inv.Summary()
	}
	m.Status.Inventory = nil
	summary, err = json.Marshal(&m)
	return summary, row, err
}

var listWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 512<<10) }}

// writeList streams a list: a list of ten thousand machines is tens of MB,
// and building it in one buffer first would double the memory and delay
// the first byte. head opens the answer up to its array's '['.
func writeList(w http.ResponseWriter, head string, n int, item func(i int, bw *bufio.Writer)) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// Under HTTP/2 every Write of the handler is a hand-off to the
	// connection's goroutine and a wait for it: big writes keep a 7 MB
	// list to a dozen of them (64 KiB made a hundred, each a scheduling
	// delay on a busy server).
	bw := listWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil)
		listWriters.Put(bw)
	}()
	bw.WriteString(head)
	for i := range n {
		if i > 0 {
			bw.WriteByte(',')
		}
		item(i, bw)
	}
	bw.WriteString("]}\n")
	_ = bw.Flush()
}

// needsMasking reports whether a record must be decoded before it is shown.
func (s *Server) needsMasking(rec store.Record) bool {
	switch rec.Kind {
	case api.KindUser, api.KindToken, api.KindJoinToken, api.KindSite:
		return true
	case api.KindMachine, api.KindProfile, api.KindParam:
		return bytes.Contains(rec.Data, []byte(`"enc:v1:`))
	}
	return false
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, p *principal) {
	k, ok := readableKind(w, r, p)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if site := r.URL.Query().Get("site"); site != "" {
		s.handleGetMirrored(w, k.Kind, name, site)
		return
	}
	rec, err := s.st.Get(r.Context(), k.Kind, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, s.notFoundHere(k.Kind, name))
			return
		}
		writeError(w, err)
		return
	}
	if k.Kind == api.KindMachine && r.URL.Query().Get("effective") != "" {
		s.writeEffective(w, r, rec)
		return
	}
	out, err := s.present(rec)
	if err != nil {
		writeError(w, err)
		return
	}
	writeRawJSON(w, http.StatusOK, out)
}

// EffectiveParams is the answer of GET machine?effective=1.
type EffectiveParams struct {
	Machine string                  `json:"machine"`
	Params  map[string]render.Value `json:"params"`
}

func (s *Server) writeEffective(w http.ResponseWriter, r *http.Request, rec store.Record) {
	var m api.Machine
	if err := model.Decode(rec, &m); err != nil {
		writeError(w, err)
		return
	}
	for _, pn := range m.Profiles {
		if _, err := s.st.Get(r.Context(), api.KindProfile, pn); errors.Is(err, store.ErrNotFound) {
			writeError(w, apiError(http.StatusConflict, "invalid_reference", "machine %q uses profile %q, which does not exist: create it or remove it from the machine's profiles", m.Name, pn))
			return
		}
	}
	in, err := s.eng.RenderInput(r.Context(), &m)
	if err != nil {
		writeError(w, err)
		return
	}
	eff := in.Effective()
	for n, v := range eff {
		var sv string
		if v.Secure || (json.Unmarshal(v.Value, &sv) == nil && s.box.IsSealed(sv)) {
			// Sealed values stay masked even once their param is no longer
			// declared secure.
			v.Secure = true
			v.Value = json.RawMessage(maskedValue)
			eff[n] = v
		}
	}
	writeJSON(w, http.StatusOK, EffectiveParams{Machine: m.Name, Params: eff})
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request, p *principal) {
	var raw json.RawMessage
	if err := decodeBody(r, &raw); err != nil {
		writeError(w, err)
		return
	}
	k, err := kindFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if s.forwardPut(w, r, p, k, raw) {
		return
	}
	var head struct{ Kind, Name string }
	_ = json.Unmarshal(raw, &head)
	if head.Kind != k.Kind || head.Name != r.PathValue("name") {
		writeError(w, badRequest("the body's kind and name (%s %q) must match the URL (%s %q)", head.Kind, head.Name, k.Kind, r.PathValue("name")))
		return
	}
	resp, err := s.apply(r.Context(), p, []json.RawMessage{raw})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleApply(w http.ResponseWriter, r *http.Request, p *principal) {
	var req api.ApplyRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Documents) == 0 {
		writeError(w, badRequest("no documents to apply"))
		return
	}
	if s.forwardApply(w, r, p, req.Documents) {
		return
	}
	resp, err := s.apply(r.Context(), p, req.Documents)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// apply validates every document, then writes them all in one transaction:
// all or nothing.
func (s *Server) apply(ctx context.Context, p *principal, docs []json.RawMessage) (*api.ApplyResponse, error) {
	objs := make([]api.Object, 0, len(docs))
	seen := map[string]int{}
	batchParams := map[string]*api.Param{}
	for i, raw := range docs {
		obj, err := model.ParseDocument(model.Document{Index: i + 1, JSON: raw})
		if err != nil {
			return nil, err
		}
		m := obj.GetMeta()
		k, _ := model.Lookup(m.Kind)
		derr := func(err error) error {
			var fe *model.FieldError
			field := ""
			if errors.As(err, &fe) {
				field, err = fe.Field, fe.Err
			}
			return &model.DocError{Index: i + 1, Kind: m.Kind, Name: m.Name, Field: field, Err: err}
		}
		if k.Managed {
			return nil, derr(fmt.Errorf("%s objects are managed by drover and cannot be applied", m.Kind))
		}
		if !auth.Allowed(p.Role, auth.Write, m.Kind) {
			return nil, forbidden(p, "write "+k.Plural)
		}
		key := m.Kind + "/" + m.Name
		if j, dup := seen[key]; dup {
			return nil, derr(fmt.Errorf("same object as document %d", j))
		}
		seen[key] = i + 1
		if err := model.Validate(obj); err != nil {
			return nil, derr(err)
		}
		// What a user writes is theirs: over a pack's object it is an
		// override.
		m.Source = ""
		if pa, ok := obj.(*api.Param); ok {
			batchParams[pa.Name] = pa
		}
		objs = append(objs, obj)
	}
	if err := s.keepAnAdmin(ctx, objs); err != nil {
		return nil, err
	}
	if err := s.checkReservations(ctx, objs); err != nil {
		return nil, err
	}
	declared, err := s.declaredParams(ctx, batchParams)
	if err != nil {
		return nil, err
	}
	var ops []store.Op
	var results []api.ApplyResult
	now := time.Now().UTC()
	for i, obj := range objs {
		m := obj.GetMeta()
		derr := func(field string, err error) error {
			return &model.DocError{Index: i + 1, Kind: m.Kind, Name: m.Name, Field: field, Err: err}
		}
		existing, err := s.st.Get(ctx, m.Kind, m.Name)
		exists := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if err := s.prepare(obj, existing, exists, declared); err != nil {
			var fe *model.FieldError
			if errors.As(err, &fe) {
				return nil, derr(fe.Field, fe.Err)
			}
			return nil, derr("", err)
		}
		expect := m.Revision
		lbls, data, err := model.Encode(obj)
		if err != nil {
			return nil, err
		}
		res := api.ApplyResult{Kind: m.Kind, Name: m.Name}
		if exists && expect == 0 && bytes.Equal(existing.Data, data) && equalLabels(existing.Labels, lbls) {
			res.Action, res.Revision = "unchanged", existing.Revision
			results = append(results, res)
			continue
		}
		if exists && expect != 0 && expect != existing.Revision {
			return nil, derr("revision", fmt.Errorf("%s %q changed since revision %d (now %d): %w; get it again and reapply", m.Kind, m.Name, expect, existing.Revision, store.ErrConflict))
		}
		if !exists && expect != 0 {
			return nil, derr("revision", fmt.Errorf("%s %q does not exist, yet revision %d was given: %w", m.Kind, m.Name, expect, store.ErrConflict))
		}
		op := store.Op{Type: store.OpCreate, Kind: m.Kind, Name: m.Name, Labels: lbls, Data: data}
		res.Action = "created"
		if exists {
			op.Type = store.OpUpdate
			op.ExpectRevision = existing.Revision
			res.Action = "updated"
			if sourceOf(existing) != "" {
				res.Action = "overridden"
			}
		}
		ops = append(ops, op)
		ops = append(ops, s.auditOp(p, res.Action, m.Kind+"/"+m.Name, "", now, len(ops)))
		if u, ok := obj.(*api.User); ok && exists && u.Disabled {
			// Disabling a user ends its sessions for good: enabling it again
			// must not bring back tokens that may have leaked meanwhile.
			revoke, err := s.tokenDeletes(ctx, "user", u.Name)
			if err != nil {
				return nil, err
			}
			ops = append(ops, revoke...)
		}
		results = append(results, res)
	}
	s.versionSetWarnings(ctx, objs, results)
	sealOps, err := s.sealStoredValues(ctx, p, batchParams, seen, now)
	if err != nil {
		return nil, err
	}
	ops = append(ops, sealOps...)
	if len(ops) == 0 {
		rev, err := s.st.Revision(ctx)
		return &api.ApplyResponse{Revision: rev, Results: results}, err
	}
	_, rev, err := s.st.Txn(ctx, ops)
	if err != nil {
		var te *store.TxnError
		if errors.As(err, &te) && errors.Is(err, store.ErrConflict) {
			return nil, apiError(http.StatusConflict, "conflict", "%s %q was changed by someone else while applying; nothing was written, apply again", te.Kind, te.Name)
		}
		return nil, err
	}
	for i := range results {
		if results[i].Action != "unchanged" {
			// One transaction, one revision.
			results[i].Revision = rev
		}
	}
	return &api.ApplyResponse{Revision: rev, Results: results}, nil
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// declaredParams returns the stored Param declarations overlaid with those
// of the batch being applied.
func (s *Server) declaredParams(ctx context.Context, batch map[string]*api.Param) (map[string]*api.Param, error) {
	recs, _, err := s.st.List(ctx, api.KindParam, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]*api.Param, len(recs)+len(batch))
	for _, rec := range recs {
		var p api.Param
		if err := model.Decode(rec, &p); err == nil {
			out[p.Name] = &p
		}
	}
	for n, p := range batch {
		out[n] = p
	}
	return out, nil
}

// prepare fills server-owned parts of an object being applied: a machine
// keeps its status, a user's password is hashed, secure param values are
// sealed, and values are checked against their declarations.
func (s *Server) prepare(obj api.Object, existing store.Record, exists bool, declared map[string]*api.Param) error {
	switch o := obj.(type) {
	case *api.Machine:
		if exists {
			var old api.Machine
			if err := model.Decode(existing, &old); err != nil {
				return err
			}
			o.Status = old.Status
		} else {
			o.Status = api.MachineStatus{State: api.StateDiscovered}
		}
		return s.sealParams(o.Params, declared, existingParams(existing, exists, func() api.Object { return &api.Machine{} }))
	case *api.Profile:
		return s.sealParams(o.Params, declared, existingParams(existing, exists, func() api.Object { return &api.Profile{} }))
	case *api.Param:
		if o.Secure && len(o.Default) > 0 {
			return &model.FieldError{Field: "default", Err: errors.New("a secure param cannot have a default (it would be stored in clear)")}
		}
	case *api.User:
		if o.Password != "" {
			hash, err := auth.HashPasswordCost(o.Password, s.cfg.PasswordHashCost)
			if err != nil {
				return &model.FieldError{Field: "password", Err: err}
			}
			o.PasswordHash = hash
			o.Password = ""
		} else if exists {
			var old api.User
			if err := model.Decode(existing, &old); err != nil {
				return err
			}
			o.PasswordHash = old.PasswordHash
		} else {
			return &model.FieldError{Field: "password", Err: errors.New("a new user needs a password")}
		}
	}
	return nil
}

// keepAnAdmin refuses an apply that would leave no enabled admin: nobody
// could manage users any more, and drover has no back door.
func (s *Server) keepAnAdmin(ctx context.Context, objs []api.Object) error {
	demoted := -1
	batch := map[string]*api.User{}
	for i, obj := range objs {
		if u, ok := obj.(*api.User); ok {
			batch[u.Name] = u
			if (u.Role != api.RoleAdmin || u.Disabled) && demoted < 0 {
				demoted = i
			}
		}
	}
	if demoted < 0 {
		return nil
	}
	recs, _, err := s.st.List(ctx, api.KindUser, store.ListOptions{})
	if err != nil {
		return err
	}
	admins := 0
	for _, rec := range recs {
		if _, inBatch := batch[rec.Name]; inBatch {
			continue
		}
		var u api.User
		if model.Decode(rec, &u) == nil && u.Role == api.RoleAdmin && !u.Disabled {
			admins++
		}
	}
	for _, u := range batch {
		if u.Role == api.RoleAdmin && !u.Disabled {
			admins++
		}
	}
	if admins > 0 {
		return nil
	}
	u := objs[demoted].(*api.User)
	field := "role"
	if u.Disabled {
		field = "disabled"
	}
	return &model.DocError{Index: demoted + 1, Kind: u.Kind, Name: u.Name, Field: field,
		Err: conflictError("this would leave no enabled admin: make another user admin first")}
}

// conflictError is a refusal answered with 409 whose message stands alone
// (wrapping store.ErrConflict with %w would append "revision conflict").
type conflictError string

func (e conflictError) Error() string { return string(e) }
func (e conflictError) Unwrap() error { return store.ErrConflict }

// sealStoredValues seals, in the same transaction, the values stored in
// clear for params this apply declares secure: values set before the
// declaration must not stay readable at rest or in the API. Objects in the
// batch (skip) are sealed by prepare.
func (s *Server) sealStoredValues(ctx context.Context, p *principal, batch map[string]*api.Param, skip map[string]int, now time.Time) ([]store.Op, error) {
	var secure []string
	for name, pa := range batch {
		if pa.Secure {
			secure = append(secure, name)
		}
	}
	if len(secure) == 0 {
		return nil, nil
	}
	var ops []store.Op
	for _, kind := range []string{api.KindMachine, api.KindProfile} {
		recs, _, err := s.st.List(ctx, kind, store.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			if _, inBatch := skip[kind+"/"+rec.Name]; inBatch {
				continue
			}
			obj, err := model.DecodeNew(rec)
			if err != nil {
				return nil, err
			}
			var params map[string]json.RawMessage
			switch o := obj.(type) {
			case *api.Machine:
				params = o.Params
			case *api.Profile:
				params = o.Params
			}
			changed := false
			for _, name := range secure {
				v, ok := params[name]
				if !ok {
					continue
				}
				var sv string
				if json.Unmarshal(v, &sv) == nil && s.box.IsSealed(sv) {
					continue
				}
				sealed, err := s.box.Seal(v)
				if err != nil {
					return nil, err
				}
				params[name], _ = json.Marshal(sealed)
				changed = true
			}
			if !changed {
				continue
			}
			op, err := updateOpFor(obj)
			if err != nil {
				return nil, err
			}
			ops = append(ops, op, s.auditOp(p, "updated", kind+"/"+rec.Name, "sealed the values of params declared secure", now, 100000+len(ops)))
		}
	}
	return ops, nil
}

// existingParams returns the stored params of the object being replaced,
// so that re-applying a masked value keeps the stored secret.
func existingParams(rec store.Record, exists bool, newObj func() api.Object) map[string]json.RawMessage {
	if !exists {
		return nil
	}
	obj := newObj()
	if model.Decode(rec, obj) != nil {
		return nil
	}
	switch o := obj.(type) {
	case *api.Machine:
		return o.Params
	case *api.Profile:
		return o.Params
	}
	return nil
}

func (s *Server) sealParams(params map[string]json.RawMessage, declared map[string]*api.Param, old map[string]json.RawMessage) error {
	for name, v := range params {
		decl := declared[name]
		if decl == nil {
			continue
		}
		if decl.Secure && string(v) == maskedValue {
			if prev, ok := old[name]; ok {
				params[name] = prev
				continue
			}
			return &model.FieldError{Field: "params." + name, Err: errors.New("the masked value ******** can only be re-applied over a stored secret")}
		}
		var sv string
		if json.Unmarshal(v, &sv) == nil && s.box.IsSealed(sv) {
			// Only a value this endpoint sealed passes as sealed; anything
			// else that merely looks sealed would be kept in clear.
			if !decl.Secure {
				continue
			}
			if _, err := s.box.Open(sv); err != nil {
				return &model.FieldError{Field: "params." + name, Err: fmt.Errorf("the value looks sealed but this endpoint cannot open it (%v): give the plain value", err)}
			}
			continue
		}
		if err := model.CheckParamValue(decl, v); err != nil {
			return &model.FieldError{Field: "params." + name, Err: err}
		}
		if decl.Secure {
			// The same secret again keeps its stored form: sealing anew
			// would make every re-apply of an unchanged file an update.
			if prev, ok := old[name]; ok && s.sameSecret(prev, v) {
				params[name] = prev
				continue
			}
			sealed, err := s.box.Seal(v)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(sealed)
			params[name] = b
		}
	}
	return nil
}

// sameSecret reports whether stored (a sealed JSON string) holds the JSON
// value v.
func (s *Server) sameSecret(stored, v json.RawMessage) bool {
	var sv string
	if json.Unmarshal(stored, &sv) != nil {
		return false
	}
	plain, err := s.box.Open(sv)
	if err != nil {
		return false
	}
	var a, b bytes.Buffer
	return json.Compact(&a, plain) == nil && json.Compact(&b, v) == nil && bytes.Equal(a.Bytes(), b.Bytes())
}

// auditOp records a write in the same transaction as the write itself.
func (s *Server) auditOp(p *principal, action, target, detail string, now time.Time, seq int) store.Op {
	a := &api.Audit{
		Meta:   api.Meta{Kind: api.KindAudit, Name: fmt.Sprintf("%d-%s-%04d", now.UnixNano(), strings.ReplaceAll(p.String(), ":", "-"), seq)},
		Time:   now,
		User:   p.String(),
		Action: action,
		Target: target,
		Detail: detail,
	}
	a.Labels = map[string]string{"user": safeLabel(p.String())}
	lbls, data, _ := model.Encode(a)
	return store.Op{Type: store.OpPut, Kind: api.KindAudit, Name: a.Name, Labels: lbls, Data: data}
}

func safeLabel(s string) string {
	s = strings.ReplaceAll(s, ":", ".")
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request, p *principal) {
	k, err := kindFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if !auth.Allowed(p.Role, auth.Write, k.Kind) || k.Kind == api.KindAudit {
		writeError(w, forbidden(p, "delete "+k.Plural))
		return
	}
	if k.Kind == api.KindSite {
		s.handleRemoveSite(w, r, p)
		return
	}
	if s.forwardDelete(w, r, p, k) {
		return
	}
	name := r.PathValue("name")
	var expect int64
	if v := r.URL.Query().Get("revision"); v != "" {
		if expect, err = strconv.ParseInt(v, 10, 64); err != nil {
			writeError(w, badRequest("revision %q is not a number", v))
			return
		}
	}
	if k.Kind == api.KindUser && name == p.User {
		// self=1 is how a manager removes its own user from a site it
		// drops; a person is kept from locking themselves out by mistake.
		if r.URL.Query().Get("self") == "" {
			writeError(w, apiError(http.StatusConflict, "conflict", "you cannot delete your own user"))
			return
		}
		if err := s.otherAdminExists(r.Context(), name); err != nil {
			writeError(w, err)
			return
		}
	}
	switch k.Kind {
	case api.KindMachine:
		var m api.Machine
		if err := getObj(r.Context(), s.st, api.KindMachine, name, &m); err == nil && m.Status.Run != "" {
			writeError(w, apiError(http.StatusConflict, "conflict", "machine %q is running %s; wait for it to finish before deleting", name, m.Status.Run))
			return
		}
	case api.KindJob:
		// The engine would make an unfinished job again, and run its task a
		// second time.
		var j api.Job
		if err := getObj(r.Context(), s.st, api.KindJob, name, &j); err == nil && !j.Finished() {
			writeError(w, apiError(http.StatusConflict, "conflict", "job %q is %s; it can be deleted once it has finished", name, j.State))
			return
		}
	case api.KindRun:
		var run api.Run
		if err := getObj(r.Context(), s.st, api.KindRun, name, &run); err == nil && run.State == api.RunRunning {
			writeError(w, apiError(http.StatusConflict, "conflict", "run %q is running; it can be deleted once it has finished", name))
			return
		}
	case api.KindVersionSet, api.KindPackVersion:
		if err := s.refuseDeleteInUse(r.Context(), k.Kind, name); err != nil {
			writeError(w, err)
			return
		}
	}
	if content.KindAllowed(k.Kind) {
		if done := s.deletePackAware(w, r, p, k.Kind, name, expect); done {
			return
		}
	}
	ops := []store.Op{{Type: store.OpDelete, Kind: k.Kind, Name: name, ExpectRevision: expect}}
	switch k.Kind {
	case api.KindMachine:
		// The machine's agent credentials go with it.
		revoke, err := s.tokenDeletes(r.Context(), "machine", name)
		if err != nil {
			writeError(w, err)
			return
		}
		ops = append(ops, revoke...)
	case api.KindUser:
		// So do a user's sessions: a new user of the same name must not
		// inherit them.
		revoke, err := s.tokenDeletes(r.Context(), "user", name)
		if err != nil {
			writeError(w, err)
			return
		}
		ops = append(ops, revoke...)
	}
	ops = append(ops, s.auditOp(p, "deleted", k.Kind+"/"+name, "", time.Now().UTC(), 0))
	_, rev, err := s.st.Txn(r.Context(), ops)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, s.notFoundHere(k.Kind, name))
			return
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": k.Kind + "/" + name, "revision": rev})
}

// tokenDeletes returns the ops deleting every token whose label key
// (user or machine) is name.
func (s *Server) tokenDeletes(ctx context.Context, key, name string) ([]store.Op, error) {
	toks, _, err := s.st.List(ctx, api.KindToken, store.ListOptions{Selector: labelIs{key, name}})
	if err != nil {
		return nil, err
	}
	ops := make([]store.Op, 0, len(toks))
	for _, t := range toks {
		ops = append(ops, store.Op{Type: store.OpDelete, Kind: api.KindToken, Name: t.Name, ExpectRevision: t.Revision})
	}
	return ops, nil
}

// labelIs selects records whose label key has exactly value.
type labelIs struct{ key, value string }

func (l labelIs) Matches(set map[string]string) bool {
	v, ok := set[l.key]
	return ok && v == l.value
}

// summarizeMachine makes the summary view of a presented machine.
func summarizeMachine(full []byte) ([]byte, error) {
	summary, _, err := machineViews(full)
	return summary, err
}
