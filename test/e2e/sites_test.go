package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/mirror"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// managerID is the endpoint id of a site's server (the manager's user on
// its sites is manager-ID).
func (s *site) managerID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "server", "endpoint-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// sitesOf lists the manager's sites.
func (s *site) sitesOf(t *testing.T) map[string]api.Site {
	t.Helper()
	out := map[string]api.Site{}
	for _, st := range listAs[api.Site](s, "sites", "") {
		out[st.Name] = st
	}
	return out
}

func (s *site) hasUser(t *testing.T, name string) bool {
	t.Helper()
	for _, u := range listAs[api.User](s, "users", "") {
		if u.Name == name {
			return true
		}
	}
	return false
}

// addSiteCLI runs drover sites add on the manager.
func (s *site) addSiteCLI(name, url, caFile, password string) (string, string, error) {
	return s.cli(password+"\n", "sites", "add", name, "--url", url, "--ca-cert", caFile, "--username", "admin", "--password-stdin")
}

// filesContaining lists the files under dir that contain secret.
func filesContaining(t *testing.T, dir, secret string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(secret)) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestSitesAddRemove(t *testing.T) {
	east := startSite(t)
	mgr := startSite(t)
	// The site's admin gets a password of its own, to look for it in the
	// manager's files.
	const eastPassword = "east-admin-only-Xq7"
	east.apply("kind: User\nname: admin\nrole: admin\npassword: " + eastPassword + "\n")
	user := "manager-" + mgr.managerID(t)

	t.Run("bad input changes nothing", func(t *testing.T) {
		cases := []struct{ name, url, ca, password, want string }{
			{"wrong password", east.endpoint, east.caFile, "not-the-password", "wrong username or password"},
			{"wrong CA", east.endpoint, mgr.caFile, eastPassword, "not signed by the CA certificate given"},
			{"unreachable", "https://" + freePort(t), east.caFile, eastPassword, "is unreachable"},
			{"not https", "http://" + east.addr, east.caFile, eastPassword, "https://HOST:PORT"},
		}
		for _, tc := range cases {
			out, errs, err := mgr.addSiteCLI("east", tc.url, tc.ca, tc.password)
			if err == nil || !strings.Contains(errs, tc.want) {
				t.Errorf("%s: want an error with %q, got %v %q %q", tc.name, tc.want, err, out, errs)
			}
			t.Logf("%s: %s", tc.name, strings.TrimSpace(errs))
		}
		if sites := mgr.sitesOf(t); len(sites) != 0 {
			t.Fatalf("sites left behind: %v", sites)
		}
		if east.hasUser(t, user) {
			t.Fatal("management user left on the site")
		}
		if _, err := os.Stat(filepath.Join(mgr.dir, "server", "mirror", "east.db")); !os.IsNotExist(err) {
			t.Fatalf("mirror file left behind: %v", err)
		}
	})

	t.Run("add", func(t *testing.T) {
		out, errs, err := mgr.addSiteCLI("east", east.endpoint, east.caFile, eastPassword)
		if err != nil || !strings.Contains(out, "site/east added") || !strings.Contains(out, user) {
			t.Fatalf("sites add: %v %q %q", err, out, errs)
		}
		if !east.hasUser(t, user) {
			t.Fatalf("no user %s on the site", user)
		}
		out, errs, err = mgr.addSiteCLI("east", east.endpoint, east.caFile, eastPassword)
		if err == nil || !strings.Contains(errs, `site "east" exists already`) {
			t.Fatalf("name taken: %v %q", err, errs)
		}
		eventually(t, 20*time.Second, "site connected", func() (bool, string) {
			st := mgr.sitesOf(t)["east"]
			return st.Status.Connected, fmt.Sprintf("%+v", st.Status)
		})
		out, _, err = mgr.cli("", "get", "sites")
		if err != nil || !strings.Contains(out, "east") || !strings.Contains(out, "VERSION SET") {
			t.Fatalf("get sites: %v %s", err, out)
		}
		t.Logf("drover get sites:\n%s", out)
		if found := filesContaining(t, mgr.dir, eastPassword); len(found) > 0 {
			t.Fatalf("the site admin's password is in the manager's files: %v", found)
		}
	})

	t.Run("remove", func(t *testing.T) {
		out, errs, err := mgr.cli("", "sites", "remove", "east")
		if err != nil || !strings.Contains(out, "site/east removed") {
			t.Fatalf("sites remove: %v %q %q", err, out, errs)
		}
		if east.hasUser(t, user) {
			t.Fatal("management user still on the site")
		}
		if len(mgr.sitesOf(t)) != 0 {
			t.Fatal("site still listed")
		}
		if _, err := os.Stat(filepath.Join(mgr.dir, "server", "mirror", "east.db")); !os.IsNotExist(err) {
			t.Fatalf("mirror file left behind: %v", err)
		}
	})

	t.Run("remove an unreachable site", func(t *testing.T) {
		if _, errs, err := mgr.addSiteCLI("east", east.endpoint, east.caFile, eastPassword); err != nil {
			t.Fatalf("sites add: %v %s", err, errs)
		}
		east.srv.kill()
		_, errs, err := mgr.cli("", "sites", "remove", "east")
		if err == nil || !strings.Contains(errs, "unreachable") || !strings.Contains(errs, "--force") {
			t.Fatalf("remove of an unreachable site: %v %q", err, errs)
		}
		if len(mgr.sitesOf(t)) != 1 {
			t.Fatal("a failed remove removed the site")
		}
		out, errs, err := mgr.cli("", "sites", "remove", "east", "--force")
		if err != nil || !strings.Contains(out, "site/east removed") || !strings.Contains(errs, "stays on the site") {
			t.Fatalf("remove --force: %v %q %q", err, out, errs)
		}
		if len(mgr.sitesOf(t)) != 0 {
			t.Fatal("site still listed after --force")
		}
	})
}

