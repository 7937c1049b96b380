package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/mirror"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/tables"
)

// siteCallTimeout bounds each call the manager makes to a site on behalf
// of a request (registration, removal, forwarded writes and actions).
const siteCallTimeout = 30 * time.Second

// ensureEndpointID returns the endpoint's stable id, making one on first
// start (DATA_DIR/endpoint-id). A manager names its user on each site
// after it, so that two managers of one site never share a credential.
func ensureEndpointID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "endpoint-id")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if len(id) != 16 {
			return "", fmt.Errorf("%s: want 16 hex digits, found %q (restore it from backup or delete it to make a new id)", path, id)
		}
		if _, err := hex.DecodeString(id); err != nil {
			return "", fmt.Errorf("%s: want 16 hex digits, found %q (restore it from backup or delete it to make a new id)", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return id, nil
}

// EndpointID is this endpoint's stable id.
func (s *Server) EndpointID() string { return s.endpointID }

func (s *Server) handleEndpointInfo(w http.ResponseWriter, r *http.Request, _ *principal) {
	rev, err := s.st.Revision(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	oldest, err := s.st.OldestRevision(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.EndpointInfo{ID: s.endpointID, Revision: rev, OldestRevision: oldest, Version: s.cfg.Version})
}

// siteConn is the manager's authenticated way into one site: the site's
// CA, its management user and that user's password (opened in memory
// only), and the current session token.
type siteConn struct {
	name, user, password string
	base                 *api.Client

	mu    sync.Mutex
	token string
}

func newSiteConn(site *api.Site, password, token string) (*siteConn, error) {
	base, err := api.NewClient(site.URL, []byte(site.CACert), "")
	if err != nil {
		return nil, fmt.Errorf("site %q: %w", site.Name, err)
	}
	if tr, ok := base.HTTP.Transport.(*http.Transport); ok && tr.HTTP2 != nil {
		// Requests share one HTTP/2 connection per site: ping it when it
		// goes quiet, so a link that silently died is dropped, not reused.
		tr.HTTP2.SendPingTimeout = 30 * time.Second
		tr.HTTP2.PingTimeout = 15 * time.Second
	}
	return &siteConn{name: site.Name, user: site.ManagementUser, password: password, base: base, token: token}, nil
}

// Client returns a client with a session on the site, logging in when
// there is none or renew says the last one was refused.
func (c *siteConn) Client(ctx context.Context, renew bool) (*api.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && !renew {
		return c.base.WithToken(c.token), nil
	}
	lr, err := c.base.Login(ctx, c.user, c.password, "24h")
	if err != nil {
		return nil, fmt.Errorf("log in to the site as %s: %w", c.user, err)
	}
	c.token = lr.Token
	return c.base.WithToken(c.token), nil
}

// call runs f with a session on the site, logging in again once if the
// site refuses the session.
func (c *siteConn) call(ctx context.Context, f func(*api.Client) error) error {
	cl, err := c.Client(ctx, false)
	if err != nil {
		return err
	}
	err = f(cl)
	if !api.IsStatus(err, http.StatusUnauthorized) {
		return err
	}
	if cl, err = c.Client(ctx, true); err != nil {
		return err
	}
	return f(cl)
}

// siteSet runs a mirror per registered site.
type siteSet struct {
	s *Server
	// addMu serializes registrations and removals.
	addMu sync.Mutex

	mu   sync.RWMutex
	ctx  context.Context // Serve's; nil before it
	runs map[string]*siteRun
}

type siteRun struct {
	name   string
	conn   *siteConn
	mirror *mirror.Mirror
	// sync keeps the site at its version set (sites_sync.go).
	sync *siteSyncer
	// err says why the site has no mirror (its credential cannot be
	// opened, its mirror file cannot be opened).
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

func newSiteSet(s *Server) *siteSet { return &siteSet{s: s, runs: map[string]*siteRun{}} }

func (ss *siteSet) mirrorPath(name string) string {
	return filepath.Join(ss.s.cfg.DataDir, "mirror", name+".db")
}

// run starts a mirror for every stored site and stops them all when ctx
// ends.
func (ss *siteSet) run(ctx context.Context, wg *sync.WaitGroup) {
	recs, _, err := ss.s.st.List(ctx, api.KindSite, store.ListOptions{})
	if err != nil {
		ss.s.log.Error("cannot list sites; no site is mirrored", "err", err)
	}
	ss.mu.Lock()
	ss.ctx = ctx
	for _, rec := range recs {
		var site api.Site
		if err := model.Decode(rec, &site); err != nil {
			ss.s.log.Error("cannot read site", "site", rec.Name, "err", err)
			continue
		}
		ss.startLocked(&site, "")
	}
	ss.mu.Unlock()
	wg.Add(2)
	go func() {
		defer wg.Done()
		ss.watchSync(ctx)
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		ss.mu.Lock()
		defer ss.mu.Unlock()
		for name := range ss.runs {
			ss.stopLocked(name)
		}
	}()
}

// startLocked opens a site's mirror and starts following the site.
func (ss *siteSet) startLocked(site *api.Site, token string) {
	run := &siteRun{name: site.Name, done: make(chan struct{})}
	ss.runs[site.Name] = run
	password, err := ss.s.box.Open(site.Credential)
	if err != nil {
		run.err = fmt.Errorf("cannot open the stored credential: %w", err)
	} else if run.conn, err = newSiteConn(site, string(password), token); err != nil {
		run.err = err
	} else if err = os.MkdirAll(filepath.Dir(ss.mirrorPath(site.Name)), 0o700); err != nil {
		run.err = err
	} else {
		run.mirror, run.err = mirror.Open(mirror.Config{Name: site.Name, Path: ss.mirrorPath(site.Name), Dialer: run.conn, Logger: ss.s.log})
	}
	if run.err != nil || ss.ctx == nil {
		if run.err != nil {
			ss.s.log.Error("site is not mirrored", "site", site.Name, "err", run.err)
		}
		close(run.done)
		return
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	run.cancel = cancel
	run.sync = newSiteSyncer(ss.s, site.Name, run.conn, run.mirror)
	go func() {
		defer close(run.done)
		syncDone := make(chan struct{})
		go func() {
			defer close(syncDone)
			run.sync.run(ctx)
		}()
		run.mirror.Run(ctx)
		<-syncDone
	}()
}

// stopLocked stops a site's mirror and closes its file.
func (ss *siteSet) stopLocked(name string) {
	run := ss.runs[name]
	if run == nil {
		return
	}
	if run.cancel != nil {
		run.cancel()
	}
	<-run.done
	if run.mirror != nil {
		_ = run.mirror.Close()
	}
	delete(ss.runs, name)
}

// get returns a site's run, or nil.
func (ss *siteSet) get(name string) *siteRun {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
	return ss.runs[name]
}

// all returns the runs sorted by site name.
func (ss *siteSet) all() []*siteRun {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
	out := make([]*siteRun, 0, len(ss.runs))
	for _, r := range ss.runs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// status is a site's live status.
func (r *siteRun) status() api.SiteStatus {
	if r == nil {
		return api.SiteStatus{Error: "not mirrored (the server is starting or stopping)"}
	}
	if r.mirror == nil {
		return api.SiteStatus{Error: r.err.Error()}
	}
	return r.mirror.Status()
}

// siteError explains a failed call to a site: TLS trouble, an unreachable
// site, or the site's own refusal.
func siteError(name, siteURL string, err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return apiError(http.StatusBadGateway, "site_error", "site %q answered: %s", name, ae.Message)
	}
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &ua), errors.As(err, &cv):
		return apiError(http.StatusBadGateway, "site_tls", "site %q (%s): TLS: its certificate is not signed by the CA certificate given (give the site's own tls/ca.crt with --ca-cert): %v", name, siteURL, rootCause(err))
	case errors.As(err, &he):
		return apiError(http.StatusBadGateway, "site_tls", "site %q (%s): TLS: its certificate is not valid for this host name (use a name or address the certificate names, or add it with the site's --tls-san): %v", name, siteURL, rootCause(err))
	case errors.As(err, &ci):
		return apiError(http.StatusBadGateway, "site_tls", "site %q (%s): TLS: its certificate is not valid: %v", name, siteURL, rootCause(err))
	case errors.As(err, &rh):
		return apiError(http.StatusBadGateway, "site_tls", "site %q (%s) does not speak TLS there (is the URL the site's API address?)", name, siteURL)
	case errors.Is(err, context.DeadlineExceeded):
		return apiError(http.StatusBadGateway, "site_unreachable", "site %q (%s) is unreachable: no answer in %s", name, siteURL, siteCallTimeout)
	}
	return apiError(http.StatusBadGateway, "site_unreachable", "site %q (%s) is unreachable: %v", name, siteURL, rootCause(err))
}

// rootCause drops the URL-and-method wrapping of transport errors.
func rootCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	return err
}

func randomSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// checkSiteURL checks a site's URL and returns it as scheme://host[:port].
func checkSiteURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", badRequest("url %q: give the site's API address as https://HOST:PORT (for example https://east.example.lan:8443)", raw)
	}
	return "https://" + u.Host, nil
}

