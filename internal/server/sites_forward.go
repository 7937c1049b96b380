package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/noderange"
	"github.com/drover-project/drover/internal/store"
)

// siteUniverse is what node ranges are evaluated against on a manager:
// its own machines (site "") and each site's mirrored machines.
func (s *Server) siteUniverse(ctx context.Context) (noderange.MapUniverse, error) {
	recs, _, err := s.st.List(ctx, api.KindMachine, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	u := noderange.MapUniverse{"": make([]noderange.NodeInfo, 0, len(recs))}
	for _, r := range recs {
		u[""] = append(u[""], noderange.NodeInfo{Name: r.Name, Labels: r.Labels})
	}
	for _, run := range s.sites.all() {
		u[run.name] = nil
		if run.mirror == nil {
			continue
		}
		objs, err := run.mirror.List(api.KindMachine)
		if err != nil {
			return nil, fmt.Errorf("site %q mirror: %w", run.name, err)
		}
		for _, o := range objs {
			var head struct {
				Labels map[string]string `json:"labels"`
			}
			_ = json.Unmarshal(o.JSON, &head)
			u[run.name] = append(u[run.name], noderange.NodeInfo{Name: o.Name, Labels: head.Labels})
		}
	}
	return u, nil
}

// handleActionWithSites runs a lifecycle action on a manager: the range is
// evaluated against its own machines and its sites' mirrored ones, split
// by site, started here for its own and forwarded to each site for
// theirs, all at once; a site that cannot be reached is reported on its
// machines and holds nobody back.
func (s *Server) handleActionWithSites(w http.ResponseWriter, r *http.Request, p *principal, action string, req api.ActionRequest) {
	ctx := r.Context()
	var results []api.ActionResult
	if site, rest, nested := nestedRange(req.Nodes); nested && s.sites.get(site) != nil {
		// A nested manager's range (region1%east%n1): passed through, it
		// is region1's to resolve.
		results = s.forwardAction(ctx, p, site, action, api.ActionRequest{Nodes: rest, Workflow: req.Workflow}, nil)
	} else {
		u, err := s.siteUniverse(ctx)
		if err != nil {
			writeError(w, err)
			return
		}
		set, err := noderange.Resolve(req.Nodes, u)
		if err != nil {
			writeError(w, badRequest("node range %q: %s", req.Nodes, strings.TrimPrefix(err.Error(), "noderange: ")))
			return
		}
		if set.Len() == 0 {
			writeError(w, badRequest("node range %q selects no machine", req.Nodes))
			return
		}
		sites := set.Sites()
		parts := make([][]api.ActionResult, len(sites))
		var wg sync.WaitGroup
		for i, site := range sites {
			names := set.Names(site)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if site == "" {
					parts[i] = s.startLocal(ctx, p, action, req, names)
					return
				}
				nodes := make([]noderange.Node, len(names))
				for j, n := range names {
					nodes[j] = noderange.Node{Name: n}
				}
				parts[i] = s.forwardAction(ctx, p, site, action, api.ActionRequest{Nodes: noderange.NewNodeSet(nodes...).Fold(), Workflow: req.Workflow}, names)
			}()
		}
		wg.Wait()
		for _, part := range parts {
			results = append(results, part...)
		}
	}
	status := http.StatusConflict
	for _, res := range results {
		if res.Error == "" {
			status = http.StatusOK
		}
	}
	writeJSON(w, status, api.ActionResponse{Action: action, Results: results})
}

// nestedRange tells a range meant for a site that is itself a manager,
// SITE%REST where REST is qualified by sites of SITE (region1%east%n1):
// such a range does not parse here, and its REST does.
func nestedRange(expr string) (site, rest string, ok bool) {
	site, rest, found := strings.Cut(expr, "%")
	if !found || !strings.Contains(rest, "%") {
		return "", "", false
	}
	if _, err := noderange.Parse(expr); err == nil {
		return "", "", false
	}
	if _, err := noderange.Parse(rest); err != nil {
		return "", "", false
	}
	return site, rest, true
}

// forwardAction starts action on a site with the manager's credential and
// returns the site's per-machine outcomes, tagged with the site. names are
// the machines the range named there (nil for a pass-through range): if
// the site cannot be reached, each is reported so.
func (s *Server) forwardAction(ctx context.Context, p *principal, site, action string, req api.ActionRequest, names []string) []api.ActionResult {
	fail := func(msg string) []api.ActionResult {
		if names == nil {
			names = []string{req.Nodes}
		}
		out := make([]api.ActionResult, len(names))
		for i, n := range names {
			out[i] = api.ActionResult{Site: site, Machine: n, Error: msg}
		}
		return out
	}
	run := s.sites.get(site)
	if run == nil || run.conn == nil {
		return fail(fmt.Sprintf("site %q cannot be reached from this manager (not mirrored)", site))
	}
	ctx, cancel := context.WithTimeout(ctx, siteCallTimeout)
	defer cancel()
	var resp *api.ActionResponse
	err := run.conn.call(ctx, func(c *api.Client) error {
		var err error
		resp, err = c.Action(ctx, action, req.Nodes, req.Workflow)
		if resp != nil {
			return nil // refusals are per machine, in resp
		}
		return err
	})
	if err != nil {
		return fail(siteError(site, run.conn.base.Endpoint, err).Message)
	}
	started := 0
	for i := range resp.Results {
		res := &resp.Results[i]
		if res.Site != "" {
			res.Site = site + "%" + res.Site // a nested manager's site
		} else {
			res.Site = site
		}
		if res.Error == "" {
			started++
		}
	}
	a := s.auditOp(p, action, "site "+site+": machines/"+req.Nodes, fmt.Sprintf("forwarded: %d started, %d refused", started, len(resp.Results)-started), time.Now().UTC(), 0)
	_, _, _ = s.st.Txn(ctx, []store.Op{a})
	return resp.Results
}

