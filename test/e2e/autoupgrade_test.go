package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// sitePack writes a content pack that configures nodes with one file whose
// content is the pack's version; fail names a machine whose configuration
// fails.
func sitePack(t *testing.T, dir, version, fail string) {
	t.Helper()
	files := map[string]string{
		"pack.yaml": "name: site\nversion: " + version + "\nrequires: [{name: drover-default, version: ^1.0.0}]\n",
		"site.yaml": `kind: Task
name: site-config
script: |
  set -e
  root={{ param "config/root" | shellQuote }}
  if [ {{ .Machine.Name | shellQuote }} = ` + fmt.Sprintf("%q", fail) + ` ]; then
    echo "site-config refuses this machine on purpose" >&2
    exit 3
  fi
  mkdir -p "$root"
  sleep 1
  echo ` + version + ` > "$root/site-version"
---
kind: Workflow
name: site-deploy
tasks: [config-push, site-config]
---
kind: Workflow
name: site-upgrade
tasks: [config-push, site-config]
---
kind: Profile
name: site
selector: e2e=yes
params:
  deploy/workflow: site-deploy
  upgrade/workflow: site-upgrade
`,
	}
	for name, body := range files {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runsAtOnce is the most runs in progress at one time.
func runsAtOnce(runs []api.Run) int {
	ivs := make([]interval, 0, len(runs))
	for _, r := range runs {
		end := time.Now()
		if r.FinishedAt != nil {
			end = *r.FinishedAt
		}
		ivs = append(ivs, interval{machine: r.Machine, start: float64(r.StartedAt.UnixNano()) / 1e9, end: float64(end.UnixNano()) / 1e9})
	}
	return maxOverlap(ivs)
}

// Issue 3's scenario: pack v1 configures 10 deployed machines; with an
// auto-upgrade policy (max 2 unavailable), pushing v2 upgrades all of them
// in a rolling way; a v3 that fails on one machine stops the rollout after
// one failure, naming it.
func TestPackUpgradeRollsOut(t *testing.T) {
	s := startSite(t)
	const n = 10
	parent := filepath.Join(s.dir, "nodes")
	var names []string
	var machines strings.Builder
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("u%02d", i)
		names = append(names, name)
		s.startAgent(name)
		fmt.Fprintf(&machines, "kind: Machine\nname: %s\nlabels: {e2e: \"yes\"}\nparams:\n  config/root: %s\n---\n", name, filepath.Join(parent, name))
	}
	eventually(t, 60*time.Second, "10 machines registered", func() (bool, string) {
		return len(s.machines()) == n, ""
	})
	s.apply(machines.String())
	pack := filepath.Join(s.dir, "site-pack")
	sitePack(t, pack, "1.0.0", "")
	if out, errs, err := s.cli("", "content", "push", pack); err != nil {
		t.Fatalf("push v1: %v %s %s", err, out, errs)
	}
	for _, action := range []string{"commission", "deploy"} {
		if out, errs, err := s.cli("", action, "u[01-10]", "--wait", "--timeout", "5m"); err != nil {
			t.Fatalf("%s: %v\n%s\n%s", action, err, out, errs)
		}
	}
	version := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(parent, name, "site-version"))
		return strings.TrimSpace(string(b))
	}
	for _, name := range names {
		if v := version(name); v != "1.0.0" {
			t.Fatalf("%s configured with %q after deploy, want 1.0.0", name, v)
		}
	}

	s.apply(`kind: Policy
name: follow-site
type: auto-upgrade
selector: e2e=yes
batchSize: 2
maxUnavailable: 2
maxFailures: 1
`)
	sitePack(t, pack, "2.0.0", "")
	if out, errs, err := s.cli("", "content", "push", pack); err != nil || !strings.Contains(out, "upgraded 1.0.0 -> 2.0.0") {
		t.Fatalf("push v2: %v %s %s", err, out, errs)
	}
	eventually(t, 5*time.Minute, "all 10 on v2 and deployed", func() (bool, string) {
		var behind []string
		for _, m := range s.machines() {
			if v := version(m.Name); v != "2.0.0" || m.Status.State != api.StateDeployed || m.Status.ConfigDrift {
				behind = append(behind, fmt.Sprintf("%s(%s,%s,drift=%v)", m.Name, v, m.Status.State, m.Status.ConfigDrift))
			}
		}
		return len(behind) == 0, strings.Join(behind, " ")
	})
	upgrades := s.runs("action=upgrade")
	if len(upgrades) != n {
		t.Fatalf("%d upgrade runs, want %d (one per machine)", len(upgrades), n)
	}
	if most := runsAtOnce(upgrades); most > 2 {
		t.Fatalf("%d machines upgraded at once, the policy allows 2", most)
	}

	// v3 breaks on u05: the rollout stops after one failure and says so.
	sitePack(t, pack, "3.0.0", "u05")
	if out, errs, err := s.cli("", "content", "push", pack); err != nil {
		t.Fatalf("push v3: %v %s %s", err, out, errs)
	}
	var stopped string
	eventually(t, 5*time.Minute, "the v3 rollout stopped on u05", func() (bool, string) {
		out, _, err := s.cli("", "rollouts", "list")
		if err != nil {
			return false, err.Error()
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "paused") {
				stopped = strings.Fields(line)[0]
				return true, ""
			}
		}
		return false, out
	})
	out, _, _ := s.cli("", "rollouts", "show", stopped)
	if !strings.Contains(out, "u05") {
		t.Fatalf("stopped rollout does not name u05:\n%s", out)
	}
	time.Sleep(3 * time.Second) // nothing new starts once stopped
	var v2Last int64
	for _, r := range upgrades {
		v2Last = max(v2Last, r.CreateRevision)
	}
	var v3 []api.Run
	var failed *api.Run
	for _, r := range s.runs("action=upgrade") {
		if r.CreateRevision > v2Last {
			v3 = append(v3, r)
			if r.Machine == "u05" {
				failed = &r
			}
		}
	}
	if failed == nil || failed.State != api.RunFailed || failed.FinishedAt == nil {
		t.Fatalf("u05's v3 upgrade: %+v", failed)
	}
	for _, r := range v3 {
		if r.StartedAt.After(*failed.FinishedAt) {
			t.Errorf("%s started after u05 failed and the rollout stopped", r.Name)
		}
		if r.Machine > "u06" {
			t.Errorf("%s: a batch after the failing one started", r.Name)
		}
	}
	if most := runsAtOnce(v3); most > 2 {
		t.Errorf("%d v3 upgrades at once, the policy allows 2", most)
	}
}
