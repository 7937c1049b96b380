package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// Role by label, config drift and verify, with real agents and the
// built-in content pack's config-push and config-verify tasks: a label
// gives a machine a profile; a profile change marks the machines that use
// it drifted; verify says which nodes differ and why; upgrade brings them
// back in sync. The test's own profile selects tier=storage, not
// role=storage, which the built-in pack's role-storage profile selects.
func TestRoleByLabelDriftAndVerify(t *testing.T) {
	s := startSite(t)
	startAgents(s, 3)
	eventually(t, 30*time.Second, "3 machines", func() (bool, string) { return len(s.machines()) == 3, "" })
	root := func(m string) string { return filepath.Join(s.dir, "config-"+m) }
	machineDoc := func(name string, storage bool) string {
		labels := "{}"
		if storage {
			labels = "{tier: storage}"
		}
		return fmt.Sprintf("kind: Machine\nname: %s\nlabels: %s\nparams:\n  config/root: %s\n", name, labels, root(name))
	}
	storageProfile := func(mount string) string {
		return "kind: Profile\nname: storage-nodes\nselector: tier=storage\nparams:\n  role: storage\n  storage/mountpoint: " + mount + "\n"
	}
	s.apply(storageProfile("/srv/storage") + `
---
kind: Workflow
name: configure
tasks: [config-push]
---
` + machineDoc("n01", false) + "---\n" + machineDoc("n02", false) + "---\n" + machineDoc("n03", false))

	cli := func(args ...string) (string, string, error) {
		t.Helper()
		out, errs, err := s.cli("", args...)
		t.Logf("$ drover %s\n%s%s", strings.Join(args, " "), out, errs)
		return out, errs, err
	}
	mustCLI := func(args ...string) string {
		t.Helper()
		out, errs, err := cli(args...)
		if err != nil {
			t.Fatalf("drover %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
		}
		return out
	}

	// A label is enough to change a machine's role.
	out := mustCLI("get", "machine", "n01", "--effective")
	if !strings.Contains(out, `"generic"`) || strings.Contains(out, "storage") {
		t.Errorf("n01 without the label already sees the storage profile:\n%s", out)
	}
	s.apply(machineDoc("n01", true) + "---\n" + machineDoc("n02", true))
	out = mustCLI("get", "machine", "n01", "--effective")
	for _, want := range []string{
		`role                   "storage"          profile storage-nodes (selector tier=storage)`,
		`storage/mountpoint     "/srv/storage"     profile storage-nodes (selector tier=storage)`,
		`config/root            "` + root("n01") + `"`,
	} {
		if !containsFields(out, want) {
			t.Errorf("effective params of n01 lack %q:\n%s", want, out)
		}
	}

	// Configure the nodes: the files hold the params.
	mustCLI("commission", "n[01-03]", "--workflow", "configure", "--wait", "--timeout", "2m")
	mustCLI("deploy", "n[01-03]", "--workflow", "configure", "--wait", "--timeout", "2m")
	env, err := os.ReadFile(filepath.Join(root("n01"), "node.env"))
	if err != nil || !strings.Contains(string(env), "DROVER_STORAGE_MOUNTPOINT='/srv/storage'") {
		t.Fatalf("n01 node.env: %v\n%s", err, env)
	}
	drift := func() map[string]api.MachineStatus {
		out := mustCLIQuiet(t, s, "get", "machines", "-o", "json")
		var list struct{ Items []api.Machine }
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("get machines -o json: %v\n%s", err, out)
		}
		st := map[string]api.MachineStatus{}
		for _, m := range list.Items {
			st[m.Name] = m.Status
		}
		return st
	}
	for n, st := range drift() {
		if st.ConfigDrift || st.AppliedWorkflow != "configure" || !strings.HasPrefix(st.AppliedConfig, "sha256:") {
			t.Errorf("%s after deploy: drift %v, applied %q %q", n, st.ConfigDrift, st.AppliedWorkflow, st.AppliedConfig)
		}
	}

	// The profile changes: its machines drift, the others do not.
	s.apply(storageProfile("/srv/data"))
	eventually(t, 20*time.Second, "n01 and n02 drifted", func() (bool, string) {
		st := drift()
		return st["n01"].ConfigDrift && st["n02"].ConfigDrift, fmt.Sprintf("%+v", st)
	})
	if st := drift()["n03"]; st.ConfigDrift {
		t.Errorf("n03 drifted: %s", st.ConfigDriftReason)
	}
	out = mustCLI("get", "machines")
	if !containsFields(out, "n01 deployed yes") || !strings.Contains(out, "DRIFT") {
		t.Errorf("machines table:\n%s", out)
	}

	// Verify: the nodes still have the old files, and say so.
	out, _, err = cli("verify", "n[01-03]", "--wait", "--timeout", "2m")
	if err == nil {
		t.Error("verify with drifted nodes exited 0")
	}
	for _, want := range []string{
		"n01  drifted",
		"n02  drifted",
		"n03  in-sync",
		"different " + filepath.Join(root("n01"), "node.env"),
		"-DROVER_STORAGE_MOUNTPOINT='/srv/storage'",
		"+DROVER_STORAGE_MOUNTPOINT='/srv/data'",
		"drifted: 1 problem(s) under " + root("n02"),
		"verify: 1 in-sync, 2 drifted",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q", want)
		}
	}
	st := drift()
	for _, n := range []string{"n01", "n02", "n03"} {
		if st[n].State != api.StateDeployed {
			t.Errorf("%s is %s after verify, want deployed", n, st[n].State)
		}
	}
	if lv := st["n01"].LastVerify; lv == nil || lv.Result != api.VerifyDrifted || lv.Job == "" {
		t.Errorf("n01 lastVerify %+v", lv)
	}
	if lv := st["n03"].LastVerify; lv == nil || lv.Result != api.VerifyInSync {
		t.Errorf("n03 lastVerify %+v", lv)
	}
	out = mustCLI("get", "machines")
	if !containsFields(out, "n01 deployed yes") || !strings.Contains(out, " config,node ") {
		t.Errorf("machines table after verify:\n%s", out)
	}

	// n03 becomes a storage node by its label alone: it drifts too.
	s.apply(machineDoc("n03", true))
	eventually(t, 20*time.Second, "n03 drifted", func() (bool, string) {
		st := drift()["n03"]
		return st.ConfigDrift, st.ConfigDriftReason
	})

	// Upgrade applies the configuration again: in sync.
	mustCLI("upgrade", "n[01-03]", "--wait", "--timeout", "2m")
	eventually(t, 20*time.Second, "no drift after upgrade", func() (bool, string) {
		st := drift()
		return !st["n01"].ConfigDrift && !st["n02"].ConfigDrift && !st["n03"].ConfigDrift, fmt.Sprintf("%+v", st)
	})
	if st := drift()["n01"]; st.AppliedWorkflow != "upgrade" || st.LastVerify != nil {
		t.Errorf("n01 after upgrade: applied %s, lastVerify %+v", st.AppliedWorkflow, st.LastVerify)
	}
	out = mustCLI("verify", "n[01-03]", "--wait", "--timeout", "2m")
	for _, want := range []string{"n01  in-sync", "n02  in-sync", "n03  in-sync", "verify: 3 in-sync"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify after upgrade lacks %q", want)
		}
	}
	env, _ = os.ReadFile(filepath.Join(root("n03"), "node.env"))
	if !strings.Contains(string(env), "DROVER_ROLE='storage'") || !strings.Contains(string(env), "/srv/data") {
		t.Errorf("n03 node.env after upgrade:\n%s", env)
	}
}

// containsFields reports whether some line of out holds the
// whitespace-separated fields of want, in order, next to each other.
func containsFields(out, want string) bool {
	w := strings.Join(strings.Fields(want), " ")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(strings.Join(strings.Fields(line), " "), w) {
			return true
		}
	}
	return false
}

func mustCLIQuiet(t *testing.T, s *site, args ...string) string {
	t.Helper()
	out, errs, err := s.cli("", args...)
	if err != nil {
		t.Fatalf("drover %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
	}
	return out
}