func (s *Server) handleAddSite(w http.ResponseWriter, r *http.Request, p *principal) {
	if p.Role != api.RoleAdmin {
		writeError(w, forbidden(p, "add sites"))
		return
	}
	var req api.SiteAddRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	site, err := s.addSite(r.Context(), p, req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, site)
}

// addSite registers a site: it logs in with the admin's credentials once,
// creates this manager's user on the site, keeps only that user's
// credential (sealed), and starts mirroring. Whatever fails, nothing is
// left behind: the user made on the site is deleted again.
func (s *Server) addSite(ctx context.Context, p *principal, req api.SiteAddRequest) (*api.Site, error) {
	if err := model.ValidateName(req.Name); err != nil {
		return nil, badRequest("site name: %v", err)
	}
	if req.Name == "all" {
		return nil, badRequest(`site name "all" is the node range keyword for every site (all%%n1): choose another name`)
	}
	siteURL, err := checkSiteURL(req.URL)
	if err != nil {
		return nil, err
	}
	if !x509.NewCertPool().AppendCertsFromPEM([]byte(req.CACert)) {
		return nil, badRequest("caCert: no PEM certificate in it (give the site's tls/ca.crt)")
	}
	if req.Username == "" || req.Password == "" {
		return nil, badRequest("username and password of an admin of the site are required (they are used once and not kept)")
	}
	s.sites.addMu.Lock()
	defer s.sites.addMu.Unlock()
	others, _, err := s.st.List(ctx, api.KindSite, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, rec := range others {
		if rec.Name == req.Name {
			var old api.Site
			_ = model.Decode(rec, &old)
			return nil, apiError(http.StatusConflict, "exists", "site %q exists already (%s): remove it first with `drover sites remove %s`", req.Name, old.URL, req.Name)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, siteCallTimeout)
	defer cancel()
	base, err := api.NewClient(siteURL, []byte(req.CACert), "")
	if err != nil {
		return nil, badRequest("%v", err)
	}
	defer base.HTTP.CloseIdleConnections()
	login, err := base.Login(ctx, req.Username, req.Password, "10m")
	if err != nil {
		if api.IsStatus(err, http.StatusUnauthorized) {
			return nil, apiError(http.StatusBadRequest, "site_credentials", "site %q (%s) refused the admin credentials of %q: wrong username or password (nothing was changed)", req.Name, siteURL, req.Username)
		}
		return nil, siteError(req.Name, siteURL, err)
	}
	admin := base.WithToken(login.Token)
	// The admin's session ends with this request: only the management
	// user's credential is kept.
	defer func() {
		if _, id, _, err := auth.ParseToken(login.Token); err == nil {
			dctx, c := context.WithTimeout(context.Background(), 10*time.Second)
			defer c()
			if err := admin.Delete(dctx, "tokens", id); err != nil {
				s.log.Warn("could not end the admin's session on the site", "site", req.Name, "err", err)
			}
		}
	}()
	if login.Role != api.RoleAdmin {
		return nil, apiError(http.StatusBadRequest, "site_credentials", "user %q is %s on site %q; give the credentials of an admin of the site (the manager creates its own admin user there)", req.Username, login.Role, req.Name)
	}
	info, err := admin.EndpointInfo(ctx)
	if err != nil {
		return nil, siteError(req.Name, siteURL, fmt.Errorf("read its endpoint id: %w", err))
	}
	if info.ID == s.endpointID {
		return nil, badRequest("%s is this endpoint itself: a manager cannot be its own site", siteURL)
	}
	for _, rec := range others {
		var old api.Site
		if model.Decode(rec, &old) == nil && old.EndpointID == info.ID {
			return nil, apiError(http.StatusConflict, "exists", "that endpoint (%s) is registered already as site %q", siteURL, old.Name)
		}
	}

	user := "manager-" + s.endpointID
	secret, err := randomSecret()
	if err != nil {
		return nil, err
	}
	mu := &api.User{
		Meta: api.Meta{Kind: api.KindUser, Name: user, Labels: map[string]string{"drover.io/manager": s.endpointID},
			Description: fmt.Sprintf("the user of manager endpoint %s, which registered this site as %q", s.endpointID, req.Name)},
		Role:     api.RoleAdmin,
		Password: secret,
	}
	if _, err := admin.ApplyObjects(ctx, mu); err != nil {
		return nil, siteError(req.Name, siteURL, fmt.Errorf("create the management user %s: %w", user, err))
	}
	undo := func(cause error) error {
		dctx, c := context.WithTimeout(context.Background(), siteCallTimeout)
		defer c()
		if err := admin.Delete(dctx, "users", user); err != nil && !api.IsStatus(err, http.StatusNotFound) {
			s.log.Error("could not delete the management user again on the site; delete it there", "site", req.Name, "user", user, "err", err)
			return fmt.Errorf("%w (and deleting user %s on the site again failed: %v; delete it there with `drover delete user %s`)", cause, user, err, user)
		}
		return cause
	}
	mgmt, err := base.Login(ctx, user, secret, "24h")
	if err != nil {
		return nil, undo(siteError(req.Name, siteURL, fmt.Errorf("log in as the new management user %s: %w", user, err)))
	}
	sealed, err := s.box.Seal([]byte(secret))
	if err != nil {
		return nil, undo(err)
	}
	site := &api.Site{
		Meta:           api.Meta{Kind: api.KindSite, Name: req.Name},
		URL:            siteURL,
		CACert:         req.CACert,
		ManagementUser: user,
		Credential:     sealed,
		EndpointID:     info.ID,
		AddedAt:        time.Now().UTC(),
	}
	lbls, data, err := model.Encode(site)
	if err != nil {
		return nil, undo(err)
	}
	recs, _, err := s.st.Txn(ctx, []store.Op{
		{Type: store.OpCreate, Kind: api.KindSite, Name: site.Name, Labels: lbls, Data: data},
		s.auditOp(p, "created", "Site/"+site.Name, siteURL+" as user "+user, time.Now().UTC(), 0),
	})
	if err != nil {
		return nil, undo(fmt.Errorf("store the site: %w", err))
	}
	site.Revision, site.CreateRevision = recs[0].Revision, recs[0].CreateRevision
	s.sites.mu.Lock()
	s.sites.startLocked(site, mgmt.Token)
	s.sites.mu.Unlock()
	s.log.Info("site added", "site", site.Name, "url", siteURL, "user", user)
	return s.siteView(site), nil
}

// siteView is a site as the API shows it: the credential masked, the
// mirror's live status filled in.
func (s *Server) siteView(site *api.Site) *api.Site {
	out := *site
	if out.Credential != "" {
		out.Credential = strings.Trim(maskedValue, `"`)
	}
	run := s.sites.get(site.Name)
	out.Status = run.status()
	out.Status.Sync = run.syncStatus(site)
	return &out
}

func (s *Server) handleRemoveSite(w http.ResponseWriter, r *http.Request, p *principal) {
	if p.Role != api.RoleAdmin {
		writeError(w, forbidden(p, "remove sites"))
		return
	}
	name := r.PathValue("name")
	force := r.URL.Query().Get("force") != ""
	s.sites.addMu.Lock()
	defer s.sites.addMu.Unlock()
	var site api.Site
	if err := getObj(r.Context(), s.st, api.KindSite, name, &site); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, apiError(http.StatusNotFound, "not_found", "site %q not found (drover sites list shows the sites)", name))
			return
		}
		writeError(w, err)
		return
	}
	// The mirror stops first: deleting its user would end its stream.
	s.sites.mu.Lock()
	run := s.sites.runs[name]
	var conn *siteConn
	if run != nil {
		conn = run.conn
	}
	s.sites.stopLocked(name)
	s.sites.mu.Unlock()
	restart := func() {
		s.sites.mu.Lock()
		if s.sites.runs[name] == nil {
			s.sites.startLocked(&site, "")
		}
		s.sites.mu.Unlock()
	}
	resp := api.SiteRemoveResponse{Name: name}
	var err error
	if conn == nil {
		password, oerr := s.box.Open(site.Credential)
		if oerr != nil {
			err = fmt.Errorf("cannot open the stored credential: %w", oerr)
		} else {
			conn, err = newSiteConn(&site, string(password), "")
		}
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), siteCallTimeout)
		err = conn.call(ctx, func(c *api.Client) error {
			return c.Do(ctx, http.MethodDelete, "/api/v1/objects/users/"+url.PathEscape(site.ManagementUser)+"?self=1", nil, nil)
		})
		cancel()
		conn.base.HTTP.CloseIdleConnections()
	}
	switch {
	case err == nil:
		resp.UserDeleted = true
	case api.IsStatus(err, http.StatusUnauthorized), api.IsStatus(err, http.StatusNotFound):
		// The user is gone already, or no longer ours to use.
		resp.Warning = fmt.Sprintf("site %q no longer accepts user %s (deleted or changed there already); nothing to delete on the site", name, site.ManagementUser)
	case force:
		resp.Warning = fmt.Sprintf("%s; removed from this manager only: user %s stays on the site, delete it there with `drover delete user %s`", siteError(name, site.URL, err).Message, site.ManagementUser, site.ManagementUser)
	default:
		restart()
		ae := siteError(name, site.URL, err)
		ae.Message += fmt.Sprintf("; nothing was removed: retry when the site is back, or remove it from this manager only with --force (its user %s then stays on the site)", site.ManagementUser)
		writeError(w, ae)
		return
	}
	_, _, err = s.st.Txn(r.Context(), []store.Op{
		{Type: store.OpDelete, Kind: api.KindSite, Name: name},
		s.auditOp(p, "deleted", "Site/"+name, resp.Warning, time.Now().UTC(), 0),
	})
	if err != nil {
		restart()
		writeError(w, err)
		return
	}
	if err := os.Remove(s.sites.mirrorPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("could not remove the site's mirror file", "site", name, "err", err)
	}
	s.log.Info("site removed", "site", name, "userDeleted", resp.UserDeleted)
	writeJSON(w, http.StatusOK, resp)
}

