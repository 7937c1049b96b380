package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// syncedPack is a content pack "site" at a version, requiring the built-in
// pack; its task says which version it is.
func syncedPack(version string) string {
	return fmt.Sprintf(`kind: ContentPack
name: site
version: %s
description: site tasks
requires: [{name: drover-default, version: ^1.0.0}]
---
kind: Task
name: site-hello
script: echo hello from site %s
---
kind: Workflow
name: site-hello
tasks: [site-hello]
`, version, version)
}

// syncOf reads a site's sync status from the manager.
func syncOf(t *testing.T, mgr *site, name string) *api.SiteSyncStatus {
	t.Helper()
	st := mgr.sitesOf(t)[name].Status.Sync
	if st == nil {
		return &api.SiteSyncStatus{State: "<none>"}
	}
	return st
}

func describeSync(st *api.SiteSyncStatus) string {
	var ds []string
	for _, d := range st.Differences {
		ds = append(ds, d.String()+" ["+d.Action+"]")
	}
	return fmt.Sprintf("%s: %s | %s", st.State, st.Message, strings.Join(ds, "; "))
}

// packOn returns the site's installed pack of that name (nil if none).
func packOn(t *testing.T, s *site, name string) *api.ContentPack {
	t.Helper()
	for _, p := range listAs[api.ContentPack](s, "contentpacks", "") {
		if p.Name == name {
			return &p
		}
	}
	return nil
}

func waitSync(t *testing.T, mgr *site, name, state string, limit time.Duration, also func(*api.SiteSyncStatus) bool) {
	t.Helper()
	eventually(t, limit, name+" "+state, func() (bool, string) {
		st := syncOf(t, mgr, name)
		return st.State == state && (also == nil || also(st)), describeSync(st)
	})
}

func hasDifference(st *api.SiteSyncStatus, text string) bool {
	for _, d := range st.Differences {
		if d.String() == text {
			return true
		}
	}
	return false
}

