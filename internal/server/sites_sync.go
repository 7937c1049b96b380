package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/mirror"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/versionset"
)

// Version set sync: a manager keeps a site's content packs at the versions
// of a VersionSet (docs/sites.md, "Version sets"). One loop per site,
// level-triggered: it compares the set and the manager's pack library with
// the site's packs as mirrored, and pushes what differs with the
// management credential (POST /api/v1/content on the site). It runs when
// the set, the library or the site's sync settings change (the manager's
// own event stream), when the site's packs change in the mirror, and when
// the mirror connects again; the result of a push comes back through the
// mirror like every change of the site. The status is computed, never
// stored.

const (
	// syncPushSettle is how long a push is trusted to be on its way to
	// the mirror before it may be pushed again.
	syncPushSettle = 30 * time.Second
	// syncRetryMin and syncRetryMax bound the wait before a refused push
	// is tried again when nothing changed.
	syncRetryMin = 30 * time.Second
	syncRetryMax = 10 * time.Minute
	// syncAnswerWait is how long a sync settings change waits for the
	// loop to look at the site before answering.
	syncAnswerWait = 3 * time.Second
)

// siteSyncer keeps one site at its version set.
type siteSyncer struct {
	s      *Server
	name   string
	conn   *siteConn
	mirror *mirror.Mirror
	log    *slog.Logger
	poke   chan struct{}

	mu     sync.Mutex
	status *api.SiteSyncStatus
	// siteRev is the revision of the Site record (its settings) the last
	// comparison read; done is closed (and replaced) after each.
	siteRev int64
	done    chan struct{}

	// The loop's own state.
	inflight map[string]inflightPush
	refused  map[string]*refusedPush
}

// inflightPush is a push whose result the mirror has not shown yet.
type inflightPush struct {
	digest string
	rev    int64 // the site's revision after the push
	until  time.Time
}

// refusedPush is a push the site refused; key says what was pushed over
// what, so that a change on either side retries at once.
type refusedPush struct {
	key     string
	err     string
	retryAt time.Time
	backoff time.Duration
}

func newSiteSyncer(s *Server, name string, conn *siteConn, m *mirror.Mirror) *siteSyncer {
	return &siteSyncer{
		s: s, name: name, conn: conn, mirror: m, log: s.log.With("site", name),
		poke: make(chan struct{}, 1), done: make(chan struct{}),
		inflight: map[string]inflightPush{}, refused: map[string]*refusedPush{},
	}
}

// Poke asks the loop to compare again.
func (y *siteSyncer) Poke() {
	select {
	case y.poke <- struct{}{}:
	default:
	}
}

// Status is the last comparison (nil when the site has no version set).
func (y *siteSyncer) Status() *api.SiteSyncStatus {
	y.mu.Lock()
	defer y.mu.Unlock()
	if y.status == nil {
		return nil
	}
	st := *y.status
	return &st
}

// compared returns the revision of the site's settings the last
// comparison read, and a channel closed at the next comparison.
func (y *siteSyncer) compared() (int64, <-chan struct{}) {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.siteRev, y.done
}

func (y *siteSyncer) setStatus(st *api.SiteSyncStatus, siteRev int64) {
	y.mu.Lock()
	defer y.mu.Unlock()
	y.status = st
	y.siteRev = siteRev
	close(y.done)
	y.done = make(chan struct{})
}

// waitCompared waits until a comparison has read the site's settings at
// revision rev or later and its pushes have reached the mirror, or until
// limit.
func (y *siteSyncer) waitCompared(ctx context.Context, rev int64, limit time.Duration) {
	deadline := time.After(limit)
	for {
		seen, done := y.compared()
		if seen >= rev && !syncPending(y.Status()) {
			return
		}
		select {
		case <-done:
		case <-deadline:
			return
		case <-ctx.Done():
			return
		}
	}
}

// pendingAction is the action of a pushed difference the mirror does not
// show yet.
const pendingAction = "pushed, waiting for the mirror"

