package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/engine"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/noderange"
	"github.com/drover-project/drover/internal/store"
)

// resolveNodes evaluates a node range against this site's machines.
func (s *Server) resolveNodes(ctx context.Context, expr string) ([]string, error) {
	recs, _, err := s.st.List(ctx, api.KindMachine, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	nodes := make([]noderange.NodeInfo, 0, len(recs))
	for _, r := range recs {
		nodes = append(nodes, noderange.NodeInfo{Name: r.Name, Labels: r.Labels})
	}
	set, err := noderange.Resolve(expr, noderange.MapUniverse{"": nodes})
	if err != nil {
		return nil, badRequest("node range %q: %s", expr, strings.TrimPrefix(err.Error(), "noderange: "))
	}
	names := set.Names("")
	if len(names) == 0 {
		return nil, badRequest("node range %q selects no machine", expr)
	}
	return names, nil
}

func (s *Server) handleAction(w http.ResponseWriter, r *http.Request, p *principal) {
	action := r.PathValue("action")
	known := false
	for _, a := range engine.Actions {
		known = known || a == action
	}
	if !known {
		writeError(w, apiError(http.StatusNotFound, "unknown_action", "unknown action %q (use commission, deploy, upgrade, decommission or verify)", action))
		return
	}
	if !auth.CanAct(p.Role) {
		writeError(w, forbidden(p, action+" machines"))
		return
	}
	var req api.ActionRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Nodes == "" {
		writeError(w, badRequest("nodes is required (a node range such as n[1-5] or @role=compute)"))
		return
	}
	if req.Workflow != "" {
		if err := model.ValidateName(req.Workflow); err != nil {
			writeError(w, badRequest("workflow: %v", err))
			return
		}
	}
	if s.hasSites() {
		// A manager: the range may name its sites' machines.
		s.handleActionWithSites(w, r, p, action, req)
		return
	}
	names, err := s.resolveNodes(r.Context(), req.Nodes)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := api.ActionResponse{Action: action, Results: s.startLocal(r.Context(), p, action, req, names)}
	failedCount := 0
	for _, res := range resp.Results {
		if res.Error != "" {
			failedCount++
		}
	}
	status := http.StatusOK
	if failedCount == len(names) {
		// Nothing started: say why with a client error, the body has the
		// per-machine reasons.
		status = http.StatusConflict
	}
	writeJSON(w, status, resp)
}

// startLocal starts action on this endpoint's machines names, and audits
// it; it returns each machine's outcome.
func (s *Server) startLocal(ctx context.Context, p *principal, action string, req api.ActionRequest, names []string) []api.ActionResult {
	results := make([]api.ActionResult, len(names))
	// Start machines in parallel: each start is its own transaction, and
	// concurrent transactions share commits in the store.
	var failed atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(32, len(names)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				res := api.ActionResult{Machine: names[i]}
				run, err := s.eng.StartAction(ctx, names[i], action, req.Workflow, p.String())
				if err != nil {
					res.Error = err.Error()
					failed.Add(1)
				} else {
					res.Run = run.Name
				}
				results[i] = res
			}
		}()
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	failedCount := int(failed.Load())
	if failedCount < len(names) {
		now := time.Now().UTC()
		a := s.auditOp(p, action, "machines/"+req.Nodes, fmt.Sprintf("%d started, %d refused", len(names)-failedCount, failedCount), now, 0)
		_, _, _ = s.st.Txn(ctx, []store.Op{a})
	}
	return results
}

// handleJobLog streams a job's log; with follow=1 it keeps streaming until
// the job ends.
func (s *Server) handleJobLog(w http.ResponseWriter, r *http.Request, p *principal) {
	if !canRead(p, api.KindJob) {
		writeError(w, forbidden(p, "read job logs"))
		return
	}
	name := r.PathValue("name")
	var job api.Job
	if err := getObj(r.Context(), s.st, api.KindJob, name, &job); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, apiError(http.StatusNotFound, "not_found", "job %q not found", name))
			return
		}
		writeError(w, err)
		return
	}
	var offset int64
	if v := r.URL.Query().Get("offset"); v != "" {
		o, err := strconv.ParseInt(v, 10, 64)
		if err != nil || o < 0 {
			writeError(w, badRequest("offset %q is not a non-negative number", v))
			return
		}
		offset = o
	}
	follow := r.URL.Query().Get("follow") != ""
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Job-State", job.State)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	for {
		// Take the wait channel before reading, so an append between the
		// read and the wait is not missed.
		wait := s.eng.WaitLog(name)
		data, err := s.st.ReadLog(r.Context(), name, offset)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return
		}
		if len(data) > 0 {
			if _, err := w.Write(data); err != nil {
				return
			}
			offset += int64(len(data))
			if flusher != nil {
				flusher.Flush()
			}
		}
		if !follow {
			return
		}
		if err := s.recheck(r.Context(), p); err != nil {
			// The session ended while following: stop (a new request gets
			// the 401 that says why).
			return
		}
		if err := getObj(r.Context(), s.st, api.KindJob, name, &job); err != nil || job.Finished() {
			// One more read: output appended just before the end.
			if rest, _ := s.st.ReadLog(r.Context(), name, offset); len(rest) > 0 {
				_, _ = w.Write(rest)
			}
			return
		}
		select {
		case <-wait:
		case <-r.Context().Done():
			return
		case <-time.After(30 * time.Second):
		}
	}
}

func (s *Server) handleCreateJoinToken(w http.ResponseWriter, r *http.Request, p *principal) {
	if !auth.CanAct(p.Role) {
		writeError(w, forbidden(p, "create join tokens"))
		return
	}
	var req api.JoinTokenRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 365*24*time.Hour {
			writeError(w, badRequest("ttl %q: give a duration such as 1h or 720h (at most a year)", req.TTL))
			return
		}
		ttl = d
	}
	if err := model.ValidateLabels(req.MachineLabels); err != nil {
		writeError(w, badRequest("machineLabels: %v", err))
		return
	}
	tok, id, hash, err := auth.NewToken(auth.PrefixJoin)
	if err != nil {
		writeError(w, err)
		return
	}
	now := time.Now().UTC()
	jt := &api.JoinToken{
		Meta:          api.Meta{Kind: api.KindJoinToken, Name: id},
		ExpiresAt:     now.Add(ttl),
		SecretHash:    hash,
		CreatedBy:     p.String(),
		MachineLabels: req.MachineLabels,
	}
	lbls, data, err := model.Encode(jt)
	if err != nil {
		writeError(w, err)
		return
	}
	ops := []store.Op{
		{Type: store.OpCreate, Kind: api.KindJoinToken, Name: id, Labels: lbls, Data: data},
		s.auditOp(p, "created", "JoinToken/"+id, "ttl "+ttl.String(), now, 1),
	}
	if _, _, err := s.st.Txn(r.Context(), ops); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.JoinTokenResponse{Name: id, Token: tok, ExpiresAt: jt.ExpiresAt})
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request, p *principal) {
	writeJSON(w, http.StatusOK, map[string]string{"user": p.User, "machine": p.Machine, "role": p.Role})
}
