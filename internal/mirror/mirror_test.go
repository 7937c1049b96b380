package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/mirror"
	"github.com/drover-project/drover/internal/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

const password = "mirror-test-admin-password"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// site is a real drover server on loopback.
type site struct {
	srv   *server.Server
	admin *api.Client
	url   string
}

func startSite(t testing.TB, retain int) *site {
	t.Helper()
	srv, err := server.New(server.Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", AdminPassword: password,
		PasswordHashCost: bcrypt.MinCost, NoDefaultContent: true, RetainEvents: retain,
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	c, err := api.NewClient("https://"+srv.Addr(), srv.CACertPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.HTTP.CloseIdleConnections()
		cancel()
		<-done
		srv.Close()
	})
	lr, err := c.Login(context.Background(), "admin", password, "")
	if err != nil {
		t.Fatal(err)
	}
	return &site{srv: srv, admin: c.WithToken(lr.Token), url: "https://" + srv.Addr()}
}

// dialer logs in as the site's admin (the server wires the management
// user's credential instead).
type dialer struct {
	s      *site
	logins int
}

func (d *dialer) Client(ctx context.Context, renew bool) (*api.Client, error) {
	d.logins++
	lr, err := d.s.admin.Login(ctx, "admin", password, "1h")
	if err != nil {
		return nil, err
	}
	return d.s.admin.WithToken(lr.Token), nil
}

func (s *site) machines(t *testing.T, n0, n int, note string) {
	t.Helper()
	for i := n0; i < n0+n; i++ {
		m := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: fmt.Sprintf("n%d", i), Labels: map[string]string{"note": note}}}
		if _, err := s.admin.ApplyObjects(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

// siteJSON is the site's own objects of a kind, name to JSON.
func (s *site) objects(t *testing.T, plural string) map[string]string {
	t.Helper()
	var l api.List
	if err := s.admin.Do(context.Background(), http.MethodGet, "/api/v1/objects/"+plural+"?local=1", nil, &l); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, raw := range l.Items {
		var head struct{ Name string }
		_ = json.Unmarshal(raw, &head)
		out[head.Name] = string(raw)
	}
	return out
}

func mirrored(t *testing.T, m *mirror.Mirror, kind string) map[string]string {
	t.Helper()
	objs, err := m.List(kind)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, o := range objs {
		out[o.Name] = string(o.JSON)
	}
	return out
}

func equal(a, b map[string]string) (bool, string) {
	var diff []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			diff = append(diff, "missing "+k)
		} else if !bytes.Equal([]byte(v), []byte(w)) {
			diff = append(diff, "differs "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diff = append(diff, "extra "+k)
		}
	}
	sort.Strings(diff)
	return len(diff) == 0, fmt.Sprint(diff)
}

// converge waits until the mirror holds exactly the site's machines and
// params, and its cursor the site's revision.
func converge(t *testing.T, s *site, m *mirror.Mirror) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rev, _ := s.srv.Store().Revision(context.Background())
		okM, dm := equal(s.objects(t, "machines"), mirrored(t, m, api.KindMachine))
		okP, dp := equal(s.objects(t, "params"), mirrored(t, m, api.KindParam))
		st := m.Status()
		if okM && okP && st.Cursor == rev && st.LagRevisions == 0 && st.Connected {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror did not converge: machines %s, params %s, status %+v, site revision %d", dm, dp, st, rev)
		}
		select {
		case <-m.Changed():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func run(t testing.TB, m *mirror.Mirror) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func TestMirrorFollowsResumesAndRelists(t *testing.T) {
	s := startSite(t, 40)
	s.machines(t, 1, 3, "first")
	path := filepath.Join(t.TempDir(), "east.db")
	open := func() *mirror.Mirror {
		m, err := mirror.Open(mirror.Config{Name: "east", Path: path, Dialer: &dialer{s: s}, MinBackoff: 10 * time.Millisecond, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open()
	stop := run(t, m)
	converge(t, s, m)
	if st := m.Status(); st.Relists != 1 || !st.Connected || len(mirrored(t, m, api.KindMachine)) != 3 {
		t.Fatalf("first contact: %+v", st)
	}
	// Changes while following: puts, a secure value (stays masked as the
	// site shows it), a delete.
	s.machines(t, 2, 5, "second")
	if _, err := s.admin.ApplyObjects(context.Background(),
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "root-pw"}, Secure: true},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "global"}, Params: map[string]json.RawMessage{"root-pw": json.RawMessage(`"s3cret"`)}},
	); err != nil {
		t.Fatal(err)
	}
	if err := s.admin.Delete(context.Background(), "machines", "n1"); err != nil {
		t.Fatal(err)
	}
	converge(t, s, m)
	prof := mirrored(t, m, api.KindProfile)["global"]
	if !bytes.Contains([]byte(prof), []byte(`"********"`)) || bytes.Contains([]byte(prof), []byte("s3cret")) {
		t.Fatalf("mirrored profile: %s", prof)
	}
	stop()
	m.Close()

	// A few changes while the mirror is away: it resumes from its cursor,
	// without listing again.
	s.machines(t, 7, 2, "third")
	m = open()
	if st := m.Status(); st.Relists != 1 || len(mirrored(t, m, api.KindMachine)) != 5 {
		t.Fatalf("reopened: %+v", st)
	}
	stop = run(t, m)
	converge(t, s, m)
	if st := m.Status(); st.Relists != 1 {
		t.Fatalf("resumed with a re-list: %+v", st)
	}
	stop()
	m.Close()

	// More changes than the site keeps history for: the site answers 410
	// and the mirror lists again.
	for i := 0; i < 6; i++ {
		s.machines(t, 1, 20, fmt.Sprint("round", i))
	}
	oldest, _ := s.srv.Store().OldestRevision(context.Background())
	if cur := m.Status().Cursor; cur >= oldest-1 {
		t.Fatalf("the site still holds history from %d (oldest %d): the test needs it compacted", cur, oldest)
	}
	m = open()
	defer m.Close()
	stop = run(t, m)
	defer stop()
	converge(t, s, m)
	if st := m.Status(); st.Relists != 2 || len(mirrored(t, m, api.KindMachine)) != 20 {
		t.Fatalf("after 410: %+v", st)
	}
}

