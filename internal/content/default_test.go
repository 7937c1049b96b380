package content

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/render"
)

func TestDefaultPack(t *testing.T) {
	p := Default()
	if p.Name != DefaultName || p.Version != "1.2.0" {
		t.Errorf("header %+v", p.Header)
	}
	if err := p.Validate(nil); err != nil {
		t.Fatal(err)
	}
	wantWorkflows := map[string][]string{
		"commission":   {"inventory", "burnin-smoke", "config-push"},
		"verify":       {"config-verify"},
		"upgrade":      {"config-push", "config-verify"},
		"decommission": {"config-cleanup"},
	}
	for name, tasks := range wantWorkflows {
		o := p.Find(api.KindWorkflow, name)
		if o == nil {
			t.Errorf("no workflow %s", name)
			continue
		}
		obj, _ := o.Decode()
		if got := obj.(*api.Workflow).Tasks; !reflect.DeepEqual(got, tasks) {
			t.Errorf("workflow %s tasks = %v, want %v", name, got, tasks)
		}
		// Each lifecycle action's param defaults to its workflow.
		po := p.Find(api.KindParam, name+"/workflow")
		if po == nil {
			t.Errorf("no param %s/workflow", name)
			continue
		}
		obj, _ = po.Decode()
		if d := string(obj.(*api.Param).Default); d != `"`+name+`"` {
			t.Errorf("param %s/workflow defaults to %s", name, d)
		}
	}
	for _, name := range []string{"role", "config/root"} {
		if p.Find(api.KindParam, name) == nil {
			t.Errorf("no param %s", name)
		}
	}
	if p.Find(api.KindProfile, "role-storage") == nil {
		t.Error("no profile role-storage")
	}
}

// nodeRunner renders the default pack's tasks for a machine and runs them
// with sh, as the agent does.
type nodeRunner struct {
	t       *testing.T
	pack    *Pack
	in      *render.Input
	workDir string
	tmpDir  string // TMPDIR of the scripts
	env     []string
}

func newNodeRunner(t *testing.T, p *Pack, machine *api.Machine) *nodeRunner {
	t.Helper()
	in := &render.Input{Machine: machine, Profiles: map[string]*api.Profile{}, Params: map[string]*api.Param{}, Templates: map[string]*api.Template{}}
	for i := range p.Objects {
		obj, err := p.Objects[i].Decode()
		if err != nil {
			t.Fatal(err)
		}
		switch o := obj.(type) {
		case *api.Profile:
			in.Profiles[o.Name] = o
		case *api.Param:
			in.Params[o.Name] = o
		case *api.Template:
			in.Templates[o.Name] = o
		}
	}
	tmp := t.TempDir()
	return &nodeRunner{t: t, pack: p, in: in, workDir: t.TempDir(), tmpDir: tmp, env: append(os.Environ(), "TMPDIR="+tmp)}
}

// workflow runs a workflow's tasks in order and stops at the first that
// fails; it returns their output and the exit code of the last one run.
func (r *nodeRunner) workflow(name string) (string, int) {
	r.t.Helper()
	wf := r.pack.Find(api.KindWorkflow, name)
	if wf == nil {
		r.t.Fatalf("no workflow %s", name)
	}
	obj, _ := wf.Decode()
	var out strings.Builder
	for _, task := range obj.(*api.Workflow).Tasks {
		o, code := r.task(task)
		out.WriteString(o)
		if code != 0 {
			return out.String(), code
		}
	}
	return out.String(), 0
}

func (r *nodeRunner) task(name string) (string, int) {
	r.t.Helper()
	to := r.pack.Find(api.KindTask, name)
	if to == nil {
		r.t.Fatalf("no task %s", name)
	}
	obj, _ := to.Decode()
	task := obj.(*api.Task)
	script, err := render.Render(r.in, "task "+name, task.Script)
	if err != nil {
		r.t.Fatalf("render %s: %v", name, err)
	}
	file := filepath.Join(r.workDir, "script")
	if err := os.WriteFile(file, []byte(script), 0o700); err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command("sh", file)
	cmd.Dir = r.workDir
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	r.t.Fatalf("run %s: %v", name, err)
	return "", -1
}

