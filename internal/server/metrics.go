package server

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/drover-project/drover/internal/boot/dhcp"
)

// metrics are exposed in the Prometheus text format at /metrics.
type metrics struct {
	requests       atomic.Int64
	authFailures   atomic.Int64
	jobsDispatched atomic.Int64
	jobsCompleted  atomic.Int64
	agentsHeld     atomic.Int64
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
	p("drover_agent_requests_held_total", "Agent requests that waited for people's requests to finish first.", "counter", s.metrics.agentsHeld.Load())
	p("drover_jobs_running", "Jobs running now.", "gauge", st.Running)
	p("drover_jobs_queued", "Jobs waiting for a slot or their agent.", "gauge", st.Queued)
	p("drover_jobs_max_concurrent", "The global limit on running jobs.", "gauge", st.Max)
	p("drover_agents_waiting", "Agents holding a long poll for work.", "gauge", st.Waiting)
	p("drover_store_revision", "Current store revision.", "gauge", rev)
	p("drover_go_heap_bytes", "Go heap in use.", "gauge", ms.HeapInuse)
	p("drover_go_stack_bytes", "Go goroutine stacks.", "gauge", ms.StackInuse)
	p("drover_go_goroutines", "Goroutines.", "gauge", runtime.NumGoroutine())
	p("drover_uptime_seconds", "Seconds since start.", "gauge", int64(time.Since(s.started).Seconds()))
	if s.dhcp != nil {
		writeDHCPMetrics(w, &s.dhcp.Stats)
	}
	s.writeSiteMetrics(w)
}

// writeDHCPMetrics writes the DHCP server's counters.
func writeDHCPMetrics(w io.Writer, st *dhcp.Stats) {
	c := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	c("drover_dhcp_packets_received_total", "DHCP packets received.", st.Received.Load())
	c("drover_dhcp_packets_malformed_total", "DHCP packets that did not parse (not answered).", st.Malformed.Load())
	c("drover_dhcp_packets_ignored_total", "DHCP packets not answered (unknown machines with --dhcp-only-known, other servers' requests...).", st.Ignored.Load())
	fmt.Fprintf(w, "# HELP drover_dhcp_replies_total DHCP replies sent, by type (proxy_ack: DHCPACKs to PXE clients on the proxy DHCP port 4011).\n# TYPE drover_dhcp_replies_total counter\n")
	for _, r := range []struct {
		typ string
		v   int64
	}{{"offer", st.Offers.Load()}, {"ack", st.Acks.Load()}, {"nak", st.Naks.Load()}, {"inform", st.Inform.Load()}, {"proxy_ack", st.ProxyAcks.Load()}} {
		fmt.Fprintf(w, "drover_dhcp_replies_total{type=%q} %d\n", r.typ, r.v)
	}
	c("drover_dhcp_releases_total", "DHCPRELEASEs handled.", st.Releases.Load())
	c("drover_dhcp_declines_total", "DHCPDECLINEs handled.", st.Declines.Load())
	c("drover_dhcp_lease_writes_total", "Leases written to the store (each before its ACK).", st.LeaseWrites.Load())
	c("drover_dhcp_lease_write_errors_total", "Lease batches the store refused (their clients got no ACK).", st.LeaseWriteErrors.Load())
}
