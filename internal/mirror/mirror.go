// Package mirror keeps a manager's read-only copy of one site's objects.
//
// A Mirror follows the site's event stream (GET /api/v1/events) from a
// cursor it keeps in its own bbolt file, next to the objects it holds as
// the site presented them (secure values stay masked as the site shows
// them). Each burst of events is written in one transaction together with
// the cursor, so after a disconnect or a restart it resumes exactly where
// it stopped. It lists the site only on first contact and when the site
// answers 410 (the cursor is older than the site's retained history). One
// goroutine per site: a slow or unreachable site delays nothing but its
// own mirror, and readers only ever read the local file.
package mirror

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
)

// Dialer gives an authenticated client for the site. renew asks for a new
// session: the site refused the previous one.
type Dialer interface {
	Client(ctx context.Context, renew bool) (*api.Client, error)
}

// Kind is a kind to mirror: its name and the plural the API lists it by.
type Kind struct{ Kind, Plural string }

// DefaultKinds are every kind the API lists except credentials (users,
// tokens, join tokens), sites (a nested manager's sites are reached
// through it, not mirrored: docs/sites.md) and the site's pack library
// (every version of every pack it ever installed; what it runs is its
// ContentPacks).
func DefaultKinds() []Kind {
	var out []Kind
	for _, k := range model.Kinds() {
		switch k.Kind {
		case api.KindUser, api.KindToken, api.KindJoinToken, api.KindSite, api.KindPackVersion:
			continue
		}
		out = append(out, Kind{Kind: k.Kind, Plural: k.Plural})
	}
	return out
}

// Config configures one site's mirror.
type Config struct {
	// Name is the site's name (for logs and errors).
	Name string
	// Path is the mirror's bbolt file.
	Path   string
	Dialer Dialer
	// Kinds to mirror (default DefaultKinds).
	Kinds  []Kind
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait before reconnecting
	// (default 200ms and 15s).
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout ends a stream on which nothing arrived for this long
	// (default 45s; sites ping every 15s).
	IdleTimeout time.Duration
	// RequestTimeout bounds each call other than the stream (default 2m: a
	// list of a big site is tens of MB).
	RequestTimeout time.Duration
}

// Mirror is one site's mirror. Run keeps it current; the read methods can
// be called at any time from any goroutine.
type Mirror struct {
	cfg      Config
	db       *db
	log      *slog.Logger
	mirrored map[string]bool

	mu      sync.Mutex
	st      state
	changed chan struct{}
}

type state struct {
	connected   bool
	lastContact time.Time
	err         string
	siteRev     int64
	cursor      int64
	listed      bool
	relists     int64
	objects     int
	behindSince time.Time
	// version is the drover version the site reported at the last
	// connect.
	version string
	// kindRev is, per kind, the revision of the last event of that kind
	// received (or of the last listing).
	kindRev map[string]int64
}

// Open opens (or creates) a site's mirror file.
func Open(cfg Config) (*Mirror, error) {
	if cfg.Kinds == nil {
		cfg.Kinds = DefaultKinds()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 15 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 45 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 2 * time.Minute
	}
	d, err := openDB(cfg.Path)
	if err != nil {
		return nil, err
	}
	meta, err := d.readMeta()
	if err != nil {
		d.close()
		return nil, fmt.Errorf("mirror %s: %w", cfg.Path, err)
	}
	m := &Mirror{cfg: cfg, db: d, log: cfg.Logger.With("site", cfg.Name), mirrored: map[string]bool{}, changed: make(chan struct{})}
	for _, k := range cfg.Kinds {
		m.mirrored[k.Kind] = true
	}
	m.st = state{cursor: meta.cursor, siteRev: meta.cursor, listed: meta.listed, relists: meta.relists, objects: meta.objects, kindRev: map[string]int64{}}
	return m, nil
}

// Close closes the mirror file; Run must have returned.
func (m *Mirror) Close() error { return m.db.close() }

// Mirrors reports whether kind is mirrored.
func (m *Mirror) Mirrors(kind string) bool { return m.mirrored[kind] }

// List returns the mirrored objects of kind, sorted by name.
func (m *Mirror) List(kind string) ([]Object, error) { return m.db.list(kind) }

// Get returns one mirrored object; found is false when the mirror has none.
func (m *Mirror) Get(kind, name string) (obj Object, found bool, err error) {
	return m.db.get(kind, name)
}

// Status is the mirror's state as the API shows it.
func (m *Mirror) Status() api.SiteStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	st := api.SiteStatus{
		Connected:    m.st.connected,
		Error:        m.st.err,
		SiteRevision: m.st.siteRev,
		Cursor:       m.st.cursor,
		LagRevisions: max(0, m.st.siteRev-m.st.cursor),
		Relists:      m.st.relists,
		Objects:      m.st.objects,
		Version:      m.st.version,
	}
	if !m.st.lastContact.IsZero() {
		t := m.st.lastContact.UTC()
		st.LastContact = &t
	}
	switch {
	case !m.st.connected && !m.st.lastContact.IsZero():
		// Nothing newer is known: the mirror is as old as the last word
		// from the site.
		st.LagSeconds = now.Sub(m.st.lastContact).Seconds()
	case !m.st.behindSince.IsZero():
		st.LagSeconds = now.Sub(m.st.behindSince).Seconds()
	}
	st.LagSeconds = math.Round(st.LagSeconds*1000) / 1000
	return st
}