// tree lists every file and directory under dir with its type, mode and
// content hash.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		entry := rel + " " + info.Mode().String()
		if d.Type().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			entry += " " + hex.EncodeToString(sum[:8])
		}
		out = append(out, entry)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output does not hold %q:\n%s", what, w, out)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func rawJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// The default pack's scripts, run for real: commission, verify, drift,
// upgrade, decommission, and the node is left as it was.
func TestDefaultPackScriptsLifecycle(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Fatal("these tests run the default pack's scripts with sh:", err)
	}
	base := t.TempDir()
	// A root that does not exist yet, two levels deep, with a space and a
	// quote in its path: config-push creates it and cleanup removes it.
	root := filepath.Join(base, "it's etc", "drover")
	machine := &api.Machine{
		Meta:     api.Meta{Kind: api.KindMachine, Name: "n1"},
		Profiles: []string{"role-storage"},
		Params:   map[string]json.RawMessage{"config/root": rawJSON(root)},
		Status:   api.MachineStatus{Inventory: &api.Inventory{CPUs: 4, MemoryBytes: 8 << 30, Disks: []api.Disk{{Name: "sda"}, {Name: "sdb"}}}},
	}
	r := newNodeRunner(t, Default(), machine)
	before := tree(t, base)
	tmpBefore := tree(t, r.tmpDir)

	out, code := r.workflow("commission")
	if code != 0 {
		t.Fatalf("commission failed (%d):\n%s", code, out)
	}
	mustContain(t, "commission", out,
		"machine: n1", "registered with: 4 CPUs, 8589934592 bytes of memory, 2 disks", "cpus: ", "memory: ", "disks:", "network interfaces:",
		"burnin-smoke: passed",
		"created "+root+"/node.env", "created "+root+"/role", "config-push: 2 files under "+root)
	env := readFile(t, filepath.Join(root, "node.env"))
	mustContain(t, "node.env", env, "DROVER_MACHINE='n1'\n", "DROVER_ROLE='storage'\n", "DROVER_STORAGE_MOUNTPOINT='/srv/storage'\n")
	if role := readFile(t, filepath.Join(root, "role")); role != "storage\n" {
		t.Errorf("role file = %q", role)
	}
	manifest := readFile(t, filepath.Join(root, ".drover-manifest"))
	mustContain(t, "manifest", manifest, "root-existed no\n", "created-dir "+root+"\n", "created-dir "+filepath.Dir(root)+"\n", "file node.env\nfile role\n")

	out, code = r.workflow("verify")
	if code != 0 || !strings.Contains(out, "in-sync") {
		t.Fatalf("verify after commission (%d):\n%s", code, out)
	}

	// Upgrade is idempotent: nothing to write.
	pushed := tree(t, base)
	out, code = r.workflow("upgrade")
	if code != 0 {
		t.Fatalf("upgrade (%d):\n%s", code, out)
	}
	mustContain(t, "upgrade", out, "unchanged "+root+"/node.env", "unchanged "+root+"/role", "in-sync")
	if after := tree(t, base); !reflect.DeepEqual(after, pushed) {
		t.Errorf("an upgrade with nothing to change changed files:\nbefore %v\nafter  %v", pushed, after)
	}

	// A file changed on the node: verify says drifted, which file and how.
	if err := os.WriteFile(filepath.Join(root, "node.env"), []byte(strings.Replace(env, "storage", "compute", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = r.workflow("verify")
	if code == 0 {
		t.Errorf("verify of a changed file exited 0:\n%s", out)
	}
	mustContain(t, "verify after a change", out, "drifted", "different "+root+"/node.env", "-DROVER_ROLE='compute'", "+DROVER_ROLE='storage'")
	// A file removed: named too.
	if err := os.Remove(filepath.Join(root, "role")); err != nil {
		t.Fatal(err)
	}
	out, code = r.workflow("verify")
	if code == 0 {
		t.Errorf("verify of a removed file exited 0:\n%s", out)
	}
	mustContain(t, "verify after a removal", out, "missing "+root+"/role", "drifted: 2 problem(s)")

	// A param changed in drover: the node drifts until upgrade.
	r.in.Machine.Params["role"] = rawJSON("storage-hot")
	out, code = r.workflow("upgrade")
	if code != 0 {
		t.Fatalf("upgrade after drift (%d):\n%s", code, out)
	}
	mustContain(t, "upgrade after drift", out, "updated "+root+"/node.env", "created "+root+"/role", "in-sync")
	if role := readFile(t, filepath.Join(root, "role")); role != "storage-hot\n" {
		t.Errorf("role after upgrade = %q", role)
	}

	// A file the manifest lists that is no longer managed: verify names
	// it; upgrade removes it.
	stale := filepath.Join(root, "old.conf")
	if err := os.WriteFile(stale, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mpath := filepath.Join(root, ".drover-manifest")
	if err := os.WriteFile(mpath, []byte(readFile(t, mpath)+"file old.conf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = r.workflow("verify")
	if code == 0 {
		t.Errorf("verify with a stale file exited 0:\n%s", out)
	}
	mustContain(t, "verify with a stale file", out, root+"/old.conf is listed in the manifest but no longer managed")
	out, code = r.workflow("upgrade")
	if code != 0 {
		t.Fatalf("upgrade with a stale file (%d):\n%s", code, out)
	}
	mustContain(t, "upgrade with a stale file", out, "removed "+stale+" (no longer managed)", "in-sync")
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale file still there: %v", err)
	}
	// The manifest still says drover created the root.
	mustContain(t, "manifest after upgrades", readFile(t, mpath), "root-existed no\n", "created-dir "+root+"\n")

	out, code = r.workflow("decommission")
	if code != 0 {
		t.Fatalf("decommission (%d):\n%s", code, out)
	}
	mustContain(t, "decommission", out, "removed "+root+"/node.env", "removed "+root+"/", "removed "+filepath.Dir(root)+"/")
	if after := tree(t, base); !reflect.DeepEqual(after, before) {
		t.Errorf("decommission did not leave the node as before:\nbefore %v\nafter  %v", before, after)
	}
	if after := tree(t, r.tmpDir); !reflect.DeepEqual(after, tmpBefore) {
		t.Errorf("the scripts left temporary files: %v", after)
	}
	// Again: nothing to do, still fine.
	out, code = r.workflow("decommission")
	if code != 0 || !strings.Contains(out, "nothing to remove") {
		t.Errorf("second decommission (%d):\n%s", code, out)
	}
	out, code = r.workflow("verify")
	if code == 0 || !strings.Contains(out, "missing "+root+"/.drover-manifest") {
		t.Errorf("verify of a decommissioned node (%d):\n%s", code, out)
	}
}

// A root that existed before commission, with files of its own: they are
// kept, the root is kept, and a file drover did not write is never
// overwritten.
func TestDefaultPackScriptsExistingRoot(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "etc")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "hosts"), []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	machine := &api.Machine{
		Meta:   api.Meta{Kind: api.KindMachine, Name: "n2"},
		Params: map[string]json.RawMessage{"config/root": rawJSON(root)},
	}
	r := newNodeRunner(t, Default(), machine)
	before := tree(t, base)

	out, code := r.task("config-push")
	if code != 0 {
		t.Fatalf("config-push (%d):\n%s", code, out)
	}
	env := readFile(t, filepath.Join(root, "node.env"))
	mustContain(t, "node.env", env, "DROVER_MACHINE='n2'\n", "DROVER_ROLE='generic'\n")
	if strings.Contains(env, "STORAGE") {
		t.Errorf("node.env of a machine without storage/mountpoint:\n%s", env)
	}
	mustContain(t, "manifest", readFile(t, filepath.Join(root, ".drover-manifest")), "root-existed yes\n")
	if out, code := r.task("config-verify"); code != 0 {
		t.Fatalf("config-verify (%d):\n%s", code, out)
	}
	// Files of its own under the root do not count as drift.
	if err := os.WriteFile(filepath.Join(root, "fstab"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := r.task("config-verify"); code != 0 {
		t.Errorf("config-verify with an unmanaged file beside (%d):\n%s", code, out)
	}
	if err := os.Remove(filepath.Join(root, "fstab")); err != nil {
		t.Fatal(err)
	}
	out, code = r.task("config-cleanup")
	if code != 0 {
		t.Fatalf("config-cleanup (%d):\n%s", code, out)
	}
	if after := tree(t, base); !reflect.DeepEqual(after, before) {
		t.Errorf("cleanup did not restore the root:\nbefore %v\nafter  %v", before, after)
	}

	// A file with a managed name that drover did not write: push refuses
	// and changes nothing.
	if err := os.WriteFile(filepath.Join(root, "role"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before = tree(t, base)
	out, code = r.task("config-push")
	if code == 0 {
		t.Errorf("config-push overwrote a file it did not write:\n%s", out)
	}
	mustContain(t, "refused push", out, root+"/role exists and drover did not write it")
	if after := tree(t, base); !reflect.DeepEqual(after, before) {
		t.Errorf("a refused push changed files:\nbefore %v\nafter  %v", before, after)
	}
}

// Values are quoted for the shell: a param cannot run commands on the node
// through the scripts, and its exact value reaches the files.
func TestDefaultPackScriptsQuoteParams(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "cfg")
	marker := filepath.Join(base, "pwned")
	evil := "/srv/x'; touch " + marker + "; echo '$(touch " + marker + ")`touch " + marker + "`\nDROVER_EOF\n"
	machine := &api.Machine{
		Meta:     api.Meta{Kind: api.KindMachine, Name: "n3"},
		Profiles: []string{"role-storage"},
		Params:   map[string]json.RawMessage{"config/root": rawJSON(root), "storage/mountpoint": rawJSON(evil)},
	}
	r := newNodeRunner(t, Default(), machine)
	for _, task := range []string{"config-push", "config-verify", "config-cleanup"} {
		if out, code := r.task(task); code != 0 {
			t.Fatalf("%s (%d):\n%s", task, code, out)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s ran a command from a param value", task)
		}
	}
	r.task("config-push")
	env := readFile(t, filepath.Join(root, "node.env"))
	// Sourcing node.env gives back the exact value.
	cmd := exec.Command("sh", "-c", `. "$1" && printf '%s' "$DROVER_STORAGE_MOUNTPOINT"`, "sh", filepath.Join(root, "node.env"))
	got, err := cmd.Output()
	if err != nil || string(got) != evil {
		t.Errorf("sourcing node.env gives %q (%v), want %q; node.env:\n%s", got, err, evil, env)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("sourcing node.env ran a command")
	}
}

// A root of / or a relative path is refused before anything is written.
func TestDefaultPackScriptsRefuseBadRoot(t *testing.T) {
	for _, root := range []string{"/", "//", "relative/dir", ""} {
		machine := &api.Machine{Meta: api.Meta{Name: "n4"}, Params: map[string]json.RawMessage{"config/root": rawJSON(root)}}
		r := newNodeRunner(t, Default(), machine)
		for _, task := range []string{"config-push", "config-verify", "config-cleanup"} {
			out, code := r.task(task)
			if code == 0 || !strings.Contains(out, "param config/root must be an absolute directory other than /") {
				t.Errorf("%s with root %q (%d):\n%s", task, root, code, out)
			}
		}
	}
}
