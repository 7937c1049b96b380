package server

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/agent"
	"github.com/drover-project/drover/internal/inventory"
)

// runAgents starts real agents (the agent package, in this process) and
// waits until they poll.
func (e *env) runAgents(exec agent.Executor, names ...string) {
	e.t.Helper()
	jt, err := e.admin.CreateJoinToken(context.Background(), "1h", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, name := range names {
		a, err := agent.New(agent.Config{
			Endpoint: e.url, CAPEM: e.srv.CACertPEM(), JoinToken: jt.Token,
			StateDir: filepath.Join(e.t.TempDir(), name), Name: name, Executor: exec,
			Inventory: func(context.Context) (api.Inventory, error) { return inventory.Simulated(name, i), nil },
			Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			e.t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = a.Run(ctx)
		}()
	}
	e.t.Cleanup(func() {
		stop()
		wg.Wait()
	})
	waitFor(e.t, "agents polling", 20*time.Second, func() bool {
		for _, n := range names {
			if !e.srv.cmds.Connected(n) {
				return false
			}
		}
		return true
	})
}

// run collects a run's lines by node.
func run(t *testing.T, c *api.Client, req api.RunRequest) (map[string]api.RunLine, []api.RunLine, error) {
	t.Helper()
	byNode := map[string]api.RunLine{}
	var all []api.RunLine
	err := c.Run(context.Background(), req, func(l api.RunLine) error {
		all = append(all, l)
		if l.Type == api.RunLineResult {
			byNode[l.Node] = l
		}
		return nil
	})
	return byNode, all, err
}

func TestRunCommandOnAgents(t *testing.T) {
	e := startServer(t, nil)
	e.runAgents(nil, "n1", "n2", "n3")
	res, all, err := run(t, e.admin, api.RunRequest{Nodes: "n[1-3]", Argv: []string{"sh", "-c", `echo "$DROVER_MACHINE"; echo oops >&2; [ "$DROVER_MACHINE" != n2 ] || exit 4`}})
	if err != nil {
		t.Fatal(err)
	}
	if all[0].Type != api.RunLineStart || all[0].Nodes != "n[1-3]" || all[0].Count != 3 || all[len(all)-1].Type != api.RunLineEnd {
		t.Fatalf("stream: %+v", all)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		l := res[n]
		want := 0
		if n == "n2" {
			want = 4
		}
		if l.Exit == nil || *l.Exit != want || l.Stdout != n+"\n" || l.Stderr != "oops\n" || l.Error != "" {
			t.Errorf("%s: %+v", n, l)
		}
	}

	// A one-word command line with a pipe gets a hint.
	res, _, err = run(t, e.admin, api.RunRequest{Nodes: "n1", Argv: []string{"uptime | cut -c1-5"}})
	if err != nil {
		t.Fatal(err)
	}
	if l := res["n1"]; l.Error != api.ErrFailed || !strings.Contains(l.Detail, "sh -c") {
		t.Errorf("one-word command line: %+v", l)
	}

	// Output beyond the limit is cut and counted.
	res, _, err = run(t, e.admin, api.RunRequest{Nodes: "n1", Argv: []string{"head", "-c", "1100000", "/dev/zero"}})
	if err != nil {
		t.Fatal(err)
	}
	if l := res["n1"]; len(l.Stdout) != api.MaxCommandOutput || l.StdoutDropped != 1100000-api.MaxCommandOutput {
		t.Errorf("big output: %d bytes kept, %d dropped", len(l.Stdout), l.StdoutDropped)
	}

	// With fanout 1 the nodes take turns: each holds a lock directory
	// while it runs, and would fail to make it if another held it.
	lock := filepath.Join(t.TempDir(), "lock")
	res, _, err = run(t, e.admin, api.RunRequest{Nodes: "n[1-3]", Fanout: 1,
		Argv: []string{"sh", "-c", "mkdir " + lock + " || exit 9; sleep 0.3; rmdir " + lock}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if !res[n].OK() {
			t.Errorf("fanout 1: %s ran beside another: %+v", n, res[n])
		}
	}

	// A timeout kills the command.
	start := time.Now()
	res, _, err = run(t, e.admin, api.RunRequest{Nodes: "n1", Argv: []string{"sleep", "30"}, Timeout: "300ms"})
	if err != nil {
		t.Fatal(err)
	}
	if l := res["n1"]; l.Error != api.ErrTimeout || time.Since(start) > 10*time.Second {
		t.Errorf("timeout: %+v after %s", l, time.Since(start))
	}
}

func TestRunRefusals(t *testing.T) {
	e := startServer(t, nil)
	e.runAgents(nil, "n1")
	viewer := e.user("vera", api.RoleViewer)
	cases := []struct {
		c      *api.Client
		req    api.RunRequest
		status int
		msg    string
	}{
		{viewer, api.RunRequest{Nodes: "n1", Argv: []string{"true"}}, http.StatusForbidden, "may not run commands"},
		{e.admin, api.RunRequest{Nodes: "n[1-3]", Argv: []string{"true"}}, http.StatusBadRequest, "unknown nodes n[2-3]"},
		{e.admin, api.RunRequest{Nodes: "n1"}, http.StatusBadRequest, "argv is required"},
		{e.admin, api.RunRequest{Nodes: "n1", Argv: []string{"true"}, Timeout: "forever"}, http.StatusBadRequest, "timeout \"forever\""},
		{e.admin, api.RunRequest{Nodes: "n1", Argv: []string{"true"}, Fanout: -1}, http.StatusBadRequest, "fanout -1"},
		{e.admin, api.RunRequest{Argv: []string{"true"}}, http.StatusBadRequest, "nodes is required"},
	}
	for _, c := range cases {
		_, _, err := run(t, c.c, c.req)
		if ae := apiErr(t, err, c.status); !strings.Contains(ae.Message, c.msg) {
			t.Errorf("%+v: %q does not say %q", c.req, ae.Message, c.msg)
		}
	}
}

// A command runs while a job holds the machine; the job goes on.
func TestRunBesideJob(t *testing.T) {
	e := startServer(t, nil)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	e.runAgents(agent.FuncExecutor(func(ctx context.Context, req agent.ExecRequest) (int, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 0, nil
	}), "n1")
	e.mustApply(e.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "long"}, Script: "sleep 600"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "long"}, Tasks: []string{"long"}})
	if _, err := e.admin.Action(context.Background(), api.ActionCommission, "n1", "long"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the job did not start")
	}
	res, _, err := run(t, e.admin, api.RunRequest{Nodes: "n1", Argv: []string{"echo", "beside"}})
	if err != nil {
		t.Fatal(err)
	}
	if l := res["n1"]; !l.OK() || l.Stdout != "beside\n" {
		t.Fatalf("command beside a job: %+v", l)
	}
	close(release)
	waitFor(t, "the job to end", 20*time.Second, func() bool {
		var m api.Machine
		return e.admin.Get(context.Background(), "machines", "n1", &m) == nil && m.Status.State == api.StateReady
	})
}