// listWithSites answers the lists that sites change: the sites themselves
// (with their live status), and on a manager every kind, whose list holds
// the endpoint's own objects and then each site's mirrored ones (local=1
// asks for the endpoint's own only: what a manager of this one mirrors).
// It reports false when the list is an ordinary one.
func (s *Server) listWithSites(w http.ResponseWriter, r *http.Request, kind string, sel store.Selector, view string, head func(int64) string) bool {
	if kind == api.KindSite {
		s.listSites(w, r, sel, head)
		return true
	}
	if r.URL.Query().Get("local") != "" || !s.hasSites() {
		return false
	}
	recs, rev, err := s.st.List(r.Context(), kind, store.ListOptions{Selector: sel})
	if err != nil {
		writeError(w, err)
		return true
	}
	items := make([][]byte, 0, len(recs))
	for _, rec := range recs {
		b, err := s.present(rec)
		if err == nil && view != api.ViewFull {
			summary, row, verr := machineViews(b)
			b, err = summary, verr
			if view == api.ViewTable {
				b = row
			}
		}
		if err != nil {
			writeError(w, err)
			return true
		}
		items = append(items, b)
	}
	mirrored, err := s.mirroredItems(kind, sel, view)
	if err != nil {
		writeError(w, err)
		return true
	}
	items = append(items, mirrored...)
	writeList(w, head(rev), len(items), func(i int, bw *bufio.Writer) { bw.Write(items[i]) })
	return true
}