// syncPending reports whether a push has not reached the mirror yet.
func syncPending(st *api.SiteSyncStatus) bool {
	if st == nil {
		return false
	}
	for _, d := range st.Differences {
		if d.Action == pendingAction {
			return true
		}
	}
	return false
}

// fingerprint is what of the mirror's state the comparison depends on.
type syncFingerprint struct {
	connected bool
	packsRev  int64
	relists   int64
	version   string
}

func (y *siteSyncer) fingerprint() syncFingerprint {
	st := y.mirror.Status()
	return syncFingerprint{connected: st.Connected, packsRev: y.mirror.KindRevision(api.KindContentPack), relists: st.Relists, version: st.Version}
}

// run compares and pushes until ctx ends.
func (y *siteSyncer) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		// Taken before comparing: a change while it runs (the mirror
		// showing a push just made) brings the loop straight back.
		last := y.fingerprint()
		next := y.evaluate(ctx)
		timer.Stop()
		if next > 0 {
			timer.Reset(next)
		}
	wait:
		for {
			changed := y.mirror.Changed()
			if y.fingerprint() != last {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-y.poke:
				break wait
			case <-timer.C:
				break wait
			case <-changed:
			}
		}
	}
}

// sitePacks reads the site's installed packs from the mirror.
func (y *siteSyncer) sitePacks() ([]versionset.Installed, error) {
	objs, err := y.mirror.List(api.KindContentPack)
	if err != nil {
		return nil, err
	}
	out := make([]versionset.Installed, 0, len(objs))
	for _, o := range objs {
		var head struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			Digest  string `json:"digest"`
		}
		if err := json.Unmarshal(o.JSON, &head); err != nil {
			return nil, fmt.Errorf("mirrored ContentPack %q: %w", o.Name, err)
		}
		out = append(out, versionset.Installed{Name: head.Name, Version: head.Version, Digest: head.Digest})
	}
	return out, nil
}

