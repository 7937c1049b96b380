package e2e

import (
	packs "github.com/drover-project/drover/internal/content"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// tree lists every path under dir with its mode and, for files, content,
// so two calls can be compared.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return nil
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := p + " " + fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// The built-in pack does the job on real agents: commission pushes each
// node's managed files, verify finds them in sync, a changed file is
// reported drifted, decommission leaves the node exactly as before. A
// user's pack is installed, overrides survive and a broken pack changes
// nothing.
func TestBuiltinContentOnRealAgents(t *testing.T) {
	s := startSite(t)
	nodes := []string{"c1", "c2", "c3"}
	parent := filepath.Join(s.dir, "nodes")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	// One node's root exists before commission, with a file of its own:
	// cleanup must keep both.
	pre := filepath.Join(parent, "c3")
	if err := os.MkdirAll(pre, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pre, "keep-me"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := tree(t, parent)
	for _, n := range nodes {
		s.startAgent(n)
	}
	eventually(t, 30*time.Second, "3 machines registered", func() (bool, string) {
		ms := s.machines()
		return len(ms) == 3, ""
	})
	// Each node gets its own config root (they share this host).
	var doc strings.Builder
	for _, n := range nodes {
		doc.WriteString("kind: Machine\nname: " + n + "\nparams:\n  config/root: " + filepath.Join(parent, n) + "\n---\n")
	}
	s.apply(doc.String())

	out, errs, err := s.cli("", "content", "list")
	if err != nil || !strings.Contains(out, "drover-default") || !strings.Contains(out, "built in") {
		t.Fatalf("content list: %v %s %s", err, out, errs)
	}
	out, _, _ = s.cli("", "get", "workflows")
	if !strings.Contains(out, "SOURCE") || !strings.Contains(out, "drover-default@"+packs.Default().Version) {
		t.Fatalf("get workflows does not show where they come from:\n%s", out)
	}

	if out, errs, err := s.cli("", "commission", "c[1-3]", "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("commission: %v\n%s\n%s", err, out, errs)
	}
	for _, n := range nodes {
		for _, f := range []string{"node.env", "role", ".drover-manifest"} {
			if _, err := os.Stat(filepath.Join(parent, n, f)); err != nil {
				t.Errorf("after commission %s lacks %s: %v", n, f, err)
			}
		}
	}
	if out, errs, err := s.cli("", "verify", "c[1-3]", "--wait", "--timeout", "2m"); err != nil {
		t.Fatalf("verify of freshly commissioned nodes: %v\n%s\n%s", err, out, errs)
	}
	// Tamper with one node's file: verify says so and names it.
	if err := os.WriteFile(filepath.Join(parent, "c2", "role"), []byte("hacked\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, err = s.cli("", "verify", "c2", "--wait", "--timeout", "2m")
	if err == nil {
		t.Fatalf("verify of a tampered node succeeded:\n%s\n%s", out, errs)
	}
	logs, _, _ := s.cli("", "logs", lastJob(t, s, "c2"))
	if !strings.Contains(logs, "drifted") || !strings.Contains(logs, "role") {
		t.Fatalf("verify log does not say what drifted:\n%s", logs)
	}

	if out, errs, err := s.cli("", "decommission", "c[1-3]", "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("decommission: %v\n%s\n%s", err, out, errs)
	}
	if after := tree(t, parent); after != before {
		t.Fatalf("decommission did not leave the nodes as they were.\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// A user's pack: a broken one changes nothing and names file and line.
	pack := filepath.Join(s.dir, "site-pack")
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(pack, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pack.yaml", "name: site\nversion: 1.0.0\nrequires: [{name: drover-default, version: ^1.0.0}]\n")
	write("tasks/hello.yaml", "kind: Task\nname: hello\nscript: |\n  echo hello\n  echo {{ param \"role\" }\n")
	write("workflows.yaml", "kind: Workflow\nname: site\ntasks: [inventory, hello, nope]\n")
	rev := s.revision(t)
	_, errs, err = s.cli("", "content", "push", pack)
	if err == nil {
		t.Fatal("a broken pack was pushed")
	}
	for _, want := range []string{"tasks/hello.yaml:5", "workflows.yaml:3", `"nope"`} {
		if !strings.Contains(errs, want) {
			t.Errorf("push error does not say %q:\n%s", want, errs)
		}
	}
	if s.revision(t) != rev {
		t.Fatal("a refused pack changed the store")
	}
	write("tasks/hello.yaml", "kind: Task\nname: hello\nscript: |\n  echo hello {{ param \"role\" }}\n")
	write("workflows.yaml", "kind: Workflow\nname: site\ntasks: [inventory, hello]\n")
	out, errs, err = s.cli("", "content", "push", pack)
	if err != nil || !strings.Contains(out, "site 1.0.0 installed") {
		t.Fatalf("push: %v %s %s", err, out, errs)
	}
	out, errs, err = s.cli("", "content", "remove", "drover-default")
	if err == nil || !strings.Contains(errs, `content pack "site" requires it`) || !strings.Contains(errs, `Workflow "site" uses Task "inventory"`) {
		t.Fatalf("removing a required pack: %v %s %s", err, out, errs)
	}
	out, _, _ = s.cli("", "content", "show", "site")
	if !strings.Contains(out, "tasks/hello.yaml:1") {
		t.Fatalf("content show:\n%s", out)
	}
}

// lastJob is the most recent job of a machine.
func lastJob(t *testing.T, s *site, machine string) string {
	t.Helper()
	jobs := s.jobs("machine=" + machine)
	if len(jobs) == 0 {
		t.Fatalf("no jobs for %s", machine)
	}
	last := jobs[0]
	for _, j := range jobs {
		if j.CreateRevision > last.CreateRevision {
			last = j
		}
	}
	return last.Name
}
