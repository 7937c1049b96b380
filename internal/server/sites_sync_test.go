package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

func siteSyncOf(t *testing.T, manager *env, name string) *api.SiteSyncStatus {
	t.Helper()
	var s api.Site
	if err := manager.admin.Get(context.Background(), "sites", name, &s); err != nil {
		t.Fatalf("get site %s: %v", name, err)
	}
	return s.Status.Sync
}

func installedVersion(t *testing.T, e *env, pack string) string {
	t.Helper()
	var cp api.ContentPack
	if err := e.admin.Get(context.Background(), "contentpacks", pack, &cp); err != nil {
		if api.IsStatus(err, http.StatusNotFound) {
			return ""
		}
		t.Fatal(err)
	}
	return cp.Version
}

func diffStrings(st *api.SiteSyncStatus) string {
	if st == nil {
		return "<no status>"
	}
	var out []string
	for _, d := range st.Differences {
		out = append(out, d.String()+" ["+d.Action+"] "+d.Error)
	}
	return st.State + ": " + st.Message + " | " + strings.Join(out, "; ")
}

// A manager keeps a site at a version set: the pack library holds every
// version pushed to it, sync is off until enabled, a change on the site is
// undone, a version the manager does not hold fails with what to do, and
// what a version set or a kept version is used by cannot be deleted.
func TestSiteSyncVersionSet(t *testing.T) {
	site := startServer(t, nil)
	manager := startServer(t, nil)
	ctx := context.Background()
	if _, err := manager.push(manager.admin, mustPack(t, packV1)); err != nil {
		t.Fatal(err)
	}
	// 1.1.0 is kept for the sites only: the manager stays at 1.0.0.
	var kept api.ContentPushResponse
	if err := manager.admin.Do(ctx, http.MethodPost, "/api/v1/content?library=1", mustPack(t, packV2), &kept); err != nil || !kept.LibraryOnly || kept.Kept != "kept" {
		t.Fatalf("library-only push: %+v %v", kept, err)
	}
	if v := installedVersion(t, manager, "site"); v != "1.0.0" {
		t.Fatalf("a library-only push installed %s on the manager", v)
	}
	if l := listItems[api.PackVersion](t, manager.admin, "packversions", ""); len(l) != 2 || l[0].Name != "site@1.0.0" || l[1].Name != "site@1.1.0" {
		t.Fatalf("library: %+v", l)
	}
	manager.mustApply(manager.admin, &api.VersionSet{Meta: api.Meta{Kind: api.KindVersionSet, Name: "prod"}, Packs: []api.VersionSetPack{{Name: "site", Version: "1.1.0"}}})
	addSite(t, manager, site, "east")

	_, err := manager.admin.SiteSync(ctx, "east", api.SiteSyncRequest{Enabled: ptr(true)})
	if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, "has no version set") {
		t.Fatalf("enable without a set: %v", ae)
	}
	_, err = manager.admin.SiteSync(ctx, "east", api.SiteSyncRequest{VersionSet: ptr("nope")})
	if ae := apiErr(t, err, http.StatusNotFound); !strings.Contains(ae.Message, `version set "nope" not found`) || !strings.Contains(ae.Message, "this manager has prod") {
		t.Fatalf("unknown set: %v", ae)
	}

	// A set without sync: compared, not pushed.
	if _, err := manager.admin.SiteSync(ctx, "east", api.SiteSyncRequest{VersionSet: ptr("prod")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "east drifted with sync off", 10*time.Second, func() bool {
		st := siteSyncOf(t, manager, "east")
		return st != nil && st.State == api.SyncDrifted && len(st.Differences) == 1 && st.Differences[0].What == api.DiffMissing && !st.Enabled
	})
	if v := installedVersion(t, site, "site"); v != "" {
		t.Fatalf("sync off, yet the site has site %s", v)
	}

	if _, err := manager.admin.SiteSync(ctx, "east", api.SiteSyncRequest{Enabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "east in sync", 15*time.Second, func() bool {
		return siteSyncOf(t, manager, "east").State == api.SyncInSync
	})
	if v := installedVersion(t, site, "site"); v != "1.1.0" {
		t.Fatalf("site has %q after sync", v)
	}
	if code, body := manager.raw(manager.admin.Token, http.MethodGet, "/metrics", "", nil); code != http.StatusOK || !strings.Contains(string(body), `drover_site_sync_state{site="east",state="in-sync"} 1`) {
		t.Fatalf("metrics: %d\n%s", code, body)
	}

	// Someone installs another version on the site: the mirror shows it
	// and the manager puts the set's back.
	if _, err := site.push(site.admin, mustPack(t, packV1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "east restored to 1.1.0", 15*time.Second, func() bool {
		return installedVersion(t, site, "site") == "1.1.0" && siteSyncOf(t, manager, "east").State == api.SyncInSync
	})

	// A version the manager does not hold.
	manager.mustApply(manager.admin, &api.VersionSet{Meta: api.Meta{Kind: api.KindVersionSet, Name: "prod"}, Packs: []api.VersionSetPack{{Name: "site", Version: "1.3.0"}}})
	waitFor(t, "east failed", 10*time.Second, func() bool {
		st := siteSyncOf(t, manager, "east")
		return st.State == api.SyncFailed && strings.Contains(st.Message, "the manager holds site 1.0.0, 1.1.0; the version set wants 1.3.0: push it to the manager first")
	})
	t.Log(diffStrings(siteSyncOf(t, manager, "east")))

	// In use: neither the set nor a kept version it names can go.
	manager.mustApply(manager.admin, &api.VersionSet{Meta: api.Meta{Kind: api.KindVersionSet, Name: "prod"}, Packs: []api.VersionSetPack{{Name: "site", Version: "1.1.0"}}})
	if ae := apiErr(t, manager.admin.Delete(ctx, "versionsets", "prod"), http.StatusConflict); !strings.Contains(ae.Message, "in use by site east") {
		t.Fatalf("delete a set in use: %v", ae)
	}
	if ae := apiErr(t, manager.admin.Delete(ctx, "packversions", "site@1.1.0"), http.StatusConflict); !strings.Contains(ae.Message, "named by version set prod") {
		t.Fatalf("delete a kept version in use: %v", ae)
	}
	if err := manager.admin.Delete(ctx, "packversions", "site@1.0.0"); err != nil {
		t.Fatalf("delete a kept version no set names: %v", err)
	}
	if _, err := manager.admin.SiteSync(ctx, "east", api.SiteSyncRequest{Clear: true}); err != nil {
		t.Fatal(err)
	}
	if st := siteSyncOf(t, manager, "east"); st != nil {
		t.Fatalf("cleared, yet %+v", st)
	}
	if err := manager.admin.Delete(ctx, "versionsets", "prod"); err != nil {
		t.Fatalf("delete a set no site uses: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
