package server

import (
	"fmt"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"
)

// metrics are exposed in the Prometheus text format at /metrics.
type metrics struct {
	requests       atomic.Int64
	authFailures   atomic.Int64
	jobsDispatched atomic.Int64
	jobsCompleted  atomic.Int64
}

func newMetrics() *metrics { return &metrics{} }

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request, _ *principal) {
	st := s.eng.Stats()
	rev, _ := s.st.Revision(r.Context())
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	p := func(name, help, typ string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	p("drover_http_requests_total", "API requests served.", "counter", s.metrics.requests.Load())
	p("drover_auth_failures_total", "Requests refused for bad credentials.", "counter", s.metrics.authFailures.Load())
	p("drover_jobs_dispatched_total", "Jobs handed to agents.", "counter", s.metrics.jobsDispatched.Load())
	p("drover_jobs_completed_total", "Job results reported by agents.", "counter", s.metrics.jobsCompleted.Load())
	p("drover_jobs_running", "Jobs running now.", "gauge", st.Running)
	p("drover_jobs_queued", "Jobs waiting for a slot or their agent.", "gauge", st.Queued)
	p("drover_jobs_max_concurrent", "The global limit on running jobs.", "gauge", st.Max)
	p("drover_agents_waiting", "Agents holding a long poll for work.", "gauge", st.Waiting)
	p("drover_store_revision", "Current store revision.", "gauge", rev)
	p("drover_go_heap_bytes", "Go heap in use.", "gauge", ms.HeapInuse)
	p("drover_go_stack_bytes", "Go goroutine stacks.", "gauge", ms.StackInuse)
	p("drover_go_goroutines", "Goroutines.", "gauge", runtime.NumGoroutine())
	p("drover_uptime_seconds", "Seconds since start.", "gauge", int64(time.Since(s.started).Seconds()))
}
