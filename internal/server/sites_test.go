package server

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// addSite registers site with manager under name.
func addSite(t *testing.T, manager, site *env, name string) *api.Site {
	t.Helper()
	s, err := manager.admin.AddSite(context.Background(), api.SiteAddRequest{
		Name: name, URL: site.url, CACert: string(site.srv.CACertPEM()), Username: "admin", Password: testAdminPassword,
	})
	if err != nil {
		t.Fatalf("add site %s: %v", name, err)
	}
	return s
}

func listItems[T any](t *testing.T, c *api.Client, kind, selector string) []T {
	t.Helper()
	l, err := c.List(context.Background(), kind, selector)
	if err != nil {
		t.Fatalf("list %s: %v", kind, err)
	}
	out := make([]T, len(l.Items))
	for i, raw := range l.Items {
		if err := json.Unmarshal(raw, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestSitesAddMirrorRemove(t *testing.T) {
	site := startServer(t, nil)
	manager := startServer(t, nil)
	ctx := context.Background()
	site.mustApply(site.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1", Labels: map[string]string{"role": "db"}}})
	manager.mustApply(manager.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}})

	added := addSite(t, manager, site, "east")
	user := "manager-" + manager.srv.EndpointID()
	if added.ManagementUser != user || added.Credential != "********" || added.URL != site.url {
		t.Fatalf("added site: %+v", added)
	}
	var u api.User
	if err := site.admin.Get(ctx, "users", user, &u); err != nil || u.Role != api.RoleAdmin {
		t.Fatalf("management user on the site: %+v %v", u, err)
	}
	// The admin's session used to register is gone from the site.
	toks := listItems[api.Token](t, site.admin, "tokens", "user=admin")
	if len(toks) != 1 {
		t.Fatalf("admin sessions on the site: want only the test's, got %d", len(toks))
	}

	waitFor(t, "mirrored machine", 10*time.Second, func() bool {
		return len(listItems[api.Machine](t, manager.admin, "machines", "site=east")) == 1
	})
	all := listItems[api.Machine](t, manager.admin, "machines", "")
	if len(all) != 2 || all[0].Site != "" || all[1].Site != "east" || all[1].Labels["site"] != "east" || all[1].Labels["role"] != "db" {
		t.Fatalf("manager's machines: %+v", all)
	}
	var sum api.List
	if err := manager.admin.Do(ctx, http.MethodGet, "/api/v1/objects/machines?view=summary&selector=site%3Deast", nil, &sum); err != nil || len(sum.Items) != 1 || !strings.Contains(string(sum.Items[0]), `"site":"east"`) {
		t.Fatalf("summary view of a mirrored machine: %v %s", err, sum.Items)
	}
	tbl, err := manager.admin.Table(ctx, "machines", "")
	if err != nil || len(tbl.Rows) != 2 || tbl.Columns[0].Name != "SITE" || tbl.Rows[0][0] != "" || tbl.Rows[1][0] != "east" || tbl.Rows[1][1] != "n1" {
		t.Fatalf("table view on the manager: %v %+v", err, tbl)
	}
	var local api.List
	if err := manager.admin.Do(ctx, http.MethodGet, "/api/v1/objects/machines?local=1", nil, &local); err != nil || len(local.Items) != 1 {
		t.Fatalf("local=1: %d items, %v", len(local.Items), err)
	}
	var m api.Machine
	if err := manager.admin.Do(ctx, http.MethodGet, "/api/v1/objects/machines/n1?site=east", nil, &m); err != nil || m.Site != "east" {
		t.Fatalf("get mirrored: %+v %v", m, err)
	}
	site.mustApply(site.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n2"}})
	var n2 api.Machine
	waitFor(t, "second machine", 10*time.Second, func() bool {
		return manager.admin.Do(ctx, http.MethodGet, "/api/v1/objects/machines/n2?site=east", nil, &n2) == nil
	})
	err = manager.admin.Get(ctx, "machines", "n2", &n2)
	if ae := apiErr(t, err, 404); !strings.Contains(ae.Message, "--site east") {
		t.Fatalf("not found hint: %s", ae.Message)
	}
	sites := listItems[api.Site](t, manager.admin, "sites", "")
	if len(sites) != 1 || !sites[0].Status.Connected || sites[0].Status.Relists != 1 || sites[0].Credential != "********" {
		t.Fatalf("sites: %+v", sites)
	}
	waitFor(t, "no lag", 10*time.Second, func() bool {
		st := listItems[api.Site](t, manager.admin, "sites", "")[0].Status
		return st.LagRevisions == 0 && st.Cursor == site.rev()
	})

	status, body := manager.raw(manager.admin.Token, http.MethodGet, "/metrics", "", nil)
	for _, want := range []string{`drover_site_connected{site="east"} 1`, `drover_site_relists_total{site="east"} 1`, `drover_site_lag_revisions{site="east"} 0`} {
		if status != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %s:\n%s", want, body)
		}
	}

	_, err = manager.admin.AddSite(ctx, api.SiteAddRequest{Name: "east", URL: site.url, CACert: string(site.srv.CACertPEM()), Username: "admin", Password: testAdminPassword})
	apiErr(t, err, http.StatusConflict)
	_, err = manager.admin.AddSite(ctx, api.SiteAddRequest{Name: "east2", URL: site.url, CACert: string(site.srv.CACertPEM()), Username: "admin", Password: testAdminPassword})
	if ae := apiErr(t, err, http.StatusConflict); !strings.Contains(ae.Message, `registered already as site "east"`) {
		t.Fatal(ae.Message)
	}

	resp, err := manager.admin.RemoveSite(ctx, "east", false)
	if err != nil || !resp.UserDeleted {
		t.Fatalf("remove: %+v %v", resp, err)
	}
	apiErr(t, site.admin.Get(ctx, "users", user, &u), 404)
	if _, err := os.Stat(filepath.Join(manager.srv.cfg.DataDir, "mirror", "east.db")); !os.IsNotExist(err) {
		t.Fatalf("mirror file left: %v", err)
	}
	if got := listItems[api.Machine](t, manager.admin, "machines", ""); len(got) != 1 {
		t.Fatalf("after remove: %+v", got)
	}
}

func TestSitesAddErrors(t *testing.T) {
	site := startServer(t, nil)
	manager := startServer(t, nil)
	other := startServer(t, nil)
	ctx := context.Background()
	ca := string(site.srv.CACertPEM())
	before := site.rev()
	cases := []struct {
		name   string
		req    api.SiteAddRequest
		status int
		want   string
	}{
		{"bad name", api.SiteAddRequest{Name: "-x", URL: site.url, CACert: ca, Username: "admin", Password: testAdminPassword}, 400, "site name"},
		{"all", api.SiteAddRequest{Name: "all", URL: site.url, CACert: ca, Username: "admin", Password: testAdminPassword}, 400, "node range keyword"},
		{"bad url", api.SiteAddRequest{Name: "east", URL: "http://" + strings.TrimPrefix(site.url, "https://"), CACert: ca, Username: "admin", Password: testAdminPassword}, 400, "https://HOST:PORT"},
		{"bad ca", api.SiteAddRequest{Name: "east", URL: site.url, CACert: "nope", Username: "admin", Password: testAdminPassword}, 400, "no PEM certificate"},
		{"wrong password", api.SiteAddRequest{Name: "east", URL: site.url, CACert: ca, Username: "admin", Password: "wrong"}, 400, "wrong username or password"},
		{"wrong ca", api.SiteAddRequest{Name: "east", URL: site.url, CACert: string(other.srv.CACertPEM()), Username: "admin", Password: testAdminPassword}, 502, "not signed by the CA certificate given"},
		{"unreachable", api.SiteAddRequest{Name: "east", URL: "https://127.0.0.1:1", CACert: ca, Username: "admin", Password: testAdminPassword}, 502, "unreachable"},
		{"itself", api.SiteAddRequest{Name: "east", URL: manager.url, CACert: string(manager.srv.CACertPEM()), Username: "admin", Password: testAdminPassword}, 400, "this endpoint itself"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manager.admin.AddSite(ctx, tc.req)
			if ae := apiErr(t, err, tc.status); !strings.Contains(ae.Message, tc.want) {
				t.Fatalf("message %q lacks %q", ae.Message, tc.want)
			}
			if got := listItems[api.Site](t, manager.admin, "sites", ""); len(got) != 0 {
				t.Fatalf("site left behind: %+v", got)
			}
		})
	}
	if users := listItems[api.User](t, site.admin, "users", ""); len(users) != 1 {
		t.Fatalf("users left on the site: %+v", users)
	}
	if site.rev() != before {
		t.Fatalf("the site changed: revision %d -> %d", before, site.rev())
	}
	site.user("vic", api.RoleViewer)
	_, err := manager.admin.AddSite(ctx, api.SiteAddRequest{Name: "east", URL: site.url, CACert: ca, Username: "vic", Password: "pw-vic-12345"})
	if ae := apiErr(t, err, 400); !strings.Contains(ae.Message, "is viewer") {
		t.Fatal(ae.Message)
	}
	op := manager.user("olga", api.RoleOperator)
	_, err = op.AddSite(ctx, api.SiteAddRequest{Name: "east", URL: site.url, CACert: ca, Username: "admin", Password: testAdminPassword})
	apiErr(t, err, 403)
}

func TestSitesForwarding(t *testing.T) {
	site := startServer(t, nil)
	manager := startServer(t, nil)
	ctx := context.Background()
	site.agent("n1")
	site.agent("n2")
	manager.agent("n1")
	site.mustApply(site.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "hello"}, Script: "echo hello"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"hello"}},
	)
	addSite(t, manager, site, "east")
	waitFor(t, "mirrored machines", 10*time.Second, func() bool {
		return len(listItems[api.Machine](t, manager.admin, "machines", "site=east")) == 2
	})

	// A range across the manager and its site: each started where it is.
	manager.mustApply(manager.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "hello"}, Script: "echo hello"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"hello"}},
	)
	resp, err := manager.admin.Action(ctx, api.ActionCommission, "east%n[1-2],n1", "wf")
	if err != nil {
		t.Fatalf("action: %v %+v", err, resp)
	}
	bySite := map[string]int{}
	for _, r := range resp.Results {
		if r.Run == "" {
			t.Fatalf("refused on the site: %+v", r)
		}
		bySite[r.Site]++
	}
	if bySite["east"] != 2 || bySite[""] != 1 {
		t.Fatalf("results: %+v", resp.Results)
	}
	var run api.Run
	for _, r := range resp.Results {
		if r.Site == "east" {
			// The run is the site's, and flows back through the mirror.
			if err := site.admin.Get(ctx, "runs", r.Run, &run); err != nil || run.User != "manager-"+manager.srv.EndpointID() {
				t.Fatalf("run on the site: %+v %v", run, err)
			}
			waitFor(t, "run in the mirror", 10*time.Second, func() bool {
				return manager.admin.GetAt(ctx, "east", "runs", r.Run, &run) == nil
			})
		}
	}
	_, err = manager.admin.Action(ctx, api.ActionVerify, "east%n7", "wf")
	if ae := apiErr(t, err, 400); !strings.Contains(ae.Message, "unknown node east%n7") {
		t.Fatal(ae.Message)
	}
	_, err = manager.admin.Action(ctx, api.ActionVerify, "north%n1", "wf")
	if ae := apiErr(t, err, 400); !strings.Contains(ae.Message, "unknown site north") {
		t.Fatal(ae.Message)
	}

	// Writes of a site's objects go to the site.
	task := &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "fwd", Site: "east"}, Script: "echo fwd"}
	if _, err := manager.admin.ApplyObjects(ctx, task); err != nil {
		t.Fatalf("forwarded apply: %v", err)
	}
	var got api.Task
	if err := site.admin.Get(ctx, "tasks", "fwd", &got); err != nil || got.Script != "echo fwd" || got.Site != "" {
		t.Fatalf("task on the site: %+v %v", got, err)
	}
	apiErr(t, manager.admin.Get(ctx, "tasks", "fwd", &got), 404)
	waitFor(t, "task in the mirror", 10*time.Second, func() bool { return manager.admin.GetAt(ctx, "east", "tasks", "fwd", &got) == nil })
	if got.Site != "east" || got.Labels[api.SiteLabel] != "east" {
		t.Fatalf("mirrored task: %+v", got)
	}
	// What get shows can be written back as is.
	got.Script = "echo changed"
	if err := manager.admin.Do(ctx, http.MethodPut, "/api/v1/objects/tasks/fwd", &got, nil); err != nil {
		t.Fatalf("forwarded put: %v", err)
	}
	got = api.Task{}
	if err := site.admin.Get(ctx, "tasks", "fwd", &got); err != nil || got.Script != "echo changed" || len(got.Labels) != 0 {
		t.Fatalf("task on the site after put: %+v %v", got, err)
	}
	// A stale revision is the site's conflict.
	got.Revision = 1
	err = manager.admin.Do(ctx, http.MethodPut, "/api/v1/objects/tasks/fwd?site=east", &got, nil)
	if ae := apiErr(t, err, 409); !strings.Contains(ae.Message, `site "east"`) {
		t.Fatal(ae.Message)
	}
	mixed := &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "local"}, Script: "echo"}
	_, err = manager.admin.ApplyObjects(ctx, task, mixed)
	if ae := apiErr(t, err, 400); !strings.Contains(ae.Message, "several sites") {
		t.Fatal(ae.Message)
	}
	viewer := manager.user("vic", api.RoleViewer)
	_, err = viewer.ApplyObjects(ctx, task)
	apiErr(t, err, 403)
	if err := manager.admin.Do(ctx, http.MethodDelete, "/api/v1/objects/tasks/fwd?site=east", nil, nil); err != nil {
		t.Fatalf("forwarded delete: %v", err)
	}
	apiErr(t, site.admin.Get(ctx, "tasks", "fwd", &got), 404)
	_, err = site.admin.ApplyObjects(ctx, task)
	if ae := apiErr(t, err, 404); !strings.Contains(ae.Message, `site "east" not found`) {
		t.Fatal(ae.Message)
	}
}

