package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// An agent that stops is marked unreachable within the timeout; when it
// comes back it is reachable again and its verify workflow runs.
func TestReachabilityAndVerifyOnReturn(t *testing.T) {
	s := startSite(t, "--heartbeat-interval", "500ms", "--reachable-timeout", "3s")
	s.apply(content + `
---
kind: Task
name: check
script: |
  echo "verify on {{ .Machine.Name }}" >> "$DROVER_STATE_DIR/verify.log"
---
kind: Workflow
name: verify
tasks: [check]
`)
	s.apply(`
kind: Profile
name: global
params:
  commission/workflow: three-steps
  verify/workflow: verify
  greeting: hi
`)
	agents := startAgents(s, 2)
	eventually(t, 30*time.Second, "2 machines", func() (bool, string) { return len(s.machines()) == 2, "" })
	if out, errs, err := s.cli("", "commission", "n[01-02]", "--wait", "--timeout", "1m"); err != nil {
		t.Fatalf("commission: %v %s %s", err, out, errs)
	}
	stopped := time.Now()
	agents["n01"].kill()
	eventually(t, 10*time.Second, "n01 unreachable", func() (bool, string) {
		for _, m := range s.machines() {
			if m.Name == "n01" {
				return !m.Status.Reachable, fmt.Sprint(m.Status.Reachable)
			}
		}
		return false, "missing"
	})
	t.Logf("n01 marked unreachable %s after its agent was killed (timeout 3s)", time.Since(stopped).Round(100*time.Millisecond))
	for _, m := range s.machines() {
		if m.Name == "n02" && !m.Status.Reachable {
			t.Errorf("n02 marked unreachable while its agent runs")
		}
	}
	s.startAgent("n01")
	eventually(t, 30*time.Second, "n01 reachable and verified", func() (bool, string) {
		for _, m := range s.machines() {
			if m.Name == "n01" {
				ok := m.Status.Reachable && strings.Contains(m.Status.LastRun, ".verify.") && m.Status.LastRunResult == api.RunSucceeded
				return ok, fmt.Sprintf("reachable=%v lastRun=%s %s", m.Status.Reachable, m.Status.LastRun, m.Status.LastRunResult)
			}
		}
		return false, "missing"
	})
	if lines := readLines(t, s.agentDir("n01")+"/verify.log"); len(lines) != 1 {
		t.Errorf("verify ran %d times on n01, want 1", len(lines))
	}
	if lines := readLines(t, s.agentDir("n02")+"/verify.log"); len(lines) != 0 {
		t.Errorf("verify ran on n02, which never went away")
	}
}

// An agent whose machine is deleted, and that has no join token to
// register again, stops at its next heartbeat with a reason.
func TestAgentStopsWhenCredentialIsGone(t *testing.T) {
	s := startSite(t, "--heartbeat-interval", "1s", "--reachable-timeout", "3s")
	first := s.startAgent("g1")
	eventually(t, 30*time.Second, "g1 registered", func() (bool, string) { return len(s.machines()) == 1, "" })
	first.kill()
	again := startProc(t, s.dir, "agent-g1-again", nil, "agent",
		"--endpoint", s.endpoint, "--ca-cert", s.caFile, "--state-dir", s.agentDir("g1"))
	time.Sleep(time.Second)
	if _, errs, err := s.cli("", "delete", "machine", "g1"); err != nil {
		t.Fatalf("delete: %v %s", err, errs)
	}
	deleted := time.Now()
	select {
	case <-again.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent kept running 10 s after its credential was deleted")
	}
	t.Logf("agent stopped %s after its machine was deleted (heartbeat 1s, poll 30s)", time.Since(deleted).Round(100*time.Millisecond))
	if again.err == nil {
		t.Error("agent exited 0")
	}
	if log := strings.Join(readLines(t, again.log), "\n"); !strings.Contains(log, "no join token to register again") {
		t.Errorf("agent did not say why it stopped:\n%s", log)
	}
}

// An agent that does not trust the server's certificate says so and stops,
// rather than retrying what retrying cannot fix.
func TestAgentWithoutCAStops(t *testing.T) {
	s := startSite(t)
	p := startProc(t, s.dir, "agent-noca", nil, "agent",
		"--endpoint", s.endpoint, "--join-token", s.joinTok, "--state-dir", s.agentDir("noca"), "--name", "noca")
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("agent without the CA kept retrying")
	}
	if log := strings.Join(readLines(t, p.log), "\n"); p.err == nil || !strings.Contains(log, "not signed by a trusted CA (pass --ca-cert") {
		t.Errorf("exit %v, log:\n%s", p.err, log)
	}
}