// docSite reads the site of a document and returns the document as the
// site itself takes it: without the site field and the site label the
// manager added.
func docSite(doc json.RawMessage) (string, json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(doc, &fields); err != nil {
		return "", doc, nil // the usual checks will say what is wrong
	}
	raw, ok := fields["site"]
	if !ok {
		return "", doc, nil
	}
	var site string
	if err := json.Unmarshal(raw, &site); err != nil || site == "" {
		return "", nil, badRequest("site: want a site name, got %s", raw)
	}
	delete(fields, "site")
	if l, ok := fields["labels"]; ok {
		var labels map[string]string
		if json.Unmarshal(l, &labels) == nil && labels[api.SiteLabel] == site {
			delete(labels, api.SiteLabel)
			if len(labels) == 0 {
				delete(fields, "labels")
			} else {
				fields["labels"], _ = json.Marshal(labels)
			}
		}
	}
	out, err := json.Marshal(fields)
	return site, out, err
}

// docsSite returns the site all documents belong to ("" for the
// endpoint's own) and the documents as that site takes them.
func docsSite(docs []json.RawMessage) (string, []json.RawMessage, error) {
	site := ""
	out := make([]json.RawMessage, len(docs))
	var sites []string
	for i, d := range docs {
		ds, stripped, err := docSite(d)
		if err != nil {
			return "", nil, err
		}
		out[i] = stripped
		if i == 0 {
			site = ds
		}
		if ds != site && !slices.Contains(sites, ds) {
			sites = append(sites, ds)
		}
	}
	if len(sites) > 0 {
		all := append([]string{site}, sites...)
		for i, s := range all {
			if s == "" {
				all[i] = "this endpoint"
			}
		}
		sort.Strings(all)
		return "", nil, badRequest("the documents belong to several sites (%s): apply each site's documents separately (an apply is all or nothing on one site)", strings.Join(all, ", "))
	}
	return site, out, nil
}

// forward sends a write of a mirrored object to its site with the
// manager's credential and answers with the site's answer; the change
// comes back through the mirror.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, p *principal, site, method, path string, body any, target string) {
	run := s.siteRun(w, site, false)
	if run == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), siteCallTimeout)
	defer cancel()
	var out json.RawMessage
	err := run.conn.call(ctx, func(c *api.Client) error { return c.Do(ctx, method, path, body, &out) })
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		ae.Message = fmt.Sprintf("site %q: %s", site, ae.Message)
		if ae.Status == 0 {
			ae.Status = http.StatusBadGateway
		}
		writeError(w, ae)
		return
	case err != nil:
		writeError(w, siteError(site, run.conn.base.Endpoint, err))
		return
	}
	a := s.auditOp(p, "forwarded", "site "+site+": "+target, method, time.Now().UTC(), 0)
	_, _, _ = s.st.Txn(r.Context(), []store.Op{a})
	writeRawJSON(w, http.StatusOK, out)
}

// forwardPut forwards PUT /api/v1/objects/{kind}/{name} of a site's object
// (?site=NAME, or a body with a site field): it reports whether it did.
func (s *Server) forwardPut(w http.ResponseWriter, r *http.Request, p *principal, k *model.KindInfo, raw json.RawMessage) bool {
	site, doc, err := docSite(raw)
	if err != nil {
		writeError(w, err)
		return true
	}
	if q := r.URL.Query().Get("site"); q != "" {
		if site != "" && site != q {
			writeError(w, badRequest("the body's site %q and ?site=%s differ", site, q))
			return true
		}
		site = q
	}
	if site == "" {
		return false
	}
	if !auth.Allowed(p.Role, auth.Write, k.Kind) {
		writeError(w, forbidden(p, "write "+k.Plural))
		return true
	}
	name := r.PathValue("name")
	s.forward(w, r, p, site, http.MethodPut, "/api/v1/objects/"+k.Plural+"/"+url.PathEscape(name), doc, k.Kind+"/"+name)
	return true
}

// forwardDelete forwards DELETE /api/v1/objects/{kind}/{name}?site=NAME.
func (s *Server) forwardDelete(w http.ResponseWriter, r *http.Request, p *principal, k *model.KindInfo) bool {
	site := r.URL.Query().Get("site")
	if site == "" {
		return false
	}
	q := url.Values{}
	if v := r.URL.Query().Get("revision"); v != "" {
		q.Set("revision", v)
	}
	name := r.PathValue("name")
	path := "/api/v1/objects/" + k.Plural + "/" + url.PathEscape(name)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	s.forward(w, r, p, site, http.MethodDelete, path, nil, k.Kind+"/"+name)
	return true
}

// forwardApply forwards an apply whose documents belong to one site.
func (s *Server) forwardApply(w http.ResponseWriter, r *http.Request, p *principal, docs []json.RawMessage) bool {
	site, stripped, err := docsSite(docs)
	if err != nil {
		writeError(w, err)
		return true
	}
	if site == "" {
		return false
	}
	for _, d := range stripped {
		var head struct{ Kind string }
		_ = json.Unmarshal(d, &head)
		k, err := model.Lookup(head.Kind)
		if err != nil {
			writeError(w, badRequest("%v", err))
			return true
		}
		if !auth.Allowed(p.Role, auth.Write, k.Kind) {
			writeError(w, forbidden(p, "write "+k.Plural))
			return true
		}
	}
	s.forward(w, r, p, site, http.MethodPost, "/api/v1/apply", api.ApplyRequest{Documents: stripped}, fmt.Sprintf("%d documents", len(docs)))
	return true
}