// TestVersionSetSync: a manager and two sites, a version set naming the
// built-in pack and a custom one. The enabled site is brought in sync and
// kept there (a pack changed by hand on the site is restored from the
// mirror's news), the other is reported drifted until enabled, a push the
// site refuses is reported and retried when the site changes, a site cut
// off is reported unknown without holding the other back and is synced
// when the link heals, and a version the manager does not hold fails with
// what to do.
func TestVersionSetSync(t *testing.T) {
	east := startSite(t)
	west := startSite(t)
	mgr := startSite(t)
	link := newToxiproxy(t, east.addr)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v100, v110 := write("site-1.0.0.yaml", syncedPack("1.0.0")), write("site-1.1.0.yaml", syncedPack("1.1.0"))
	other := write("other.yaml", "kind: ContentPack\nname: other\nversion: 0.1.0\n---\nkind: Task\nname: site-hello\nscript: echo other\n")
	run := func(s *site, args ...string) string {
		t.Helper()
		out, errs, err := s.cli("", args...)
		if err != nil {
			t.Fatalf("drover %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
		}
		return out
	}

	// The manager installs 1.0.0, then upgrades to 1.1.0: its library
	// keeps both.
	run(mgr, "content", "push", v100)
	run(mgr, "content", "push", v110)
	lib := run(mgr, "content", "list", "--library")
	t.Logf("drover content list --library (manager):\n%s", lib)
	for _, want := range []string{"site            1.0.0", "site            1.1.0", "drover-default"} {
		if !strings.Contains(lib, want) {
			t.Fatalf("library lacks %q:\n%s", want, lib)
		}
	}
	builtin := packOn(t, mgr, "drover-default")
	if builtin == nil {
		t.Fatal("no drover-default on the manager")
	}
	mgr.apply(fmt.Sprintf("kind: VersionSet\nname: prod\npacks:\n  - {name: drover-default, version: %s}\n  - {name: site, version: 1.1.0}\n", builtin.Version))
	if _, errs, err := mgr.cli("kind: VersionSet\nname: bad\npacks: [{name: site, version: 1.1.0}, {name: site, version: 1.2.0}]\n", "apply", "-f", "-"); err == nil || !strings.Contains(errs, `pack "site" is named twice`) {
		t.Fatalf("a set naming a pack twice: %v %q", err, errs)
	}
	if _, errs, err := mgr.addSiteCLI("east", "https://"+link.Listen, east.caFile, east.password); err != nil {
		t.Fatalf("add east: %v %s", err, errs)
	}
	if _, errs, err := mgr.addSiteCLI("west", west.endpoint, west.caFile, west.password); err != nil {
		t.Fatalf("add west: %v %s", err, errs)
	}

	t.Run("enabled site is brought in sync", func(t *testing.T) {
		out := run(mgr, "sites", "sync", "east", "--version-set", "prod", "--enable")
		t.Logf("drover sites sync east --version-set prod --enable:\n%s", out)
		waitSync(t, mgr, "east", api.SyncInSync, 30*time.Second, nil)
		list := run(east, "content", "list")
		t.Logf("drover content list (east):\n%s", list)
		p := packOn(t, east, "site")
		if p == nil || p.Version != "1.1.0" || !strings.HasPrefix(p.Status.InstalledBy, "manager-") {
			t.Fatalf("east's pack site: %+v", p)
		}
		if !strings.Contains(list, "site            1.1.0") {
			t.Fatalf("content list on east:\n%s", list)
		}
	})

	t.Run("a site without sync is reported drifted", func(t *testing.T) {
		out := run(mgr, "sites", "sync", "west", "--version-set", "prod")
		t.Logf("drover sites sync west --version-set prod:\n%s", out)
		waitSync(t, mgr, "west", api.SyncDrifted, 20*time.Second, func(st *api.SiteSyncStatus) bool {
			return !st.Enabled && hasDifference(st, "pack site: missing on the site, set wants 1.1.0")
		})
		if packOn(t, west, "site") != nil {
			t.Fatal("west got the pack without sync enabled")
		}
		table := run(mgr, "get", "sites")
		t.Logf("drover get sites:\n%s", table)
		if !strings.Contains(table, "prod         in-sync") || !strings.Contains(table, "prod         drifted (sync off)") {
			t.Fatalf("VERSION SET and SYNC columns:\n%s", table)
		}
		js := run(mgr, "get", "sites", "-o", "json")
		if !strings.Contains(js, `"what": "missing"`) || !strings.Contains(js, `"state": "drifted"`) {
			t.Fatalf("get sites -o json lacks the details:\n%s", js)
		}
	})

	t.Run("a pack changed on the site is restored", func(t *testing.T) {
		out := run(east, "content", "push", v100)
		changed := time.Now()
		t.Logf("drover content push site 1.0.0 (on east, by hand): %s", strings.TrimSpace(out))
		// The hand push has committed: 1.1.0 now is the manager's doing.
		eventually(t, 30*time.Second, "east back at site 1.1.0", func() (bool, string) {
			p := packOn(t, east, "site")
			return p != nil && p.Version == "1.1.0", fmt.Sprintf("%+v", p)
		})
		t.Logf("restored by the manager within %s of the change (polled every 100 ms)", time.Since(changed).Round(10*time.Millisecond))
		p := packOn(t, east, "site")
		if p.Status.PreviousVersion != "1.0.0" || !strings.HasPrefix(p.Status.InstalledBy, "manager-") {
			t.Fatalf("restored pack: %+v", p.Status)
		}
		waitSync(t, mgr, "east", api.SyncInSync, 20*time.Second, func(st *api.SiteSyncStatus) bool { return st.LastPush == "site 1.1.0" })
	})

	t.Run("a refused push fails with the site's reason and is retried when the site changes", func(t *testing.T) {
		run(west, "content", "push", other)
		run(mgr, "sites", "sync", "west", "--enable")
		waitSync(t, mgr, "west", api.SyncFailed, 30*time.Second, func(st *api.SiteSyncStatus) bool {
			return strings.Contains(st.Message, `the site refused site 1.1.0`) && strings.Contains(st.Message, `is already provided by content pack "other"`) &&
				len(st.Unmanaged) == 1 && st.Unmanaged[0] == "other 0.1.0"
		})
		out := run(mgr, "sites", "sync", "west")
		t.Logf("drover sites sync west (refused):\n%s", out)
		if !strings.Contains(out, "Not in the set (left alone): other 0.1.0") {
			t.Fatalf("unmanaged packs not reported:\n%s", out)
		}
		run(west, "content", "remove", "other")
		waitSync(t, mgr, "west", api.SyncInSync, 30*time.Second, nil)
		if p := packOn(t, west, "site"); p == nil || p.Version != "1.1.0" {
			t.Fatalf("west's pack site: %+v", p)
		}
	})

	t.Run("a site cut off is reported and synced after heal", func(t *testing.T) {
		link.Stop()
		waitSync(t, mgr, "east", api.SyncUnknown, 30*time.Second, nil)
		// Both sides keep working: east changes its pack while cut off,
		// and west's change is undone at once.
		run(east, "content", "push", v100)
		run(west, "content", "push", v100)
		eventually(t, 30*time.Second, "west restored while east is cut off", func() (bool, string) {
			p := packOn(t, west, "site")
			return p != nil && p.Version == "1.1.0", fmt.Sprintf("%+v", p)
		})
		table := run(mgr, "get", "sites")
		t.Logf("drover get sites (east cut off):\n%s", table)
		if !strings.Contains(table, "unknown") {
			t.Fatalf("east not reported unknown:\n%s", table)
		}
		if p := packOn(t, east, "site"); p == nil || p.Version != "1.0.0" {
			t.Fatalf("east changed while cut off: %+v", p)
		}
		if err := link.Start(); err != nil {
			t.Fatal(err)
		}
		healed := time.Now()
		eventually(t, 60*time.Second, "east restored after heal", func() (bool, string) {
			p := packOn(t, east, "site")
			return p != nil && p.Version == "1.1.0", fmt.Sprintf("%+v", p)
		})
		t.Logf("east restored %s after the link healed (the mirror reconnects with backoff)", time.Since(healed).Round(10*time.Millisecond))
		waitSync(t, mgr, "east", api.SyncInSync, 30*time.Second, nil)
	})

	t.Run("a version the manager does not hold fails", func(t *testing.T) {
		const want = "the manager holds site 1.0.0, 1.1.0; the version set wants 9.9.9: push it to the manager first"
		// The apply is allowed (the pack may be pushed next) and warns.
		out, errs, err := mgr.cli(fmt.Sprintf("kind: VersionSet\nname: prod\npacks:\n  - {name: drover-default, version: %s}\n  - {name: site, version: 9.9.9}\n", builtin.Version), "apply", "-f", "-")
		if err != nil || !strings.Contains(out, "versionset/prod updated") || !strings.Contains(errs, "warning: versionset/prod: pack site: "+want) {
			t.Fatalf("apply of a set naming 9.9.9: %v %q %q", err, out, errs)
		}
		t.Logf("drover apply (site 9.9.9):\n%s%s", out, errs)
		waitSync(t, mgr, "east", api.SyncFailed, 20*time.Second, func(st *api.SiteSyncStatus) bool { return strings.Contains(st.Message, want) })
		out, _, _ = mgr.cli("", "sites", "sync", "east")
		t.Logf("drover sites sync east (9.9.9 wanted):\n%s", out)
		if !strings.Contains(out, "pack site: site has 1.1.0, set wants 9.9.9") || !strings.Contains(out, want) {
			t.Fatalf("sites sync east:\n%s", out)
		}
		if p := packOn(t, east, "site"); p == nil || p.Version != "1.1.0" {
			t.Fatalf("east's pack changed: %+v", p)
		}
	})

	t.Run("another drover version is drift that is not pushed", func(t *testing.T) {
		mgr.apply(fmt.Sprintf("kind: VersionSet\nname: prod\npacks:\n  - {name: drover-default, version: %s}\n  - {name: site, version: 1.1.0}\ndrover: v9.9.9\n", builtin.Version))
		siteVersion := mgr.sitesOf(t)["east"].Status.Version
		waitSync(t, mgr, "east", api.SyncDrifted, 20*time.Second, func(st *api.SiteSyncStatus) bool {
			return len(st.Differences) == 1 && hasDifference(st, "drover version: site runs "+siteVersion+", set wants v9.9.9") && strings.Contains(st.Message, "binaries cannot")
		})
		out := run(mgr, "sites", "sync", "east")
		t.Logf("drover sites sync east (drover v9.9.9 wanted):\n%s", out)
	})

	t.Run("what is in use cannot be deleted", func(t *testing.T) {
		if _, errs, err := mgr.cli("", "delete", "versionset", "prod"); err == nil || !strings.Contains(errs, "in use by site east, west") {
			t.Fatalf("delete a set in use: %v %q", err, errs)
		}
		if _, errs, err := mgr.cli("", "delete", "packversion", "site@1.1.0"); err == nil || !strings.Contains(errs, "named by version set prod") {
			t.Fatalf("delete a kept version in use: %v %q", err, errs)
		}
		ctx := context.Background()
		var pv api.PackVersion
		if err := mgr.client.Get(ctx, "packversions", "site@1.0.0", &pv); err != nil || pv.Version != "1.0.0" {
			t.Fatalf("kept version: %+v %v", pv, err)
		}
	})
}