// KindRevision is the site's revision of the last change of kind the
// mirror received (or of its last listing of the site): a reader that
// cares about one kind compares it to tell whether that kind changed.
func (m *Mirror) KindRevision(kind string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.kindRev[kind]
}

// Changed returns a channel closed at the next change of the mirror's
// state (an applied batch, a connect or disconnect).
func (m *Mirror) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// update changes the state under the lock and wakes Changed's waiters.
func (m *Mirror) update(f func(st *state)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.st)
	now := time.Now()
	if m.st.siteRev > m.st.cursor {
		if m.st.behindSince.IsZero() {
			m.st.behindSince = now
		}
	} else {
		m.st.behindSince = time.Time{}
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Mirror) cursor() (int64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.cursor, m.st.listed
}

// errSessionEnded: the site ended our session; log in again.
var errSessionEnded = errors.New("the site ended the manager's session")

// Run keeps the mirror current until ctx ends, reconnecting with backoff.
func (m *Mirror) Run(ctx context.Context) {
	backoff := m.cfg.MinBackoff
	renew := false
	for {
		start := time.Now()
		err := m.session(ctx, renew)
		if ctx.Err() != nil {
			m.update(func(st *state) { st.connected = false })
			return
		}
		renew = api.IsStatus(err, http.StatusUnauthorized) || errors.Is(err, errSessionEnded)
		msg := describe(err)
		m.update(func(st *state) {
			st.connected = false
			st.err = msg
		})
		if time.Since(start) > 10*time.Second {
			backoff = m.cfg.MinBackoff
		}
		m.log.Warn("site mirror disconnected; reconnecting", "err", msg, "in", backoff)
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, m.cfg.MaxBackoff)
	}
}

// describe says why the mirror is disconnected, for Site status.
func describe(err error) string {
	switch {
	case err == nil:
		return "disconnected"
	case api.IsStatus(err, http.StatusUnauthorized):
		return "the site refused the manager's credential (was its management user deleted or disabled on the site?): " + err.Error()
	}
	return err.Error()
}

func (m *Mirror) session(ctx context.Context, renew bool) error {
	// Small calls get as long as a quiet stream: a link that stalls
	// must not hold the mirror before it even follows the site.
	rctx, cancel := context.WithTimeout(ctx, m.cfg.IdleTimeout)
	c, err := m.cfg.Dialer.Client(rctx, renew)
	var info *api.EndpointInfo
	if err == nil {
		info, err = c.EndpointInfo(rctx)
	}
	cancel()
	if err != nil {
		return err
	}
	// The next session dials afresh: a connection left idle by a failed
	// one may be the link that stalled.
	defer c.HTTP.CloseIdleConnections()
	m.update(func(st *state) {
		st.lastContact = time.Now()
		st.siteRev = max(st.siteRev, info.Revision)
		st.version = info.Version
	})
	if _, listed := m.cursor(); !listed {
		if err := m.relist(ctx, c); err != nil {
			return err
		}
	}
	for {
		err := m.stream(ctx, c)
		if !api.IsStatus(err, http.StatusGone) {
			return err
		}
		m.log.Info("site history no longer holds the mirror's cursor; listing the site again", "err", err)
		if err := m.relist(ctx, c); err != nil {
			return err
		}
	}
}

// relist lists every mirrored kind and replaces the mirror's contents.
func (m *Mirror) relist(ctx context.Context, c *api.Client) error {
	lists := make([]listed, 0, len(m.cfg.Kinds))
	cursor := int64(math.MaxInt64)
	for _, k := range m.cfg.Kinds {
		rctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
		var l api.List
		err := c.Do(rctx, http.MethodGet, "/api/v1/objects/"+k.Plural+"?local=1", nil, &l)
		cancel()
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == "unknown_kind" {
			// An older site without this kind.
			continue
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", k.Plural, err)
		}
		items := make([]listedItem, 0, len(l.Items))
		for _, raw := range l.Items {
			var head struct {
				Name     string `json:"name"`
				Revision int64  `json:"revision"`
			}
			if err := json.Unmarshal(raw, &head); err != nil || head.Name == "" {
				return fmt.Errorf("list %s: an item without a name: %.100s", k.Plural, raw)
			}
			items = append(items, listedItem{name: head.Name, revision: head.Revision, data: raw})
		}
		lists = append(lists, listed{kind: k.Kind, items: items})
		cursor = min(cursor, l.Revision)
	}
	if cursor == math.MaxInt64 {
		return errors.New("the site lists none of the mirrored kinds")
	}
	n, err := m.db.replace(lists, cursor)
	if err != nil {
		return fmt.Errorf("write the mirror: %w", err)
	}
	m.update(func(st *state) {
		st.cursor, st.listed, st.objects = cursor, true, n
		for _, l := range lists {
			st.kindRev[l.kind] = max(st.kindRev[l.kind], cursor)
		}
		st.relists++
		st.siteRev = max(st.siteRev, cursor)
		st.lastContact = time.Now()
	})
	m.log.Info("listed the site", "objects", n, "cursor", cursor)
	return nil
}