// Ending the request cancels the command on the agent.
func TestRunCancel(t *testing.T) {
	e := startServer(t, nil)
	e.runAgents(nil, "n1")
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	err := e.admin.Run(ctx, api.RunRequest{Nodes: "n1", Argv: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 30"}}, func(l api.RunLine) error {
		if l.Type == api.RunLineStart {
			waitFor(t, "the command to start", 10*time.Second, func() bool {
				b, err := os.ReadFile(pidFile)
				return err == nil && strings.HasSuffix(string(b), "\n")
			})
			cancel()
		}
		return nil
	})
	if err == nil {
		t.Fatal("a cancelled run ended without error")
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the command killed on the agent", 10*time.Second, func() bool {
		return syscall.Kill(pid, 0) == syscall.ESRCH
	})
	waitFor(t, "the hub to forget the command", 10*time.Second, func() bool { return e.srv.cmds.Stats().Running == 0 })
	res, _, err := run(t, e.admin, api.RunRequest{Nodes: "n1", Argv: []string{"true"}})
	if err != nil || !res["n1"].OK() {
		t.Fatalf("after cancel: %+v %v", res, err)
	}
}

func tarOf(t *testing.T, entries ...tar.Header) ([]byte, map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	bodies := map[string][]byte{}
	for _, h := range entries {
		var body []byte
		if h.Typeflag == tar.TypeReg {
			body = []byte(strings.Repeat(h.Name, 100))
			h.Size = int64(len(body))
			bodies[h.Name] = body
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), bodies
}

func TestCopy(t *testing.T) {
	e := startServer(t, func(c *Config) { c.MaxCopyBytes = 1 << 20 })
	e.runAgents(nil, "n1", "n2")
	dest := t.TempDir()
	archive, bodies := tarOf(t,
		tar.Header{Name: "app", Typeflag: tar.TypeDir, Mode: 0o750},
		tar.Header{Name: "app/run.sh", Typeflag: tar.TypeReg, Mode: 0o755},
		tar.Header{Name: "app/conf", Typeflag: tar.TypeDir, Mode: 0o700},
		tar.Header{Name: "app/conf/a.yaml", Typeflag: tar.TypeReg, Mode: 0o640},
		tar.Header{Name: "app/current", Typeflag: tar.TypeSymlink, Linkname: "conf/a.yaml"},
	)
	copyTo := func(nodes, to string, archive []byte) (map[string]api.RunLine, error) {
		res := map[string]api.RunLine{}
		err := e.admin.Copy(context.Background(), api.CopyRequest{Nodes: nodes, Dest: to, Size: int64(len(archive))}, bytes.NewReader(archive), func(l api.RunLine) error {
			if l.Type == api.RunLineResult {
				res[l.Node] = l
			}
			return nil
		})
		return res, err
	}
	// Both agents share this host, so each gets its own destination.
	for _, n := range []string{"n1", "n2"} {
		if err := os.Mkdir(filepath.Join(dest, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	res, err := copyTo("n1", dest+"/n1", archive)
	if err != nil || !res["n1"].OK() {
		t.Fatalf("copy into a directory: %+v %v", res, err)
	}
	for name, body := range bodies {
		got, err := os.ReadFile(filepath.Join(dest, "n1", name))
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("%s: %v, %d bytes", name, err, len(got))
		}
	}
	modes := map[string]os.FileMode{"app": 0o750 | os.ModeDir, "app/run.sh": 0o755, "app/conf": 0o700 | os.ModeDir, "app/conf/a.yaml": 0o640}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dest, "n1", name))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v (%v)", name, fi.Mode(), want, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(dest, "n1", "app/current")); err != nil || l != "conf/a.yaml" {
		t.Errorf("symlink: %q %v", l, err)
	}
	// A destination that does not exist is the copy's new name.
	res, err = copyTo("n2", dest+"/n2/renamed", archive)
	if err != nil || !res["n2"].OK() {
		t.Fatalf("copy as a new name: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dest, "n2/renamed/conf/a.yaml")); err != nil {
		t.Error(err)
	}
	// A missing parent directory fails on the node, with the reason.
	res, err = copyTo("n1", dest+"/nowhere/x", archive)
	if err != nil || res["n1"].Error != api.ErrFailed || !strings.Contains(res["n1"].Detail, "does not exist") {
		t.Fatalf("missing parent: %+v %v", res, err)
	}

	big := make([]byte, 2<<20)
	_, err = copyTo("n1", dest+"/", big)
	if ae := apiErr(t, err, http.StatusRequestEntityTooLarge); !strings.Contains(ae.Message, "limit of 1.0 MiB") {
		t.Errorf("too big: %s", ae.Message)
	}
	bad := []struct {
		entries []tar.Header
		msg     string
	}{
		{[]tar.Header{{Name: "../x", Typeflag: tar.TypeReg}}, "stay inside"},
		{[]tar.Header{{Name: "a", Typeflag: tar.TypeDir}, {Name: "b/x", Typeflag: tar.TypeReg}}, "one top-level name"},
		{[]tar.Header{{Name: "a", Typeflag: tar.TypeDir}, {Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, {Name: "a/l/passwd", Typeflag: tar.TypeReg}}, "symbolic link of the archive"},
		{[]tar.Header{{Name: "a", Typeflag: tar.TypeFifo}}, "only regular files"},
	}
	for _, b := range bad {
		arch, _ := tarOf(t, b.entries...)
		_, err := copyTo("n1", dest+"/", arch)
		if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, b.msg) {
			t.Errorf("%v: %q does not say %q", b.entries, ae.Message, b.msg)
		}
	}
	_, err = copyTo("n1", "relative/path", archive)
	if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, "absolute path") {
		t.Errorf("relative dest: %s", ae.Message)
	}
	if ents, _ := os.ReadDir(e.srv.spoolDir()); len(ents) != 0 {
		t.Errorf("spool files left: %v", ents)
	}
}
