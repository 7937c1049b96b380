package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/adhoc"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// joinToken checks a join token and returns it.
func (s *Server) joinToken(r *http.Request) (*api.JoinToken, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	bad := apiError(http.StatusUnauthorized, "unauthorized", "registration needs a valid join token (drover join-token create)")
	if !ok {
		return nil, bad
	}
	prefix, id, secret, err := auth.ParseToken(tok)
	if err != nil || prefix != auth.PrefixJoin {
		return nil, bad
	}
	var jt api.JoinToken
	if err := getObj(r.Context(), s.st, api.KindJoinToken, id, &jt); err != nil {
		return nil, bad
	}
	if !auth.SecretMatches(secret, jt.SecretHash) {
		return nil, bad
	}
	if time.Now().After(jt.ExpiresAt) {
		return nil, apiError(http.StatusUnauthorized, "token_expired", "join token %s expired at %s; create a new one", id, jt.ExpiresAt.Format(time.RFC3339))
	}
	return &jt, nil
}

// handleRegister enrols a machine: it creates (or adopts) the Machine and
// issues the agent its own credential, in one transaction.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	jt, err := s.joinToken(r)
	if err != nil {
		s.metrics.authFailures.Add(1)
		writeError(w, err)
		return
	}
	var req api.RegisterRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := model.ValidateName(req.Name); err != nil {
		writeError(w, badRequest("machine name: %v", err))
		return
	}
	if len(req.AgentID) < 16 || len(req.AgentID) > 64 {
		writeError(w, badRequest("agentID must have 16 to 64 characters"))
		return
	}
	if err := req.Inventory.Validate(); err != nil {
		writeError(w, badRequest("inventory: %v", err))
		return
	}
	ctx := r.Context()
	for attempt := 0; attempt < 20; attempt++ {
		now := time.Now().UTC()
		var m api.Machine
		rec, err := s.st.Get(ctx, api.KindMachine, req.Name)
		exists := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			writeError(w, err)
			return
		}
		if exists {
			if err := model.Decode(rec, &m); err != nil {
				writeError(w, err)
				return
			}
			if err := adoptable(&m, &req); err != nil {
				writeError(w, err)
				return
			}
		} else {
			m = api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: req.Name}}
			m.Status.State = api.StateDiscovered
		}
		if m.Labels == nil && len(jt.MachineLabels) > 0 {
			m.Labels = map[string]string{}
		}
		for k, v := range jt.MachineLabels {
			if _, set := m.Labels[k]; !set {
				m.Labels[k] = v
			}
		}
		inv := req.Inventory
		m.Status.Inventory = &inv
		m.Status.Hardware = inv.Summary()
		m.Status.AgentID = agentIDHash(req.AgentID)
		m.Status.Reachable = true
		m.Status.LastSeen = &now
		m.Status.RegisteredAt = &now
		if m.Status.State == "" {
			m.Status.State = api.StateDiscovered
		}
		tok, tokenOp, err := s.newToken(auth.PrefixAgent, "", m.Name, api.RoleAgent, 0)
		if err != nil {
			writeError(w, err)
			return
		}
		prevToken := m.Status.AgentToken
		m.Status.AgentToken = tokenOp.Name
		lbls, data, err := model.Encode(&m)
		if err != nil {
			writeError(w, err)
			return
		}
		m.Status.AgentToken = prevToken
		mop := store.Op{Type: store.OpCreate, Kind: api.KindMachine, Name: m.Name, Labels: lbls, Data: data}
		if exists {
			mop.Type = store.OpUpdate
			mop.ExpectRevision = rec.Revision
		}
		// The machine's previous credential stops working.
		ops := []store.Op{mop}
		if prev := m.Status.AgentToken; prev != "" {
			if t, err := s.st.Get(ctx, api.KindToken, prev); err == nil {
				ops = append(ops, store.Op{Type: store.OpDelete, Kind: api.KindToken, Name: prev, ExpectRevision: t.Revision})
			}
		}
		// The join token is not written: concurrent registrations with one
		// token must not conflict. The audit entry names the token used.
		ops = append(ops, s.auditOp(&principal{User: "join-token:" + jt.Name}, "registered", "Machine/"+m.Name, "", now, 9))
		ops = append(ops, tokenOp)
		_, _, err = s.st.Txn(ctx, ops)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrNotFound) {
			// Someone changed the machine meanwhile: read again.
			continue
		}
		if err != nil {
			writeError(w, err)
			return
		}
		s.eng.Registered(m.Name)
		s.log.Info("machine registered", "machine", m.Name, "agent", m.Status.AgentID, "adopted", exists)
		writeJSON(w, http.StatusOK, api.RegisterResponse{Machine: m.Name, Token: tok, HeartbeatInterval: s.eng.Config().HeartbeatInterval.String()})
		return
	}
	writeError(w, apiError(http.StatusConflict, "conflict", "machine %q kept changing during registration; try again", req.Name))
}