// listSites answers GET /api/v1/objects/sites: the stored sites with their
// live status.
func (s *Server) listSites(w http.ResponseWriter, r *http.Request, sel store.Selector, head func(int64) string) {
	recs, rev, err := s.st.List(r.Context(), api.KindSite, store.ListOptions{Selector: sel})
	if err != nil {
		writeError(w, err)
		return
	}
	items := make([][]byte, 0, len(recs))
	for _, rec := range recs {
		var site api.Site
		if err := model.Decode(rec, &site); err != nil {
			writeError(w, err)
			return
		}
		b, err := json.Marshal(s.siteView(&site))
		if err != nil {
			writeError(w, err)
			return
		}
		items = append(items, b)
	}
	writeList(w, head(rev), len(items), func(i int, bw *bufio.Writer) { bw.Write(items[i]) })
}

// tagMirrored makes a mirrored object's JSON as the manager shows it: with
// meta.site and the label site=NAME.
func tagMirrored(obj []byte, site string) ([]byte, map[string]string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(obj, &fields); err != nil {
		return nil, nil, err
	}
	labels := map[string]string{}
	if raw, ok := fields["labels"]; ok {
		if err := json.Unmarshal(raw, &labels); err != nil {
			return nil, nil, err
		}
		if labels == nil {
			labels = map[string]string{}
		}
	}
	labels[api.SiteLabel] = site
	fields["labels"], _ = json.Marshal(labels)
	fields["site"], _ = json.Marshal(site)
	b, err := json.Marshal(fields)
	return b, labels, err
}