// stream follows the site's events from the cursor until the stream ends.
func (m *Mirror) stream(ctx context.Context, c *api.Client) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cursor, _ := m.cursor()
	// A link that silently stops carrying data (no FIN, no RST) would
	// otherwise hold the stream, or the request opening it, forever: the
	// site pings every 15 s.
	activity := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(m.cfg.IdleTimeout)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-activity:
				t.Reset(m.cfg.IdleTimeout)
			case <-t.C:
				cancel(fmt.Errorf("nothing from the site for %s", m.cfg.IdleTimeout))
				return
			}
		}
	}()
	body, err := c.Stream(sctx, "/api/v1/events?from="+strconv.FormatInt(cursor, 10))
	if err != nil {
		if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
			return cause
		}
		return err
	}
	defer body.Close()
	m.update(func(st *state) {
		st.connected, st.err = true, ""
		st.lastContact = time.Now()
	})
	r := &reader{m: m, complete: cursor, pending: cursor}
	br := bufio.NewReaderSize(body, 256<<10)
	var evType string
	var data []byte
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			ferr := r.flush()
			if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
				err = cause
			} else if errors.Is(err, io.EOF) {
				err = errors.New("the site closed the event stream")
			}
			return errors.Join(err, ferr)
		}
		select {
		case activity <- struct{}{}:
		default:
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if data != nil {
				if evType == "error" {
					return errors.Join(r.flush(), streamError(data))
				}
				var ev event
				if err := json.Unmarshal(data, &ev); err != nil {
					return errors.Join(r.flush(), fmt.Errorf("bad event from the site: %w", err))
				}
				r.add(ev)
			}
			evType, data = "", nil
			if br.Buffered() == 0 || len(r.batch) >= 4096 {
				if err := r.flush(); err != nil {
					return err
				}
			}
		case line[0] == ':':
			r.comment(line)
			if br.Buffered() == 0 {
				if err := r.flush(); err != nil {
					return err
				}
			}
		case bytes.HasPrefix(line, []byte("event: ")):
			evType = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append([]byte(nil), line[len("data: "):]...)
		}
	}
}

// streamError turns the stream's last "error" event into an error.
func streamError(data []byte) error {
	var e struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	_ = json.Unmarshal(data, &e)
	if e.Code == "unauthorized" {
		return fmt.Errorf("%w: %s", errSessionEnded, e.Error)
	}
	return fmt.Errorf("the site ended the event stream: %s", e.Error)
}

// reader gathers the events of a burst and writes them in one
// transaction. A revision counts as complete (and the cursor may move to
// it) once a later revision starts or the site marks it complete
// (": rev N"); events of an incomplete revision are applied all the same,
// and applied again harmlessly after a resume.
type reader struct {
	m        *Mirror
	batch    []event
	pending  int64 // revision of the last event received
	complete int64 // every event up to here was received
	siteRev  int64
	dirty    bool
	// kinds are the kinds of the batch's events, with their latest
	// revision.
	kinds map[string]int64
}

func (r *reader) add(ev event) {
	if ev.Revision > r.pending {
		r.complete = max(r.complete, r.pending)
		r.pending = ev.Revision
	}
	r.siteRev = max(r.siteRev, ev.Revision)
	if r.kinds == nil {
		r.kinds = map[string]int64{}
	}
	r.kinds[ev.Kind] = max(r.kinds[ev.Kind], ev.Revision)
	r.batch = append(r.batch, ev)
	r.dirty = true
}

// comment reads ": rev N" (every event up to N was sent) and ": ping N"
// (the site is at least at N).
func (r *reader) comment(line []byte) {
	f := bytes.Fields(line[1:])
	if len(f) != 2 {
		return
	}
	n, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return
	}
	switch string(f[0]) {
	case "rev":
		r.complete = max(r.complete, n)
	case "ping":
	default:
		return
	}
	r.siteRev = max(r.siteRev, n)
	r.dirty = true
}

func (r *reader) flush() error {
	if !r.dirty {
		return nil
	}
	delta, err := r.m.db.applyBatch(r.batch, r.m.Mirrors, r.complete)
	if err != nil {
		return fmt.Errorf("write the mirror: %w", err)
	}
	r.m.update(func(st *state) {
		st.cursor = max(st.cursor, r.complete)
		st.objects += delta
		st.siteRev = max(st.siteRev, r.siteRev)
		st.lastContact = time.Now()
		for k, rev := range r.kinds {
			st.kindRev[k] = max(st.kindRev[k], rev)
		}
	})
	clear(r.kinds)
	r.batch = r.batch[:0]
	r.dirty = false
	return nil
}