// evaluate compares the site with its set, pushes what differs when sync
// is enabled and the site is connected, and records the status. It
// returns when to look again without a change (0: only on a change).
func (y *siteSyncer) evaluate(ctx context.Context) time.Duration {
	if ctx.Err() != nil {
		return 0
	}
	now := time.Now().UTC()
	var site api.Site
	if err := getObj(ctx, y.s.st, api.KindSite, y.name, &site); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			y.log.Error("sync: cannot read the site", "err", err)
		}
		y.setStatus(nil, 0)
		return 0
	}
	if site.Sync == nil || site.Sync.VersionSet == "" {
		clear(y.inflight)
		clear(y.refused)
		y.setStatus(nil, site.Revision)
		return 0
	}
	cfg := *site.Sync
	st := &api.SiteSyncStatus{VersionSet: cfg.VersionSet, Enabled: cfg.Enabled, CheckedAt: &now}
	if prev := y.Status(); prev != nil {
		st.LastPush, st.LastPushAt = prev.LastPush, prev.LastPushAt
	}
	fail := func(state, format string, args ...any) time.Duration {
		st.State, st.Message = state, fmt.Sprintf(format, args...)
		y.setStatus(st, site.Revision)
		return 0
	}
	var vs api.VersionSet
	err := getObj(ctx, y.s.st, api.KindVersionSet, cfg.VersionSet, &vs)
	vsRev := vs.Revision
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fail(api.SyncFailed, "version set %q not found on the manager: apply it again, or give the site another (drover sites sync %s --version-set NAME)", cfg.VersionSet, y.name)
		}
		fail(api.SyncFailed, "reading version set %q: %v", cfg.VersionSet, err)
		return syncRetryMin
	}
	lib, byKey, err := y.s.library(ctx)
	if err != nil {
		fail(api.SyncFailed, "reading the manager's pack library: %v", err)
		return syncRetryMin
	}
	mst := y.mirror.Status()
	if mst.Relists == 0 {
		return fail(api.SyncUnknown, "the site has not been listed yet (%s); it is compared once the mirror holds it", dashIfEmpty(mst.Error, "connecting"))
	}
	sitePacksRev := y.mirror.KindRevision(api.KindContentPack)
	installed, err := y.sitePacks()
	if err != nil {
		fail(api.SyncFailed, "reading the mirror: %v", err)
		return syncRetryMin
	}
	res := versionset.Compare(&vs, lib, installed, mst.Version)
	st.Unmanaged = res.Unmanaged

	if !mst.Connected {
		for i := range res.Packs {
			if d := res.Packs[i].Difference; d != nil && d.Error == "" {
				d.Action = "synced when the site is back"
			}
		}
		st.Differences = res.Differences()
		reason := dashIfEmpty(mst.Error, "disconnected")
		return fail(api.SyncUnknown, "the site is not connected (%s); what differs is as last mirrored, and the site is synced when it is back", reason)
	}

	// Pushes the mirror has shown (or that took too long) are done.
	for name, inf := range y.inflight {
		if mst.Cursor >= inf.rev || now.After(inf.until) {
			delete(y.inflight, name)
		}
	}
	inSet := map[string]bool{}
	var next time.Duration
	later := func(t time.Time) {
		if d := t.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	var problems []string
	pending, unreachable := false, false
	for i := range res.Packs {
		p := &res.Packs[i]
		inSet[p.Name] = true
		d := p.Difference
		if d == nil {
			delete(y.inflight, p.Name)
			delete(y.refused, p.Name)
			continue
		}
		switch {
		case p.Action == versionset.ActionCannot:
			if cfg.Enabled {
				problems = append(problems, "pack "+p.Name+": "+d.Error)
			}
			continue
		case !cfg.Enabled:
			d.Action = "none: sync is disabled"
			continue
		case unreachable:
			d.Action = "not pushed: the site did not answer"
			continue
		}
		// A refusal depends on what is pushed and on the site's other
		// packs (requirements, clashes): a change of either retries.
		key := fmt.Sprintf("%s %s over site packs at %d, set at %d", p.Name, p.Digest, sitePacksRev, vsRev)
		if inf, ok := y.inflight[p.Name]; ok && inf.digest == p.Digest {
			d.Action = pendingAction
			pending = true
			later(inf.until)
			continue
		}
		if r := y.refused[p.Name]; r != nil && r.key == key && now.Before(r.retryAt) {
			d.Action = "push refused; tried again at " + r.retryAt.Format(time.RFC3339) + " or when the site or the set changes"
			d.Error = r.err
			problems = append(problems, "pack "+p.Name+": "+r.err)
			later(r.retryAt)
			continue
		}
		pushed, err := y.push(ctx, byKey[api.PackVersionName(p.Name, p.Version)])
		var ae *api.Error
		switch {
		case err == nil:
			delete(y.refused, p.Name)
			y.inflight[p.Name] = inflightPush{digest: p.Digest, rev: pushed.Revision, until: now.Add(syncPushSettle)}
			later(now.Add(syncPushSettle))
			d.Action = pendingAction
			pending = true
			at := time.Now().UTC()
			st.LastPush, st.LastPushAt = p.Name+" "+p.Version, &at
			y.log.Info("sync: pushed a content pack", "pack", p.Name, "version", p.Version, "siteHad", d.Site, "revision", pushed.Revision)
		case errors.As(err, &ae):
			r := y.refused[p.Name]
			if r == nil || r.key != key {
				r = &refusedPush{key: key, backoff: syncRetryMin}
				y.refused[p.Name] = r
			} else {
				r.backoff = min(2*r.backoff, syncRetryMax)
			}
			r.err = fmt.Sprintf("the site refused %s %s: %s", p.Name, p.Version, ae.Message)
			r.retryAt = now.Add(r.backoff)
			d.Action = "push refused; tried again at " + r.retryAt.Format(time.RFC3339) + " or when the site or the set changes"
			d.Error = r.err
			problems = append(problems, "pack "+p.Name+": "+r.err)
			later(r.retryAt)
			y.log.Warn("sync: the site refused a content pack", "pack", p.Name, "version", p.Version, "err", ae.Message)
		default:
			// The link, not the site: the mirror notices too, and the
			// reconnect brings the loop back.
			unreachable = true
			d.Action = "not pushed: the site did not answer"
			d.Error = siteError(y.name, y.conn.base.Endpoint, err).Message
			later(now.Add(syncRetryMin))
		}
	}
	for name := range y.inflight {
		if !inSet[name] {
			delete(y.inflight, name)
		}
	}
	for name := range y.refused {
		if !inSet[name] {
			delete(y.refused, name)
		}
	}
	st.Differences = res.Differences()
	switch {
	case unreachable:
		st.State = api.SyncUnknown
		st.Message = "the site did not answer a push; it is synced when it answers again"
	case len(problems) > 0:
		st.State = api.SyncFailed
		st.Message = strings.Join(problems, "\n")
	case len(st.Differences) == 0:
		st.State = api.SyncInSync
		if !cfg.Enabled {
			st.Message = "sync is disabled (nothing differs)"
		}
	default:
		st.State = api.SyncDrifted
		switch {
		case !cfg.Enabled:
			st.Message = fmt.Sprintf("sync is disabled: drover sites sync %s --enable pushes what differs", y.name)
		case pending:
			st.Message = "packs pushed; waiting for the site's changes to reach the mirror"
		case res.Drover != nil:
			st.Message = "the packs are in sync, the drover version is not: packs can be pushed, binaries cannot (upgrade drover on the site)"
		}
	}
	y.setStatus(st, site.Revision)
	return next
}

