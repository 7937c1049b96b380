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