// A site that cannot be reached leaves the mirror disconnected with the
// reason, and its contents as they were.
func TestMirrorUnreachable(t *testing.T) {
	s := startSite(t, 0)
	s.machines(t, 1, 2, "x")
	path := filepath.Join(t.TempDir(), "west.db")
	m, err := mirror.Open(mirror.Config{Name: "west", Path: path, Dialer: &dialer{s: s}, MinBackoff: 10 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, m)
	converge(t, s, m)
	stop()
	m.Close()
	bad, err := api.NewClient("https://127.0.0.1:1", s.srv.CACertPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	m, err = mirror.Open(mirror.Config{Name: "west", Path: path, Dialer: fixed{bad}, MinBackoff: 10 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	stop = run(t, m)
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for m.Status().Error == "" {
		if time.Now().After(deadline) {
			t.Fatal("no error reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := m.Status()
	if st.Connected || !bytes.Contains([]byte(st.Error), []byte("connection refused")) || len(mirrored(t, m, api.KindMachine)) != 2 {
		t.Fatalf("unreachable: %+v", st)
	}
}

type fixed struct{ c *api.Client }

func (f fixed) Client(context.Context, bool) (*api.Client, error) { return f.c, nil }

// loginDialer logs in as the site's admin through base (a proxy).
type loginDialer struct{ base *api.Client }

func (d loginDialer) Client(ctx context.Context, renew bool) (*api.Client, error) {
	lr, err := d.base.Login(ctx, "admin", password, "1h")
	if err != nil {
		return nil, err
	}
	return d.base.WithToken(lr.Token), nil
}

// A link that silently stops carrying data (no close, no reset) is
// noticed by the idle timeout; once it carries data again the mirror
// resumes from its cursor.
func TestMirrorStalledLink(t *testing.T) {
	s := startSite(t, 0)
	s.machines(t, 1, 2, "a")
	proxy := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()), "site", "127.0.0.1:0", s.srv.Addr())
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	defer proxy.Stop()
	base, err := api.NewClient("https://"+proxy.Listen, s.srv.CACertPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.Open(mirror.Config{Name: "east", Path: filepath.Join(t.TempDir(), "east.db"), Dialer: loginDialer{base},
		IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	stop := run(t, m)
	defer stop()
	converge(t, s, m)

	stall := `{"name":"stall","type":"timeout","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`
	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(stall)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("a stalled link was not noticed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := m.Status(); !strings.Contains(st.Error, "nothing from the site for 1s") {
		t.Fatalf("stalled: %+v", st)
	}
	s.machines(t, 3, 2, "while-stalled")
	if err := proxy.Toxics.RemoveToxic(context.Background(), "stall"); err != nil {
		t.Fatal(err)
	}
	converge(t, s, m)
	if st := m.Status(); st.Relists != 1 {
		t.Fatalf("listed again after the stall: %+v", st)
	}
}