// comparable strips what the manager adds to a mirrored object (meta.site
// and the site label) and decodes it for comparison.
func comparable(t *testing.T, raw json.RawMessage, manager bool) (string, any) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if manager {
		delete(m, "site")
		if l, ok := m["labels"].(map[string]any); ok {
			delete(l, api.SiteLabel)
			if len(l) == 0 {
				delete(m, "labels")
			}
		}
	}
	return fmt.Sprint(m["name"]), m
}

// mirrorDiff compares, kind by kind, the site's own objects with the
// manager's objects of that site; it returns "" when they are equal.
func mirrorDiff(t *testing.T, s, mgr *site, name string) string {
	t.Helper()
	ctx := context.Background()
	var diffs []string
	for _, k := range mirror.DefaultKinds() {
		var own, mirrored api.List
		if err := s.client.Do(ctx, http.MethodGet, "/api/v1/objects/"+k.Plural+"?local=1", nil, &own); err != nil {
			t.Fatalf("list %s on the site: %v", k.Plural, err)
		}
		if err := mgr.client.Do(ctx, http.MethodGet, "/api/v1/objects/"+k.Plural+"?selector=site%3D"+name, nil, &mirrored); err != nil {
			t.Fatalf("list %s on the manager: %v", k.Plural, err)
		}
		a, b := map[string]any{}, map[string]any{}
		for _, raw := range own.Items {
			n, v := comparable(t, raw, false)
			a[n] = v
		}
		for _, raw := range mirrored.Items {
			n, v := comparable(t, raw, true)
			b[n] = v
		}
		for n, v := range a {
			if w, ok := b[n]; !ok {
				diffs = append(diffs, k.Kind+" "+n+" missing")
			} else if !reflect.DeepEqual(v, w) {
				diffs = append(diffs, k.Kind+" "+n+" differs")
			}
		}
		for n := range b {
			if _, ok := a[n]; !ok {
				diffs = append(diffs, k.Kind+" "+n+" extra")
			}
		}
	}
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("... %d more", len(diffs)-5))
	}
	return strings.Join(diffs, "; ")
}

