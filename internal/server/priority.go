package server

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// priorityGate serves people before machines. While an interactive request
// (a list, a get, an apply, an action of a signed-in user) is in flight,
// agent requests wait at the door, up to agentMaxWait, before doing any
// work. With 10,000 agents keeping a 2-core server busy, `drover get
// machines` otherwise queued behind their work for the CPU at every step;
// agents lose a few milliseconds on work that takes seconds anyway.
// Kubernetes' API Priority and Fairness makes the same choice between
// kubelets and people, with more knobs. Streams (events, followed logs,
// drover run) are not interactive: they would hold agents back for as long
// as they last.
type priorityGate struct {
	active atomic.Int64 // interactive requests in flight (fast path)

	mu    sync.Mutex
	n     int64
	clear chan struct{} // closed when the last interactive request ends
}

// agentMaxWait bounds how long an agent request waits for people, so that
// a steady stream of interactive requests slows agents down but never
// stops them.
const agentMaxWait = 250 * time.Millisecond

func newPriorityGate() *priorityGate {
	g := &priorityGate{clear: make(chan struct{})}
	close(g.clear)
	return g
}

func (g *priorityGate) enter() {
	g.mu.Lock()
	if g.n == 0 {
		g.clear = make(chan struct{})
	}
	g.n++
	g.active.Store(g.n)
	g.mu.Unlock()
}

func (g *priorityGate) leave() {
	g.mu.Lock()
	g.n--
	g.active.Store(g.n)
	if g.n == 0 {
		close(g.clear)
	}
	g.mu.Unlock()
}

// wait holds an agent request while interactive requests are in flight,
// up to agentMaxWait. It reports whether it waited.
func (g *priorityGate) wait(ctx context.Context) bool {
	if g.active.Load() == 0 {
		return false
	}
	g.mu.Lock()
	clear := g.clear
	g.mu.Unlock()
	t := time.NewTimer(agentMaxWait)
	defer t.Stop()
	select {
	case <-clear:
	case <-t.C:
	case <-ctx.Done():
	}
	return true
}

// isInteractive tells the requests a person waits for: reads and writes of
// objects, applies and lifecycle actions.
func isInteractive(r *http.Request) bool {
	p := r.URL.Path
	return strings.HasPrefix(p, "/api/v1/objects/") || p == "/api/v1/apply" || strings.HasPrefix(p, "/api/v1/actions/")
}

// isAgentRequest tells the requests of machines' agents.
func isAgentRequest(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/api/v1/agent/")
}
