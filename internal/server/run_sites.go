package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/adhoc"
	"github.com/drover-project/drover/internal/noderange"
)

// commandSites is what a manager needs of its registered sites to run
// commands on their machines.
type commandSites interface {
	// universe holds this endpoint's machines (site "") and each site's.
	universe(ctx context.Context) (noderange.Universe, error)
	// call runs f with a client holding the management credential of site.
	call(ctx context.Context, site string, f func(*api.Client) error) error
	// passThrough tells a range for a nested manager (region1%east%n1):
	// the site it goes to and the range that site resolves.
	passThrough(expr string) (site, rest string, ok bool)
}

// commandSites gives the sites a run may reach from this endpoint; nil on
// an endpoint without sites.
func (s *Server) commandSites() commandSites {
	if s.cmdSites != nil {
		return s.cmdSites
	}
	if s.hasSites() {
		return managerSites{s}
	}
	return nil
}

// managerSites are the sites registered with this endpoint, reached with
// the credential kept for each and resolved through their mirrors.
type managerSites struct{ s *Server }

func (m managerSites) universe(ctx context.Context) (noderange.Universe, error) {
	return m.s.siteUniverse(ctx)
}

func (m managerSites) call(ctx context.Context, site string, f func(*api.Client) error) error {
	run := m.s.sites.get(site)
	if run == nil || run.conn == nil {
		return fmt.Errorf("site %q cannot be reached from this manager (not mirrored)", site)
	}
	return run.conn.call(ctx, f)
}

func (m managerSites) passThrough(expr string) (string, string, bool) {
	site, rest, ok := nestedRange(expr)
	return site, rest, ok && m.s.sites.get(site) != nil
}

// runPart is the machines of one site that a run goes to: names, or for
// a nested manager the range expr it resolves itself.
type runPart struct {
	site  string // "" for this endpoint's own
	names []string
	expr  string
}

// planRun resolves a node range into parts by site (one part, this
// endpoint's, without sites) and counts the machines (0 when a nested
// manager resolves them).
func (s *Server) planRun(ctx context.Context, expr string) ([]runPart, int, error) {
	sites := s.commandSites()
	if sites == nil {
		names, err := s.resolveNodes(ctx, expr)
		if err != nil {
			return nil, 0, err
		}
		return []runPart{{names: names}}, len(names), nil
	}
	if site, rest, ok := sites.passThrough(expr); ok {
		return []runPart{{site: site, expr: rest}}, 0, nil
	}
	u, err := sites.universe(ctx)
	if err != nil {
		return nil, 0, err
	}
	set, err := noderange.Resolve(expr, u)
	if err != nil {
		return nil, 0, badRequest("node range %q: %s", expr, strings.TrimPrefix(err.Error(), "noderange: "))
	}
	if set.Len() == 0 {
		return nil, 0, badRequest("node range %q selects no machine", expr)
	}
	var parts []runPart
	for _, site := range set.Sites() {
		names := set.Names(site)
		parts = append(parts, runPart{site: site, names: names, expr: foldNames(names)})
	}
	return parts, set.Len(), nil
}

// remoteRun runs the request on a site's nodes with a client for it.
type remoteRun func(ctx context.Context, c *api.Client, nodes string, fn func(api.RunLine) error) error

var (
	// siteStartTimeout bounds how long a site may take to start its
	// answer before it is reported unreachable.
	siteStartTimeout = 15 * time.Second
	// siteGrace is how long past the command's timeout a site's answer
	// may take before the manager gives up on it.
	siteGrace = 45 * time.Second
)

// ErrSiteGone marks nodes of a site whose answer was cut after it began:
// their command may have run.
const errSiteGone = "site gone"