// mirroredItems returns every site's mirrored objects of kind that match
// sel, as the manager shows them, site by site.
func (s *Server) mirroredItems(kind string, sel store.Selector, view string) ([][]byte, error) {
	var out [][]byte
	for _, run := range s.sites.all() {
		if run.mirror == nil || !run.mirror.Mirrors(kind) {
			continue
		}
		objs, err := run.mirror.List(kind)
		if err != nil {
			return nil, fmt.Errorf("site %q mirror: %w", run.name, err)
		}
		for _, o := range objs {
			var b []byte
			var labels map[string]string
			if kind == api.KindMachine && view != api.ViewFull {
				b, labels, err = machineView(o.JSON, run.name, view)
			} else {
				b, labels, err = tagMirrored(o.JSON, run.name)
			}
			if err != nil {
				return nil, fmt.Errorf("site %q mirror: %s %q: %w", run.name, kind, o.Name, err)
			}
			if sel != nil && !sel.Matches(labels) {
				continue
			}
			out = append(out, b)
		}
	}
	return out, nil
}

// machineView makes the summary or table view of a mirrored machine in
// one decode (a manager's machine table is mostly its sites' machines).
func machineView(obj []byte, site, view string) ([]byte, map[string]string, error) {
	var m api.Machine
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, nil, err
	}
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	m.Labels[api.SiteLabel] = site
	m.Site = site
	if view == api.ViewTable {
		b, err := json.Marshal(tables.MachineRow(&m))
		return b, m.Labels, err
	}
	if inv := m.Status.Inventory; inv != nil {
		if m.Status.Hardware == nil {
			m.Status.Hardware = inv.Summary()
		}
		m.Status.Inventory = nil
	}
	b, err := json.Marshal(&m)
	return b, m.Labels, err
}