// waitMirrored waits until the manager's mirror of site name equals the
// site's objects, kind by kind.
func waitMirrored(t *testing.T, s, mgr *site, name string, limit time.Duration) {
	t.Helper()
	eventually(t, limit, "mirror of "+name+" equal to the site", func() (bool, string) {
		d := mirrorDiff(t, s, mgr, name)
		return d == "", d
	})
}

func newToxiproxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "site", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func TestSitesMirror(t *testing.T) {
	east := startSite(t, "--heartbeat-interval", "2s", "--reachable-timeout", "10s")
	west := startSite(t)
	mgr := startSite(t)
	// The manager reaches east through a proxy the test can cut, 100 ms
	// round trip.
	link := newToxiproxy(t, east.addr)
	for _, stream := range []string{"upstream", "downstream"} {
		toxic := fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":50,"jitter":5}}`, stream, stream)
		if _, err := link.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		east.startAgent(n)
	}
	west.apply("kind: Machine\nname: n1\nlabels: {rack: w1}\n---\nkind: Machine\nname: w2\n")
	eventually(t, 30*time.Second, "east's agents registered", func() (bool, string) {
		ms := east.machines()
		return len(ms) == 3, fmt.Sprint(len(ms))
	})
	// The agents share this host: each configures its own directory.
	for _, n := range []string{"n1", "n2", "n3"} {
		east.apply(fmt.Sprintf("kind: Machine\nname: %s\nparams:\n  config/root: %s\n", n, filepath.Join(east.dir, "roots", n)))
	}
	if _, errs, err := mgr.addSiteCLI("east", "https://"+link.Listen, east.caFile, east.password); err != nil {
		t.Fatalf("add east: %v %s", err, errs)
	}
	if _, errs, err := mgr.addSiteCLI("west", west.endpoint, west.caFile, west.password); err != nil {
		t.Fatalf("add west: %v %s", err, errs)
	}

	t.Run("converges", func(t *testing.T) {
		waitMirrored(t, east, mgr, "east", 30*time.Second)
		waitMirrored(t, west, mgr, "west", 30*time.Second)
		out, errs, err := mgr.cli("", "get", "machines")
		if err != nil || !strings.HasPrefix(out, "SITE") || strings.Count(out, "\neast ") != 3 || strings.Count(out, "\nwest ") != 2 {
			t.Fatalf("get machines on the manager: %v %s\n%s", err, errs, out)
		}
		t.Logf("drover get machines (manager):\n%s", out)
		out, _, err = mgr.cli("", "get", "machines", "-l", "site=east")
		if err != nil || strings.Count(out, "\neast ") != 3 || strings.Contains(out, "west") {
			t.Fatalf("get machines -l site=east: %v\n%s", err, out)
		}
		out, _, err = mgr.cli("", "get", "machine", "n1", "--site", "west", "-o", "json")
		if err != nil || !strings.Contains(out, `"site": "west"`) || !strings.Contains(out, `"rack": "w1"`) {
			t.Fatalf("get machine n1 --site west: %v\n%s", err, out)
		}
		_, errs, err = mgr.cli("", "get", "machine", "n1")
		if err == nil || !strings.Contains(errs, "--site east") {
			t.Fatalf("get machine n1 without --site on the manager: %v %q", err, errs)
		}
	})

	t.Run("forwarded commission", func(t *testing.T) {
		out, errs, err := mgr.cli("", "commission", "east%n[1-2]", "--wait", "--timeout", "2m")
		if err != nil || !strings.Contains(out, "east%n1: commission succeeded") || !strings.Contains(out, "east%n2: commission succeeded") {
			t.Fatalf("commission east%%n[1-2] on the manager: %v\n%s%s", err, out, errs)
		}
		t.Logf("drover commission 'east%%n[1-2]' --wait (manager):\n%s%s", out, errs)
		// The result flows back through the mirror.
		eventually(t, 20*time.Second, "ready machines in the mirror", func() (bool, string) {
			ms := listAs[api.Machine](mgr, "machines", "site=east")
			return countStates(ms)[api.StateReady] == 2, fmt.Sprint(countStates(ms))
		})
	})

	relists := func() int64 { return mgr.sitesOf(t)["east"].Status.Relists }
	if r := relists(); r != 1 {
		t.Fatalf("east listed %d times, want once", r)
	}

	t.Run("partition and heal", func(t *testing.T) {
		link.Stop()
		eventually(t, 20*time.Second, "east disconnected", func() (bool, string) {
			st := mgr.sitesOf(t)["east"].Status
			return !st.Connected, fmt.Sprintf("%+v", st)
		})
		// Both sides keep working: east is written while cut off, west's
		// mirror follows as before.
		east.apply("kind: Task\nname: while-cut\nscript: echo cut\n---\nkind: Machine\nname: extra1\nlabels: {added: during-partition}\n")
		if out, errs, err := east.cli("", "delete", "machine", "n3"); err != nil {
			t.Fatalf("delete n3 on east: %v %s %s", err, out, errs)
		}
		west.apply("kind: Task\nname: west-task\nscript: echo west\n")
		waitMirrored(t, west, mgr, "west", 20*time.Second)
		// The manager keeps working too; what needs east says it cannot.
		mgr.apply("kind: Task\nname: manager-task\nscript: echo manager\n")
		if _, errs, err := mgr.cli("", "delete", "machine", "n2", "--site", "east"); err == nil || !strings.Contains(errs, "unreachable") {
			t.Fatalf("a forwarded delete to a cut-off site: %v %q", err, errs)
		}
		if _, errs, err := mgr.cli("", "get", "machine", "n2", "--site", "east"); err != nil {
			t.Fatalf("reading east's mirror while cut off: %v %s", err, errs)
		}
		out, _, _ := mgr.cli("", "sites", "list")
		t.Logf("during the partition:\n%s", out)
		if err := link.Start(); err != nil {
			t.Fatal(err)
		}
		waitMirrored(t, east, mgr, "east", 60*time.Second)
		st := mgr.sitesOf(t)["east"].Status
		if st.Relists != 1 {
			t.Fatalf("east was listed again after the partition (relists %d): the mirror should resume from its cursor", st.Relists)
		}
		t.Logf("after healing: %+v", st)
	})

	t.Run("manager killed and restarted", func(t *testing.T) {
		mgr.srv.kill()
		east.apply("kind: Task\nname: while-manager-down\nscript: echo down\n")
		mgr.start()
		waitMirrored(t, east, mgr, "east", 60*time.Second)
		waitMirrored(t, west, mgr, "west", 30*time.Second)
		if r := relists(); r != 1 {
			t.Fatalf("east listed again after the manager's restart (relists %d): it should resume from the stored cursor", r)
		}
		out, _, _ := mgr.cli("", "sites", "list", "-o", "wide")
		t.Logf("after the restart:\n%s", out)
	})
	t.Run("an unreachable site is reported, the others proceed", func(t *testing.T) {
		west.srv.kill()
		out, errs, err := mgr.cli("", "verify", "east%n1,west%n1")
		if err == nil || !strings.Contains(out, "east%n1: verify started") || !strings.Contains(errs, `west%n1: site "west"`) || !strings.Contains(errs, "unreachable") {
			t.Fatalf("verify with west down: %v\n%s%s", err, out, errs)
		}
		t.Logf("drover verify 'east%%n1,west%%n1' with west down:\n%s%s", out, errs)
	})
}
