package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// runCLI runs the CLI against the site and returns stdout, stderr and the
// exit code.
func (s *site) runCLI(args ...string) (string, string, int) {
	s.t.Helper()
	out, errs, err := s.cli("", args...)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("drover %v: %v", args, err)
	}
	return out, errs, code
}

func sortedLines(s string) []string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	slices.Sort(lines)
	return lines
}

// drover run and drover cp against five real agents: prefixes, exit codes,
// collated output, a failing node, a timeout, a stopped agent, a command
// beside a long job, and copies of a file and a directory.
func TestRunAndCopy(t *testing.T) {
	s := startSite(t)
	s.apply(`
kind: Task
name: long
script: |
  echo started
  sleep 120
---
kind: Workflow
name: long
tasks: [long]
`)
	agents := startAgents(s, 5)
	eventually(t, 30*time.Second, "5 machines", func() (bool, string) { return len(s.machines()) == 5, "" })
	host, _ := os.Hostname()

	t.Run("prefixes", func(t *testing.T) {
		out, errs, code := s.runCLI("run", "n[01-05]", "--", "hostname")
		want := []string{"n01: " + host, "n02: " + host, "n03: " + host, "n04: " + host, "n05: " + host}
		if code != 0 || !slices.Equal(sortedLines(out), want) {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})

	t.Run("collate", func(t *testing.T) {
		out, errs, code := s.runCLI("run", "n[01-05]", "--collate", "--", "sh", "-c", `echo hello; echo "to stderr" >&2`)
		if code != 0 || out != "n[01-05]: hello\n" || errs != "n[01-05]: to stderr\n" {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})

	t.Run("one node fails", func(t *testing.T) {
		out, errs, code := s.runCLI("run", "n[01-05]", "-b", "--", "sh", "-c", `echo ran; [ "$DROVER_MACHINE" != n03 ] || exit 3`)
		if code != 1 || out != "n[01-02,04-05]: ran\nn03: ran\n" ||
			!strings.Contains(errs, "n03: exited with exit code 3\n") ||
			!strings.Contains(errs, "error: run: 1 of 5 nodes did not succeed: exit code 3: n03\n") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		out, errs, code := s.runCLI("run", "n[01-02]", "--timeout", "1s", "--", "sleep", "30")
		took := time.Since(start)
		if code != 1 || out != "" || !strings.Contains(errs, "n01: timeout: killed after 1s") ||
			!strings.Contains(errs, "timeout: n[01-02]") || took > 20*time.Second {
			t.Fatalf("exit %d after %s\nstdout:\n%s\nstderr:\n%s", code, took, out, errs)
		}
		t.Logf("sleep 30 with --timeout 1s came back after %s", took.Round(time.Millisecond))
	})

	t.Run("command beside a long job", func(t *testing.T) {
		if _, err := s.client.Action(context.Background(), api.ActionCommission, "n01", "long"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the long job running", func() (bool, string) {
			js := s.jobs("machine=n01")
			return len(js) == 1 && js[0].State == api.JobRunning, ""
		})
		out, errs, code := s.runCLI("run", "n01", "--", "echo", "beside the job")
		if code != 0 || out != "n01: beside the job\n" {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		if js := s.jobs("machine=n01"); js[0].State != api.JobRunning {
			t.Fatalf("the job is %s, not running any more", js[0].State)
		}
	})

	t.Run("copy", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "app")
		files := map[string]fs.FileMode{"app.conf": 0o640, "bin/start.sh": 0o755, "data/blob": 0o600, "data/empty": 0o444}
		for name, mode := range files {
			p := filepath.Join(src, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			body := []byte("contents of " + name + "\n")
			if name == "data/blob" {
				body = make([]byte, 3<<20)
				_, _ = rand.Read(body)
			}
			if name == "data/empty" {
				body = nil
			}
			if err := os.WriteFile(p, body, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(filepath.Join(src, "data"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("app.conf", filepath.Join(src, "current.conf")); err != nil {
			t.Fatal(err)
		}
		// The agents share this host: all five write the same tree at once,
		// each file through its own temporary name.
		dest := t.TempDir()
		out, errs, code := s.runCLI("cp", "n[01-05]", src, dest+"/")
		if code != 0 || out != "" || !strings.Contains(errs, "on 5 nodes") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		sameTree(t, src, filepath.Join(dest, "app"))

		// One file, to a new name.
		out, errs, code = s.runCLI("cp", "n02", filepath.Join(src, "bin/start.sh"), dest+"/renamed.sh")
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		sameCopy(t, filepath.Join(src, "bin/start.sh"), dest+"/renamed.sh")
		if ents, _ := os.ReadDir(dest); len(ents) != 2 {
			t.Errorf("temporary files left in %s: %v", dest, ents)
		}
	})

	t.Run("ctrl-c", func(t *testing.T) {
		pids := t.TempDir()
		cmd := exec.Command(droverBin, "run", "n[01-04]", "--collate", "--", "sh", "-c",
			`if [ "$DROVER_MACHINE" = n01 ]; then echo quick; else echo $$ > `+pids+`/$DROVER_MACHINE; exec sleep 30; fi`)
		cmd.Env = append(os.Environ(), "DROVER_ENDPOINT="+s.endpoint, "DROVER_CA_CERT="+s.caFile, "DROVER_TOKEN="+s.client.Token)
		var out, errs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "three sleeps started", func() (bool, string) {
			ents, _ := os.ReadDir(pids)
			return len(ents) == 3, ""
		})
		_ = cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 || out.String() != "n01: quick\n" ||
			!strings.Contains(errs.String(), "error: run interrupted: 3 of 4 nodes did not succeed: no result: n[02-04]") {
			t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errs.String())
		}
		// The sleeps were killed on the nodes.
		for _, n := range []string{"n02", "n03", "n04"} {
			b, _ := os.ReadFile(filepath.Join(pids, n))
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			eventually(t, 10*time.Second, n+"'s sleep killed", func() (bool, string) {
				return pid > 0 && syscall.Kill(pid, 0) == syscall.ESRCH, ""
			})
		}
	})

	t.Run("stopped agent", func(t *testing.T) {
		agents["n05"].kill()
		start := time.Now()
		out, errs, code := s.runCLI("run", "n[01-05]", "--", "true")
		took := time.Since(start)
		if code != 1 || !strings.Contains(errs, "n05: unreachable: its agent is not connected") ||
			!strings.Contains(errs, "unreachable: n05") {
			t.Fatalf("exit %d after %s\nstdout:\n%s\nstderr:\n%s", code, took, out, errs)
		}
		t.Logf("run with a stopped agent came back after %s", took.Round(time.Millisecond))
	})
}

func sameTree(t *testing.T, want, got string) {
	t.Helper()
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		wi, _ := os.Lstat(p)
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode()&fs.ModeSymlink != 0:
			wl, _ := os.Readlink(p)
			gl, _ := os.Readlink(filepath.Join(got, rel))
			if wl != gl {
				t.Errorf("%s: link to %q, want %q", rel, gl, wl)
			}
		case wi.Mode().IsRegular():
			sameCopy(t, p, filepath.Join(got, rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func sameCopy(t *testing.T, want, got string) {
	t.Helper()
	w, err1 := os.ReadFile(want)
	g, err2 := os.ReadFile(got)
	if err1 != nil || err2 != nil || !bytes.Equal(w, g) {
		t.Errorf("%s: %d bytes (%v), want the %d bytes of %s (%v)", got, len(g), err2, len(w), want, err1)
	}
	wi, _ := os.Stat(want)
	gi, err := os.Stat(got)
	if err != nil || wi.Mode() != gi.Mode() {
		t.Errorf("%s: mode %v, want %v", got, gi.Mode(), wi.Mode())
	}
}

// drover run and cp on a manager: one request per site, output prefixed
// site%node, collated across sites, and a site that is down reported
// unreachable while the others answer.
func TestRunAcrossSitesCLI(t *testing.T) {
	east, west, mgr := startSite(t), startSite(t), startSite(t)
	startAgents(east, 2)
	startAgents(west, 2)
	for _, s := range []*site{east, west} {
		eventually(t, 30*time.Second, "2 machines", func() (bool, string) { return len(s.machines()) == 2, "" })
	}
	for name, s := range map[string]*site{"east": east, "west": west} {
		if _, errs, err := mgr.addSiteCLI(name, s.endpoint, s.caFile, s.password); err != nil {
			t.Fatalf("add %s: %v %s", name, err, errs)
		}
	}
	eventually(t, 30*time.Second, "4 machines on the manager", func() (bool, string) {
		return len(mgr.machines()) == 4, ""
	})

	out, errs, code := mgr.runCLI("run", "all%all", "--", "echo", "hi")
	want := []string{"east%n01: hi", "east%n02: hi", "west%n01: hi", "west%n02: hi"}
	if code != 0 || !slices.Equal(sortedLines(out), want) {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	out, errs, code = mgr.runCLI("run", "all%all", "--collate", "--", "sh", "-c", `[ "$DROVER_MACHINE" != n02 ] && echo hi || echo other`)
	if code != 0 || out != "(east,west)%n01: hi\n(east,west)%n02: other\n" {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	t.Logf("drover run 'all%%all' --collate (manager):\n%s", out)

	src := filepath.Join(t.TempDir(), "motd")
	if err := os.WriteFile(src, []byte("welcome\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	if out, errs, code := mgr.runCLI("cp", "east%n01,west%n02", src, dest+"/"); code != 0 {
		t.Fatalf("cp: exit %d\n%s%s", code, out, errs)
	}
	sameCopy(t, src, filepath.Join(dest, "motd"))

	west.srv.kill()
	start := time.Now()
	out, errs, code = mgr.runCLI("run", "all%all", "--", "echo", "hi")
	took := time.Since(start)
	if code != 1 || !slices.Equal(sortedLines(out), want[:2]) ||
		!strings.Contains(errs, "west%n01: unreachable: site west cannot be reached") ||
		!strings.Contains(errs, "unreachable: west%n[01-02]") {
		t.Fatalf("exit %d after %s\nstdout:\n%s\nstderr:\n%s", code, took, out, errs)
	}
	t.Logf("with west down (%s):\n%s%s", took.Round(time.Millisecond), out, errs)
}