// A site that is itself a manager: ranges pass through (region1%east%n1),
// and the top manager's mirror of region1 holds region1's own objects only.
func TestSitesNested(t *testing.T) {
	east := startServer(t, nil)
	region := startServer(t, nil)
	top := startServer(t, nil)
	ctx := context.Background()
	east.agent("n1")
	region.agent("r1")
	for _, e := range []*env{east, region} {
		e.mustApply(e.admin,
			&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "hello"}, Script: "echo hello"},
			&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"hello"}},
		)
	}
	addSite(t, region, east, "east")
	addSite(t, top, region, "region1")
	waitFor(t, "region1's machine in the top mirror", 10*time.Second, func() bool {
		return len(listItems[api.Machine](t, top.admin, "machines", "site=region1")) == 1
	})
	waitFor(t, "east's machine in region1's list", 10*time.Second, func() bool {
		return len(listItems[api.Machine](t, region.admin, "machines", "site=east")) == 1
	})
	if ms := listItems[api.Machine](t, top.admin, "machines", ""); len(ms) != 1 || ms[0].Name != "r1" || ms[0].Site != "region1" {
		t.Fatalf("top manager's machines: %+v", ms)
	}
	resp, err := top.admin.Action(ctx, api.ActionCommission, "region1%east%n1", "wf")
	if err != nil || len(resp.Results) != 1 || resp.Results[0].Site != "region1%east" || resp.Results[0].Run == "" {
		t.Fatalf("nested commission: %+v %v", resp, err)
	}
	var run api.Run
	if err := east.admin.Get(ctx, "runs", resp.Results[0].Run, &run); err != nil || run.User != "manager-"+region.srv.EndpointID() {
		t.Fatalf("run on east: %+v %v", run, err)
	}
	resp, err = top.admin.Action(ctx, api.ActionCommission, "region1%west%n1", "wf")
	apiErr(t, err, 409)
	if len(resp.Results) != 1 || !strings.Contains(resp.Results[0].Error, "unknown site west") {
		t.Fatalf("unknown site on the nested manager: %+v", resp.Results)
	}
}