// adoptable decides whether a registration may take over an existing
// machine: its own agent coming back, a machine created before its agent,
// or the same hardware whose agent lost its state (a reinstall), provided
// that agent is not alive elsewhere.
func adoptable(m *api.Machine, req *api.RegisterRequest) error {
	st := &m.Status
	if st.AgentID == "" || st.AgentID == agentIDHash(req.AgentID) || st.AgentID == req.AgentID {
		// (The last: machines registered before agent IDs were hashed.)
		return nil
	}
	if st.Inventory != nil && sameHardware(st.Inventory, &req.Inventory) && !st.Reachable {
		return nil
	}
	return apiError(http.StatusConflict, "exists",
		"machine %q is already registered by another agent; give this one another --name, or delete the machine first (drover delete machine %s)", m.Name, m.Name)
}

// agentIDHash is what the store keeps of an agent's ID. The ID is the
// agent's proof of identity when it registers again, and machines are
// readable by every viewer, so only a hash is kept and shown.
func agentIDHash(id string) string {
	return "sha256:" + auth.HashSecret(id)
}

func sameHardware(a, b *api.Inventory) bool {
	if a.System.UUID != "" && a.System.UUID == b.System.UUID {
		return a.PrimaryMAC() == b.PrimaryMAC()
	}
	return a.PrimaryMAC() != "" && a.PrimaryMAC() == b.PrimaryMAC()
}

func updateOpFor(obj api.Object) (store.Op, error) {
	lbls, data, err := model.Encode(obj)
	if err != nil {
		return store.Op{}, err
	}
	m := obj.GetMeta()
	return store.Op{Type: store.OpUpdate, Kind: m.Kind, Name: m.Name, Labels: lbls, Data: data, ExpectRevision: m.Revision}, nil
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request, p *principal) {
	s.eng.Heartbeat(p.Machine)
	writeJSON(w, http.StatusOK, api.HeartbeatResponse{HeartbeatInterval: s.eng.Config().HeartbeatInterval.String()})
}

func (s *Server) handleNextJob(w http.ResponseWriter, r *http.Request, p *principal) {
	var req api.NextJobRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	wait := 30 * time.Second
	if req.Wait != "" {
		d, err := time.ParseDuration(req.Wait)
		if err != nil || d < 0 || d > time.Minute {
			writeError(w, badRequest("wait %q: give a duration up to 60s", req.Wait))
			return
		}
		wait = d
	}
	// The poll also brings ad-hoc commands: it ends early when one comes
	// (the hub cancels ctx), and takes those that came meanwhile.
	s.completeCommands(p.Machine, req.Results)
	ctx, poll, cmds := s.cmds.Enter(r.Context(), p.Machine, req.Commands)
	var spec *api.JobSpec
	var err error
	if cmds.Empty() {
		spec, err = s.eng.NextJob(ctx, p.Machine, req.Running, wait)
	}
	gone := r.Context().Err() != nil
	more := poll.Leave(gone)
	if err != nil && !gone && adhoc.Woken(ctx) {
		err = nil
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			writeError(w, apiError(http.StatusServiceUnavailable, "unavailable", "server is shutting down"))
			return
		}
		writeError(w, err)
		return
	}
	if spec != nil {
		s.metrics.jobsDispatched.Add(1)
	}
	writeJSON(w, http.StatusOK, api.NextJobResponse{Job: spec,
		Commands: append(cmds.Commands, more.Commands...), CancelCommands: append(cmds.Cancel, more.Cancel...)})
}

func (s *Server) handleJobAppendLog(w http.ResponseWriter, r *http.Request, p *principal) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, badRequest("reading log: %v", err))
		return
	}
	if len(data) > maxBody {
		writeError(w, apiError(http.StatusRequestEntityTooLarge, "too_large", "send logs in chunks of at most %d bytes", maxBody))
		return
	}
	if err := s.eng.AppendLog(r.Context(), p.Machine, r.PathValue("name"), data); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleJobComplete(w http.ResponseWriter, r *http.Request, p *principal) {
	var res api.JobResult
	if err := decodeBody(r, &res); err != nil {
		writeError(w, err)
		return
	}
	if len(res.Message) > 4096 {
		res.Message = res.Message[:4096]
	}
	if err := s.eng.CompleteJob(r.Context(), p.Machine, r.PathValue("name"), res); err != nil {
		writeError(w, err)
		return
	}
	s.metrics.jobsCompleted.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleAgentMachine(w http.ResponseWriter, r *http.Request, p *principal) {
	rec, err := s.st.Get(r.Context(), api.KindMachine, p.Machine)
	if err != nil {
		writeError(w, fmt.Errorf("machine %q: %w", p.Machine, err))
		return
	}
	out, err := s.present(rec)
	if err != nil {
		writeError(w, err)
		return
	}
	writeRawJSON(w, http.StatusOK, out)
}