func dashIfEmpty(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

// push installs a pack from the library on the site.
func (y *siteSyncer) push(ctx context.Context, pack any) (*api.ContentPushResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, siteCallTimeout)
	defer cancel()
	var resp api.ContentPushResponse
	err := y.conn.call(ctx, func(c *api.Client) error {
		return c.Do(ctx, http.MethodPost, "/api/v1/content", pack, &resp)
	})
	return &resp, err
}

// watchSync pokes every site's sync loop when what they compare with
// changes on this endpoint: version sets, the pack library, installed
// packs, the sites' settings.
func (ss *siteSet) watchSync(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := ss.s.st.Revision(ctx)
		var ch <-chan store.Event
		if err == nil {
			ch, err = ss.s.st.Watch(ctx, rev)
		}
		if err != nil {
			if ctx.Err() == nil {
				ss.s.log.Warn("sync: cannot watch the store; retrying", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		// Anything may have changed while not watching.
		ss.pokeSync()
		for ev := range ch {
			switch ev.Record.Kind {
			case api.KindVersionSet, api.KindPackVersion, api.KindContentPack, api.KindSite:
				ss.pokeSync()
			}
		}
	}
}

// pokeSync asks every site's sync loop to compare again.
func (ss *siteSet) pokeSync() {
	for _, run := range ss.all() {
		if run.sync != nil {
			run.sync.Poke()
		}
	}
}

// syncStatus is a site's sync status as the API shows it.
func (r *siteRun) syncStatus(site *api.Site) *api.SiteSyncStatus {
	if site.Sync == nil || site.Sync.VersionSet == "" {
		return nil
	}
	if r != nil && r.sync != nil {
		if st := r.sync.Status(); st != nil {
			return st
		}
	}
	msg := "not compared yet"
	if r != nil && r.err != nil {
		msg = "the site is not mirrored: " + r.err.Error()
	}
	return &api.SiteSyncStatus{VersionSet: site.Sync.VersionSet, Enabled: site.Sync.Enabled, State: api.SyncUnknown, Message: msg}
}

func (s *Server) handleSiteSync(w http.ResponseWriter, r *http.Request, p *principal) {
	if p.Role != api.RoleAdmin {
		writeError(w, forbidden(p, "change how sites are synced"))
		return
	}
	var req api.SiteSyncRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	site, err := s.setSiteSync(r.Context(), p, r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	// Answer with the site compared under its new settings, when that
	// is quick (a push to a slow site can take longer).
	if run := s.sites.get(site.Name); run != nil && run.sync != nil {
		run.sync.Poke()
		run.sync.waitCompared(r.Context(), site.Revision, syncAnswerWait)
	}
	writeJSON(w, http.StatusOK, s.siteView(site))
}

// setSiteSync changes a site's version set and sync switch.
func (s *Server) setSiteSync(ctx context.Context, p *principal, name string, req api.SiteSyncRequest) (*api.Site, error) {
	if req.Clear && (req.VersionSet != nil || req.Enabled != nil) {
		return nil, badRequest("clear forgets the site's version set and disables sync: give it alone")
	}
	if req.VersionSet == nil && req.Enabled == nil && !req.Clear {
		return nil, badRequest("nothing to change: give versionSet, enabled or clear")
	}
	s.sites.addMu.Lock()
	defer s.sites.addMu.Unlock()
	rec, err := s.st.Get(ctx, api.KindSite, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, apiError(http.StatusNotFound, "not_found", "site %q not found (drover sites list shows the sites)", name)
	}
	if err != nil {
		return nil, err
	}
	var site api.Site
	if err := model.Decode(rec, &site); err != nil {
		return nil, err
	}
	cfg := api.SiteSync{}
	if site.Sync != nil {
		cfg = *site.Sync
	}
	if req.Clear {
		cfg = api.SiteSync{}
	}
	if req.VersionSet != nil {
		vsName := *req.VersionSet
		if err := model.ValidateName(vsName); err != nil {
			return nil, badRequest("version set: %v", err)
		}
		if _, err := s.st.Get(ctx, api.KindVersionSet, vsName); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, apiError(http.StatusNotFound, "not_found", "version set %q not found: apply it first (kind: VersionSet; drover get versionsets lists them)%s", vsName, s.versionSetNames(ctx))
			}
			return nil, err
		}
		cfg.VersionSet = vsName
	}
	if req.Enabled != nil {
		if *req.Enabled && cfg.VersionSet == "" {
			return nil, badRequest("site %q has no version set: give one with --version-set NAME to enable sync", name)
		}
		cfg.Enabled = *req.Enabled
	}
	detail := "no version set"
	site.Sync = nil
	if cfg.VersionSet != "" {
		site.Sync = &cfg
		detail = "version set " + cfg.VersionSet + ", sync disabled"
		if cfg.Enabled {
			detail = "version set " + cfg.VersionSet + ", sync enabled"
		}
	}
	lbls, data, err := model.Encode(&site)
	if err != nil {
		return nil, err
	}
	recs, _, err := s.st.Txn(ctx, []store.Op{
		{Type: store.OpUpdate, Kind: api.KindSite, Name: name, Labels: lbls, Data: data, ExpectRevision: rec.Revision},
		s.auditOp(p, "sync", "Site/"+name, detail, time.Now().UTC(), 1),
	})
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, apiError(http.StatusConflict, "conflict", "site %q was changed meanwhile; nothing was written, try again", name)
		}
		return nil, err
	}
	site.Revision = recs[0].Revision
	s.log.Info("site sync settings changed", "site", name, "settings", detail)
	return &site, nil
}