// handleGetMirrored answers GET /api/v1/objects/{kind}/{name}?site=NAME.
func (s *Server) handleGetMirrored(w http.ResponseWriter, kind, name, siteName string) {
	run := s.siteRun(w, siteName, true)
	if run == nil {
		return
	}
	o, found, err := run.mirror.Get(kind, name)
	if err != nil {
		writeError(w, err)
		return
	}
	if !found {
		writeError(w, apiError(http.StatusNotFound, "not_found", "%s %q not found on site %q (as mirrored; the mirror is at the site's revision %d)", kind, name, siteName, run.mirror.Status().Cursor))
		return
	}
	b, _, err := tagMirrored(o.JSON, siteName)
	if err != nil {
		writeError(w, err)
		return
	}
	writeRawJSON(w, http.StatusOK, b)
}

// siteRun returns a site's run, or answers the request with why it cannot
// be used: no such site, or (with mirror) no mirror or (without) no way to
// reach it.
func (s *Server) siteRun(w http.ResponseWriter, site string, mirror bool) *siteRun {
	run := s.sites.get(site)
	switch {
	case run == nil:
		writeError(w, apiError(http.StatusNotFound, "not_found", "site %q not found: a site field or ?site= names a site of this manager (drover sites list shows them)", site))
		return nil
	case mirror && run.mirror == nil, !mirror && run.conn == nil:
		writeError(w, apiError(http.StatusServiceUnavailable, "unavailable", "site %q cannot be used from this manager: %v", site, run.err))
		return nil
	}
	return run
}

