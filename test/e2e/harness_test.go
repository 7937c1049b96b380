// Package e2e runs drover as real processes on loopback: a server, many
// agents, the CLI, and SIGKILL in the middle of work.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

var droverBin string

func TestMain(m *testing.M) {
	droverBin = os.Getenv("DROVER_BIN")
	if droverBin == "" {
		dir, err := os.MkdirTemp("", "drover-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		droverBin = filepath.Join(dir, "drover")
		cmd := exec.Command("go", "build", "-o", droverBin, "../../cmd/drover")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building drover:", err)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// proc is a drover process whose output goes to a log file kept for
// failures.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t *testing.T, dir, name string, env []string, args ...string) *proc {
	t.Helper()
	return startCommand(t, dir, name, env, droverBin, args...)
}

// startCommand starts any program the way startProc starts drover.
func startCommand(t *testing.T, dir, name string, env []string, program string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(program, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- tail of %s log ---\n%s", name, b)
		}
	})
	return p
}

// kill sends SIGKILL to the process group and waits.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// site is a running server with an admin client.
type site struct {
	t        *testing.T
	dir      string
	addr     string
	password string
	args     []string
	srv      *proc
	client   *api.Client
	caFile   string
	endpoint string
	joinTok  string
	restarts int
}

func startSite(t *testing.T, extra ...string) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{t: t, dir: dir, addr: freePort(t), password: "e2e-admin-password"}
	s.args = append([]string{"server", "--data-dir", filepath.Join(dir, "server"), "--listen", s.addr}, extra...)
	s.endpoint = "https://" + s.addr
	s.caFile = filepath.Join(dir, "server", "tls", "ca.crt")
	s.start()
	c, err := api.NewClientFromFile(s.endpoint, s.caFile, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	login, err := c.Login(ctx, "admin", s.password, "")
	if err != nil {
		t.Fatal(err)
	}
	c.Token = login.Token
	s.client = c
	jt, err := c.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.joinTok = jt.Token
	return s
}

// start (re)starts the server process and waits until it answers.
func (s *site) start() {
	s.t.Helper()
	s.srv = startProc(s.t, s.dir, fmt.Sprintf("server-%d", s.restarts), []string{"DROVER_ADMIN_PASSWORD=" + s.password}, s.args...)
	s.restarts++
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(s.caFile); err == nil {
			c, err := api.NewClientFromFile(s.endpoint, s.caFile, "")
			if err == nil {
				var h map[string]string
				if c.Do(context.Background(), "GET", "/healthz", nil, &h) == nil {
					return
				}
			}
		}
		select {
		case <-s.srv.done:
			s.t.Fatalf("server exited: %v", s.srv.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.t.Fatal("server did not come up in 30s")
}

func (s *site) startAgent(name string) *proc {
	s.t.Helper()
	stateDir := filepath.Join(s.dir, "agents", name)
	return startProc(s.t, s.dir, "agent-"+name, nil, "agent",
		"--endpoint", s.endpoint, "--ca-cert", s.caFile, "--join-token", s.joinTok,
		"--state-dir", stateDir, "--name", name)
}

func (s *site) agentDir(name string) string { return filepath.Join(s.dir, "agents", name) }

// cli runs the drover CLI against the site and returns its stdout.
func (s *site) cli(stdin string, args ...string) (string, string, error) {
	cmd := exec.Command(droverBin, args...)
	cmd.Env = append(os.Environ(),
		"DROVER_ENDPOINT="+s.endpoint, "DROVER_CA_CERT="+s.caFile, "DROVER_TOKEN="+s.client.Token,
		"DROVER_CONFIG="+filepath.Join(s.dir, "cli-config.json"))
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (s *site) apply(yaml string) {
	s.t.Helper()
	if out, errs, err := s.cli(yaml, "apply", "-f", "-"); err != nil {
		s.t.Fatalf("apply: %v\n%s%s", err, out, errs)
	}
}

func (s *site) machines() []api.Machine {
	s.t.Helper()
	l, err := s.client.List(context.Background(), "machines", "")
	if err != nil {
		s.t.Fatalf("list machines: %v", err)
	}
	out := make([]api.Machine, 0, len(l.Items))
	for _, raw := range l.Items {
		var m api.Machine
		if err := json.Unmarshal(raw, &m); err != nil {
			s.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (s *site) jobs(selector string) []api.Job { return listAs[api.Job](s, "jobs", selector) }

func (s *site) runs(selector string) []api.Run { return listAs[api.Run](s, "runs", selector) }

// listAs lists objects of a kind (plural) decoded as T.
func listAs[T any](s *site, plural, selector string) []T {
	s.t.Helper()
	l, err := s.client.List(context.Background(), plural, selector)
	if err != nil {
		s.t.Fatalf("list %s: %v", plural, err)
	}
	out := make([]T, 0, len(l.Items))
	for _, raw := range l.Items {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			s.t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// eventually polls cond until it holds or the limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s (last: %s)", what, limit, last)
}

func countStates(ms []api.Machine) map[string]int {
	c := map[string]int{}
	for _, m := range ms {
		c[m.Status.State]++
	}
	return c
}

// readLines reads a file's lines (missing file: none).
func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func startAgents(s *site, n int) map[string]*proc {
	agents := map[string]*proc{}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("n%02d", i)
		agents[name] = s.startAgent(name)
	}
	return agents
}
