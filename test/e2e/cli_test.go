package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

func (s *site) revision(t *testing.T) int64 {
	t.Helper()
	l, err := s.client.List(context.Background(), "tasks", "")
	if err != nil {
		t.Fatal(err)
	}
	return l.Revision
}

func TestCLI(t *testing.T) {
	s := startSite(t)
	cfg := filepath.Join(s.dir, "login.json")
	run := func(stdin string, env []string, args ...string) (string, string, error) {
		cmd := exec.Command(droverBin, args...)
		cmd.Env = append(os.Environ(), append([]string{"DROVER_CONFIG=" + cfg, "DROVER_ENDPOINT=", "DROVER_TOKEN=", "DROVER_CA_CERT="}, env...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return o.String(), e.String(), err
	}

	t.Run("login saves the session", func(t *testing.T) {
		_, errs, err := run("wrong-password\n", nil, "login", "--endpoint", s.endpoint, "--ca-cert", s.caFile, "-u", "admin", "--password-stdin")
		if err == nil || !strings.Contains(errs, "wrong username or password") {
			t.Fatalf("bad password accepted or unclear: %v %q", err, errs)
		}
		out, errs, err := run(s.password+"\n", nil, "login", "--endpoint", s.endpoint, "--ca-cert", s.caFile, "-u", "admin", "--password-stdin")
		if err != nil || !strings.Contains(out, "Logged in") {
			t.Fatalf("login: %v %s %s", err, out, errs)
		}
		if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("config file: %v %v", fi, err)
		}
		// Later commands need nothing else.
		if _, errs, err := run("", nil, "get", "tasks"); err != nil {
			t.Fatalf("get with saved login: %v %s", err, errs)
		}
	})

	t.Run("not logged in is a clear error", func(t *testing.T) {
		_, errs, err := run("", []string{"DROVER_CONFIG=" + filepath.Join(s.dir, "none.json"), "DROVER_ENDPOINT=" + s.endpoint, "DROVER_CA_CERT=" + s.caFile}, "get", "machines")
		if err == nil || !strings.Contains(errs, "not logged in") {
			t.Fatalf("%v %q", err, errs)
		}
		_, errs, err = run("", []string{"DROVER_CONFIG=" + filepath.Join(s.dir, "none.json"), "DROVER_ENDPOINT=" + s.endpoint, "DROVER_TOKEN=drs_0123456789abcdef_nope"}, "get", "machines")
		if err == nil || !strings.Contains(errs, "certificate is not signed by a trusted CA") {
			t.Fatalf("untrusted CA: %v %q", err, errs)
		}
	})

	bad := []struct{ name, doc, want string }{
		{"unknown field", "kind: Task\nname: t1\nscirpt: echo\n", `unknown field "scirpt"`},
		{"unknown kind", "kind: Tsak\nname: t1\n", `unknown kind "Tsak"`},
		{"bad yaml", "kind: Task\nname: [t1\n", "invalid YAML"},
		{"bad template in doc 2", "kind: Task\nname: good\nscript: echo ok\n---\nkind: Task\nname: broken\nscript: 'echo {{ .Machine.Name '\n", `document 2 (line 7) Task "broken", field script: bad template`},
		{"bad timeout", "kind: Task\nname: t2\nscript: echo\ntimeout: soon\n", "field timeout"},
		{"bad name", "kind: Task\nname: -x-\nscript: echo\n", "invalid name"},
	}
	for _, tc := range bad {
		t.Run("apply refuses "+tc.name, func(t *testing.T) {
			before := s.revision(t)
			_, errs, err := run(tc.doc, nil, "apply", "-f", "-")
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(errs, tc.want) || !strings.Contains(errs, "nothing was applied") {
				t.Errorf("error %q does not say %q", errs, tc.want)
			}
			if after := s.revision(t); after != before {
				t.Errorf("revision moved from %d to %d: something was written", before, after)
			}
		})
	}

	t.Run("apply get delete", func(t *testing.T) {
		out, errs, err := run("kind: Task\nname: hello\nlabels: {team: ops}\nscript: echo hello\n---\nkind: Workflow\nname: hello\ntasks: [hello]\n", nil, "apply", "-f", "-")
		if err != nil || !strings.Contains(out, "task/hello created") || !strings.Contains(out, "workflow/hello created") {
			t.Fatalf("%v %s %s", err, out, errs)
		}
		out, _, _ = run("kind: Task\nname: hello\nlabels: {team: ops}\nscript: echo hello\n", nil, "apply", "-f", "-")
		if !strings.Contains(out, "task/hello unchanged") {
			t.Errorf("re-apply: %s", out)
		}
		out, _, err = run("", nil, "get", "tasks", "-l", "team=ops", "-o", "json")
		var l api.List
		if err != nil || json.Unmarshal([]byte(out), &l) != nil || len(l.Items) != 1 {
			t.Fatalf("get -o json: %v %s", err, out)
		}
		out, _, err = run("", nil, "get", "task", "hello", "-o", "yaml")
		if err != nil || !strings.Contains(out, "script: echo hello") || !strings.Contains(out, "revision:") {
			t.Errorf("get -o yaml: %v %s", err, out)
		}
		out, _, err = run("", nil, "get", "tasks")
		if err != nil || !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "hello") {
			t.Errorf("table: %v %q", err, out)
		}
		if _, errs, err := run("", nil, "delete", "task", "hello"); err != nil {
			t.Errorf("delete: %v %s", err, errs)
		}
		if _, errs, err := run("", nil, "get", "task", "hello"); err == nil || !strings.Contains(errs, `Task "hello" not found`) {
			t.Errorf("get deleted: %v %q", err, errs)
		}
	})

	t.Run("join token, agent, logs -f, watch", func(t *testing.T) {
		tok, errs, err := run("", nil, "join-token", "create", "--ttl", "10m")
		tok = strings.TrimSpace(tok)
		if err != nil || !strings.HasPrefix(tok, "drj_") {
			t.Fatalf("join-token: %v %q %s", err, tok, errs)
		}
		s.joinTok = tok
		watch := exec.Command(droverBin, "machines", "watch")
		watch.Env = append(os.Environ(), "DROVER_CONFIG="+cfg, "DROVER_ENDPOINT=", "DROVER_TOKEN=")
		var wout bytes.Buffer
		watch.Stdout, watch.Stderr = &wout, &wout
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
		s.startAgent("w1")
		if _, errs, err := run("kind: Task\nname: count\nscript: |\n  for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done\n---\nkind: Workflow\nname: count\ntasks: [count]\n", nil, "apply", "-f", "-"); err != nil {
			t.Fatal(errs)
		}
		eventually(t, 20*time.Second, "w1 registered", func() (bool, string) { return len(s.machines()) == 1, "" })
		if _, errs, err := run("", nil, "commission", "w1", "--workflow", "count"); err != nil {
			t.Fatal(errs)
		}
		var job string
		eventually(t, 10*time.Second, "job exists", func() (bool, string) {
			js := s.jobs("machine=w1")
			if len(js) == 1 {
				job = js[0].Name
			}
			return job != "", ""
		})
		start := time.Now()
		out, errs, err := run("", nil, "logs", "-f", job)
		if err != nil {
			t.Fatalf("logs -f: %v %s", err, errs)
		}
		if !strings.Contains(out, "line 1\n") || !strings.Contains(out, "line 5\n") {
			t.Errorf("logs -f output %q", out)
		}
		if time.Since(start) < 500*time.Millisecond {
			t.Logf("logs -f returned after %s (job may have been nearly done)", time.Since(start))
		}
		eventually(t, 10*time.Second, "watch shows w1 ready", func() (bool, string) {
			return strings.Contains(wout.String(), "w1") && strings.Contains(wout.String(), "ready"), wout.String()
		})
		// A bad node range is refused, naming the problem.
		if _, errs, err := run("", nil, "commission", "w[1-"); err == nil || !strings.Contains(errs, `node range "w[1-": at 5: expected a number`) {
			t.Errorf("bad range: %v %q", err, errs)
		}
		if _, errs, err := run("", nil, "commission", "w1,w9"); err == nil || !strings.Contains(errs, "w9") {
			t.Errorf("unknown node: %v %q", err, errs)
		}
	})
}