// streamRun runs spec on every part at once, this endpoint's machines
// through the command hub and each site's through remote, and writes all
// results in one stream as they come, each with its site. Ending the
// request cancels everything not yet run.
func (s *Server) streamRun(w http.ResponseWriter, r *http.Request, parts []runPart, spec adhoc.Spec, fanout int, remote remoteRun) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	lines := make(chan api.RunLine, 256)
	emit := func(l api.RunLine) bool {
		select {
		case lines <- l:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var wg sync.WaitGroup
	for _, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if part.site == "" {
				s.runLocal(ctx, part.names, spec, fanout, emit)
			} else {
				s.runRemote(ctx, part, spec.Timeout, remote, emit)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(lines)
	}()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	count := 0
	for l := range lines {
		if l.Type == api.RunLineResult {
			count++
		}
		_ = enc.Encode(l)
		// Lines that came together go out in one write.
		if len(lines) == 0 && (bw.Flush() != nil || rc.Flush() != nil) {
			cancel()
			for range lines {
			}
			return
		}
	}
	if ctx.Err() != nil {
		return
	}
	_ = enc.Encode(api.RunLine{Type: api.RunLineEnd, Count: count})
	_ = bw.Flush()
}

func foldNames(names []string) string {
	set := noderange.NewNodeSet()
	for _, n := range names {
		set.Add(noderange.Node{Name: n})
	}
	return set.Fold()
}

// runLocal runs spec on this endpoint's machines through the hub.
func (s *Server) runLocal(ctx context.Context, names []string, spec adhoc.Spec, fanout int, emit func(api.RunLine) bool) {
	b := s.cmds.Start(names, spec, fanout)
	if !emit(api.RunLine{Type: api.RunLineStart, Nodes: foldNames(names), Count: len(names)}) {
		b.Cancel()
		return
	}
	for {
		select {
		case l, ok := <-b.Results():
			if !ok {
				return
			}
			if !emit(l) {
				b.Cancel()
				return
			}
		case <-ctx.Done():
			b.Cancel()
			return
		}
	}
}

// runRemote runs the request on a site's machines and passes its lines on
// with the site's name. A site that does not answer is reported
// unreachable on each of its nodes; nodes of a site whose answer was cut
// before their result are reported "site gone".
func (s *Server) runRemote(ctx context.Context, part runPart, timeout time.Duration, remote remoteRun, emit func(api.RunLine) bool) {
	sctx, cancel := context.WithTimeout(ctx, siteStartTimeout+timeout+siteGrace)
	defer cancel()
	var started atomic.Bool
	startTimer := time.AfterFunc(siteStartTimeout, func() {
		if !started.Load() {
			cancel()
		}
	})
	defer startTimer.Stop()
	// The nodes the site named and those it answered for; a nested
	// manager names its own sites' nodes in its start lines.
	expected, seen := noderange.NewNodeSet(), noderange.NewNodeSet()
	for _, n := range part.names {
		expected.Add(noderange.Node{Site: part.site, Name: n})
	}
	err := s.commandSites().call(sctx, part.site, func(c *api.Client) error {
		return remote(sctx, c, part.expr, func(l api.RunLine) error {
			l.Site = joinSites(part.site, l.Site)
			switch l.Type {
			case api.RunLineStart:
				started.Store(true)
				if names, err := noderange.Expand(l.Nodes); err == nil && part.names == nil {
					for _, n := range names {
						expected.Add(noderange.Node{Site: l.Site, Name: n})
					}
				}
			case api.RunLineResult:
				seen.Add(noderange.Node{Site: l.Site, Name: l.Node})
			case api.RunLineEnd:
				return nil
			}
			if !emit(l) {
				return ctx.Err()
			}
			return nil
		})
	})
	if err == nil || ctx.Err() != nil {
		return
	}
	failed := api.RunLine{Type: api.RunLineResult, Site: part.site}
	switch {
	case started.Load():
		failed.Error, failed.Detail = errSiteGone, fmt.Sprintf("the answer of site %s ended before this node's result: %v", part.site, siteErr(err, sctx))
	default:
		var ae *api.Error
		if errors.As(err, &ae) {
			failed.Error, failed.Detail = api.ErrFailed, fmt.Sprintf("site %s refused the request: %s", part.site, ae.Message)
		} else {
			failed.Error, failed.Detail = api.ErrUnreachable, fmt.Sprintf("site %s cannot be reached: %v", part.site, siteErr(err, sctx))
		}
		if !emit(api.RunLine{Type: api.RunLineStart, Site: part.site, Nodes: part.expr, Count: len(part.names)}) {
			return
		}
	}
	missing := expected.Difference(seen).Nodes()
	if len(missing) == 0 && seen.Len() == 0 {
		// A nested manager's range whose nodes are unknown here.
		missing = []noderange.Node{{Site: part.site, Name: part.expr}}
	}
	for _, n := range missing {
		l := failed
		l.Site, l.Node = n.Site, n.Name
		if !emit(l) {
			return
		}
	}
}

// joinSites names a nested manager's site as seen from here.
func joinSites(site, inner string) string {
	if inner == "" {
		return site
	}
	return site + "%" + inner
}

// siteErr says why a site's request ended.
func siteErr(err error, ctx context.Context) error {
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "context canceled")) {
		return errors.New("no answer in time")
	}
	if err == nil {
		return errors.New("its answer ended early")
	}
	return err
}