// versionSetNames lists the version sets for an error message.
func (s *Server) versionSetNames(ctx context.Context) string {
	recs, _, err := s.st.List(ctx, api.KindVersionSet, store.ListOptions{})
	if err != nil || len(recs) == 0 {
		return ""
	}
	names := make([]string, 0, len(recs))
	for _, r := range recs {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	return "; this manager has " + strings.Join(names, ", ")
}

// writeSyncMetrics writes each synced site's state: 1 for its state, 0 for
// the others (sites without a version set are left out).
func writeSyncMetrics(w io.Writer, runs []*siteRun) {
	header := false
	for _, run := range runs {
		if run.sync == nil {
			continue
		}
		st := run.sync.Status()
		if st == nil {
			continue
		}
		if !header {
			fmt.Fprint(w, "# HELP drover_site_sync_state 1 for the site's version set sync state (in-sync, drifted, failed, unknown).\n# TYPE drover_site_sync_state gauge\n")
			header = true
		}
		for _, state := range []string{api.SyncInSync, api.SyncDrifted, api.SyncFailed, api.SyncUnknown} {
			v := 0
			if st.State == state {
				v = 1
			}
			fmt.Fprintf(w, "drover_site_sync_state{site=%q,state=%q} %d\n", run.name, state, v)
		}
	}
}