// notFoundHere is the 404 for an object this endpoint lacks, naming the
// sites whose mirrors have one.
func (s *Server) notFoundHere(kind, name string) *api.Error {
	var on []string
	for _, run := range s.sites.all() {
		if run.mirror == nil {
			continue
		}
		if _, found, _ := run.mirror.Get(kind, name); found {
			on = append(on, run.name)
		}
	}
	if len(on) == 0 {
		return apiError(http.StatusNotFound, "not_found", "%s %q not found", kind, name)
	}
	which := "site " + on[0] + " has one"
	if len(on) > 1 {
		which = "sites " + strings.Join(on, ", ") + " have one each"
	}
	return apiError(http.StatusNotFound, "not_found", "%s %q not found on this endpoint; %s: ask for it with ?site=NAME (drover get %s %s --site %s)",
		kind, name, which, strings.ToLower(kind), name, on[0])
}

// hasSites reports whether this endpoint mirrors any site.
func (s *Server) hasSites() bool {
	s.sites.mu.RLock()
	defer s.sites.mu.RUnlock()
	return len(s.sites.runs) > 0
}

// otherAdminExists refuses deleting user name when no other enabled admin
// would be left.
func (s *Server) otherAdminExists(ctx context.Context, name string) error {
	recs, _, err := s.st.List(ctx, api.KindUser, store.ListOptions{})
	if err != nil {
		return err
	}
	for _, rec := range recs {
		var u api.User
		if rec.Name != name && model.Decode(rec, &u) == nil && u.Role == api.RoleAdmin && !u.Disabled {
			return nil
		}
	}
	return apiError(http.StatusConflict, "conflict", "user %q is the only enabled admin; make another user admin first", name)
}

// writeSiteMetrics writes each site's mirror figures (managers only).
func (s *Server) writeSiteMetrics(w io.Writer) {
	runs := s.sites.all()
	if len(runs) == 0 {
		return
	}
	statuses := make([]api.SiteStatus, len(runs))
	for i, run := range runs {
		statuses[i] = run.status()
	}
	type metric struct {
		name, help, typ string
		value           func(api.SiteStatus) any
	}
	for _, m := range []metric{
		{"drover_site_connected", "1 while the mirror follows the site's event stream.", "gauge", func(st api.SiteStatus) any {
			if st.Connected {
				return 1
			}
			return 0
		}},
		{"drover_site_revision", "The site's latest revision known to the manager.", "gauge", func(st api.SiteStatus) any { return st.SiteRevision }},
		{"drover_site_cursor", "The revision up to which the mirror holds every change of the site.", "gauge", func(st api.SiteStatus) any { return st.Cursor }},
		{"drover_site_lag_revisions", "Site revision minus cursor.", "gauge", func(st api.SiteStatus) any { return st.LagRevisions }},
		{"drover_site_lag_seconds", "How long the mirror has been behind (while disconnected: since the last contact).", "gauge", func(st api.SiteStatus) any { return st.LagSeconds }},
		{"drover_site_relists_total", "Full listings of the site (first contact, then each 410).", "counter", func(st api.SiteStatus) any { return st.Relists }},
		{"drover_site_objects", "Objects of the site in the mirror.", "gauge", func(st api.SiteStatus) any { return st.Objects }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for i, run := range runs {
			fmt.Fprintf(w, "%s{site=%q} %v\n", m.name, run.name, m.value(statuses[i]))
		}
	}
	writeSyncMetrics(w, runs)
}
