package server

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/engine"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// handleStartRollout starts a rolling lifecycle action on the machines of
// a node range, in node range order.
func (s *Server) handleStartRollout(w http.ResponseWriter, r *http.Request, p *principal) {
	var req api.RolloutRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if !slices.Contains(model.RolloutActions, req.Action) {
		writeError(w, badRequest("action %q: a rollout runs %s", req.Action, strings.Join(model.RolloutActions, ", ")))
		return
	}
	if !auth.CanAct(p.Role) {
		writeError(w, forbidden(p, req.Action+" machines"))
		return
	}
	if req.Nodes == "" {
		writeError(w, badRequest("nodes is required (a node range such as n[1-5] or @role=compute)"))
		return
	}
	names, err := s.resolveNodes(r.Context(), req.Nodes)
	if err != nil {
		writeError(w, err)
		return
	}
	ro := &api.Rollout{
		Action: req.Action, Workflow: req.Workflow, Nodes: req.Nodes, Machines: names,
		BatchSize: req.BatchSize, MaxUnavailable: req.MaxUnavailable, MaxFailures: req.MaxFailures, PauseBetween: req.PauseBetween,
		User: p.String(),
	}
	err = s.eng.CreateRollout(r.Context(), ro, func(ro *api.Rollout) []store.Op {
		detail := fmt.Sprintf("%s of %d machines", ro.Action, len(ro.Machines))
		return []store.Op{s.auditOp(p, "started", api.KindRollout+"/"+ro.Name, detail, time.Now().UTC(), 1)}
	})
	if err != nil {
		var ie *engine.InvalidRolloutError
		if errors.As(err, &ie) {
			writeError(w, badRequest("%v", err))
			return
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ro)
}

func (s *Server) handleResumeRollout(w http.ResponseWriter, r *http.Request, p *principal) {
	var req api.RolloutResumeRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	s.changeRollout(w, r, p, "resumed", func(name string) (*api.Rollout, error) {
		return s.eng.ResumeRollout(r.Context(), name, req.RetryFailed, p.String())
	})
}

func (s *Server) handleCancelRollout(w http.ResponseWriter, r *http.Request, p *principal) {
	s.changeRollout(w, r, p, "cancelled", func(name string) (*api.Rollout, error) {
		return s.eng.CancelRollout(r.Context(), name, p.String())
	})
}

// changeRollout applies a resume or cancel and audits it.
func (s *Server) changeRollout(w http.ResponseWriter, r *http.Request, p *principal, action string, change func(name string) (*api.Rollout, error)) {
	if !auth.CanAct(p.Role) {
		writeError(w, forbidden(p, "change rollouts"))
		return
	}
	name := r.PathValue("name")
	ro, err := change(name)
	if err != nil {
		var se *engine.RolloutStateError
		if errors.As(err, &se) {
			writeError(w, apiError(http.StatusConflict, "conflict", "%s", se.Msg))
			return
		}
		writeError(w, err)
		return
	}
	_, _, _ = s.st.Txn(r.Context(), []store.Op{s.auditOp(p, action, api.KindRollout+"/"+name, ro.Status.Message, time.Now().UTC(), 0)})
	writeJSON(w, http.StatusOK, ro)
}
