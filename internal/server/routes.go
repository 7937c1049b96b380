package server

import (
	"context"
	"net/http"
	"net/http/pprof"

	"github.com/drover-project/drover/api"
)

func (s *Server) routes(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// Only login and health are open: metrics tell an outsider how big the
	// site is and how busy, so a scraper needs a token (a viewer is enough).
	mux.HandleFunc("GET /metrics", s.userOnly(s.handleMetrics))
	// Profiles for whoever runs the site: admins only, since they show
	// what the server holds in memory.
	mux.HandleFunc("GET /debug/pprof/{profile...}", s.userOnly(func(w http.ResponseWriter, r *http.Request, p *principal) {
		if p.Role != api.RoleAdmin {
			writeError(w, forbidden(p, "read profiles"))
			return
		}
		switch name := r.PathValue("profile"); name {
		case "", "index":
			pprof.Index(w, r)
		case "profile":
			pprof.Profile(w, r)
		case "trace":
			pprof.Trace(w, r)
		default:
			pprof.Handler(name).ServeHTTP(w, r)
		}
	}))
	mux.HandleFunc("POST /api/v1/login", s.handleLogin)
	mux.HandleFunc("GET /api/v1/whoami", s.withAuth(s.handleWhoami))
	mux.HandleFunc("GET /api/v1/endpoint", s.userOnly(s.handleEndpointInfo))
	mux.HandleFunc("POST /api/v1/sites", s.userOnly(s.handleAddSite))
	mux.HandleFunc("DELETE /api/v1/sites/{name}", s.userOnly(s.handleRemoveSite))
	mux.HandleFunc("POST /api/v1/sites/{name}/sync", s.userOnly(s.handleSiteSync))

	mux.HandleFunc("GET /api/v1/objects/{kind}", s.userOnly(s.handleList))
	mux.HandleFunc("GET /api/v1/objects/{kind}/{name...}", s.userOnly(s.handleGet))
	mux.HandleFunc("PUT /api/v1/objects/{kind}/{name...}", s.userOnly(s.handlePut))
	mux.HandleFunc("DELETE /api/v1/objects/{kind}/{name...}", s.userOnly(s.handleDelete))
	mux.HandleFunc("POST /api/v1/apply", s.userOnly(s.handleApply))
	mux.HandleFunc("POST /api/v1/actions/{action}", s.userOnly(s.handleAction))
	mux.HandleFunc("GET /api/v1/jobs/{name}/log", s.userOnly(s.handleJobLog))
	mux.HandleFunc("GET /api/v1/events", s.userOnly(s.handleEvents))
	mux.HandleFunc("POST /api/v1/join-tokens", s.userOnly(s.handleCreateJoinToken))
	mux.HandleFunc("POST /api/v1/rollouts", s.userOnly(s.handleStartRollout))
	mux.HandleFunc("POST /api/v1/rollouts/{name}/resume", s.userOnly(s.handleResumeRollout))
	mux.HandleFunc("POST /api/v1/rollouts/{name}/cancel", s.userOnly(s.handleCancelRollout))
	mux.HandleFunc("POST /api/v1/content", s.userOnly(s.handleContentPush))
	mux.HandleFunc("DELETE /api/v1/content/{name}", s.userOnly(s.handleContentRemove))
	mux.HandleFunc("POST /api/v1/run", s.userOnly(s.handleRun))
	mux.HandleFunc("POST /api/v1/cp", s.userOnly(s.handleCopy))

	mux.HandleFunc("POST /api/v1/agent/register", s.handleRegister)
	mux.HandleFunc("POST /api/v1/agent/heartbeat", s.agentOnly(s.handleHeartbeat))
	mux.HandleFunc("GET /api/v1/agent/machine", s.agentOnly(s.handleAgentMachine))
	mux.HandleFunc("POST /api/v1/agent/boot-env", s.agentOnly(s.handleAgentBootEnv))
	mux.HandleFunc("POST /api/v1/agent/jobs/next", s.agentOnly(s.handleNextJob))
	mux.HandleFunc("POST /api/v1/agent/jobs/{name}/log", s.agentOnly(s.handleJobAppendLog))
	mux.HandleFunc("POST /api/v1/agent/jobs/{name}/complete", s.agentOnly(s.handleJobComplete))
	mux.HandleFunc("POST /api/v1/agent/commands/{id}/result", s.agentOnly(s.handleCommandResult))
	mux.HandleFunc("GET /api/v1/agent/commands/{id}/archive", s.agentOnly(s.handleCommandArchive))

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, apiError(http.StatusNotFound, "not_found", "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.metrics.requests.Add(1)
		if isAgentRequest(r) && s.gate.wait(r.Context()) {
			s.metrics.agentsHeld.Add(1)
		}
		mux.ServeHTTP(w, r)
	})
}
