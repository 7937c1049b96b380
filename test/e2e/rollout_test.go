package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// rolloutContent: a quick workflow to commission and deploy with, and an
// upgrade whose task records its job's start and end in the agent's state
// dir, sleeps, and fails on the machine named by the param e2e/fail-on.
const rolloutContent = `
kind: Param
name: e2e/fail-on
type: string
default: n05
---
kind: Param
name: e2e/sleep
type: number
default: 0.5
---
kind: Task
name: quick
script: "true"
---
kind: Workflow
name: quick
tasks: [quick]
---
kind: Task
name: rolling-up
script: |
  echo "start $DROVER_JOB $(date +%s.%N)" >> "$DROVER_STATE_DIR/rolling.log"
  sleep {{ param "e2e/sleep" }}
  echo "end $DROVER_JOB $(date +%s.%N)" >> "$DROVER_STATE_DIR/rolling.log"
  if [ {{ .Machine.Name | shellQuote }} = {{ param "e2e/fail-on" | shellQuote }} ]; then
    echo "this machine refuses the upgrade" >&2
    exit 3
  fi
---
kind: Workflow
name: rolling-up
tasks: [rolling-up]
`

func (s *site) rollout(name string) *api.Rollout {
	s.t.Helper()
	var r api.Rollout
	if err := s.client.Get(context.Background(), "rollouts", name, &r); err != nil {
		s.t.Fatalf("get rollout %s: %v", name, err)
	}
	return &r
}

// jobsOfRollout returns the jobs of the runs a rollout started.
func (s *site) jobsOfRollout(name string) []api.Job {
	s.t.Helper()
	l, err := s.client.List(context.Background(), "runs", "rollout="+name)
	if err != nil {
		s.t.Fatal(err)
	}
	var jobs []api.Job
	for _, raw := range l.Items {
		var r api.Run
		if err := json.Unmarshal(raw, &r); err != nil {
			s.t.Fatal(err)
		}
		jobs = append(jobs, s.jobs("run="+r.Name)...)
	}
	return jobs
}

// jobOverlap is the most jobs running at one instant, from the server's
// job timestamps.
func jobOverlap(t *testing.T, jobs []api.Job) int {
	t.Helper()
	var ivs []interval
	for _, j := range jobs {
		if j.StartedAt == nil || j.FinishedAt == nil {
			t.Fatalf("job %s has not run to its end: %s", j.Name, j.State)
		}
		ivs = append(ivs, interval{j.Machine, j.Task, float64(j.StartedAt.UnixNano()) / 1e9, float64(j.FinishedAt.UnixNano()) / 1e9})
	}
	return maxOverlap(ivs)
}

// rollingLog reads which jobs a machine's upgrade task ran, and how often.
func rollingLog(t *testing.T, s *site, machine string) map[string]int {
	t.Helper()
	starts := map[string]int{}
	for _, l := range readLines(t, filepath.Join(s.agentDir(machine), "rolling.log")) {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "start" {
			starts[f[1]]++
		}
	}
	return starts
}

// An upgrade of 8 machines in batches of 2 stops after the failure on n05,
// naming it, with never more than 2 machines upgrading at once; resumed
// after the fix it upgrades the rest. A second rollout survives a SIGKILL
// of the server in its middle, and no machine is upgraded twice.
func TestRollingUpgradeStopsResumesAndSurvivesSIGKILL(t *testing.T) {
	s := startSite(t, "--max-concurrent-jobs", "10")
	s.apply(rolloutContent)
	startAgents(s, 8)
	eventually(t, 60*time.Second, "8 machines discovered", func() (bool, string) {
		return len(s.machines()) == 8, ""
	})
	for _, action := range []string{"commission", "deploy"} {
		if out, errs, err := s.cli("", action, "all", "--workflow", "quick", "--wait", "--timeout", "2m"); err != nil {
			t.Fatalf("%s: %v\n%s%s", action, err, out, errs)
		}
	}

	out, errs, err := s.cli("", "upgrade", "all", "--workflow", "rolling-up", "--batch-size", "2", "--max-unavailable", "2", "--max-failures", "1", "--wait", "--timeout", "2m")
	t.Logf("upgrade --wait:\n%s%s", out, errs)
	if err == nil {
		t.Fatal("the upgrade succeeded although n05 fails")
	}
	m := regexp.MustCompile(`rollout (upgrade-[0-9a-f]+) started: upgrade of 8 machines in batches of 2, stopping after 1 failed`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rollout started line in %q", out)
	}
	name := m[1]
	for _, want := range []string{
		"rollout " + name + " paused in ",
		"stopped after 1 failed machine (max-failures 1): n05;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	for _, want := range []string{
		"n05: upgrade failed: task rolling-up failed with exit code 3",
		name + " paused: batch 3/4, 6/8 done (5 ok, 1 failed), 0 running, 2 pending [failed: n05]",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	r := s.rollout(name)
	if r.Status.State != api.RolloutPaused || r.Status.Succeeded != 5 || r.Status.Failed != 1 || r.Status.Pending != 2 {
		t.Errorf("status %+v", r.Status)
	}
	jobs := s.jobsOfRollout(name)
	if len(jobs) != 6 {
		t.Errorf("%d jobs, want 6 (n07 and n08 never start)", len(jobs))
	}
	if got := jobOverlap(t, jobs); got != 2 {
		t.Errorf("%d machines upgraded at once, want 2 (--max-unavailable 2)", got)
	}
	for _, n := range []string{"n07", "n08"} {
		if got := rollingLog(t, s, n); len(got) != 0 {
			t.Errorf("%s ran %v after the rollout stopped", n, got)
		}
	}
	show, _, err := s.cli("", "rollouts", "show", name)
	if err != nil || !regexp.MustCompile(`n05\s+3\s+failed\s+n05\.upgrade\.\S+\s+\S+\s+task rolling-up failed with exit code 3`).MatchString(show) {
		t.Errorf("rollouts show: %v\n%s", err, show)
	}

	// The fix: n05 no longer fails. Resume goes on with n07 and n08; n05
	// stays failed (and broken).
	s.apply("kind: Param\nname: e2e/fail-on\ntype: string\ndefault: none\n")
	out, errs, err = s.cli("", "rollouts", "resume", name, "--wait", "--timeout", "2m")
	t.Logf("resume --wait:\n%s%s", out, errs)
	if err == nil || !strings.Contains(out, "rollout "+name+" done in ") || !strings.Contains(out, "7 succeeded, 1 failed: n05") {
		t.Errorf("resume: %v", err)
	}
	if got := jobOverlap(t, s.jobsOfRollout(name)); got > 2 {
		t.Errorf("%d machines upgraded at once after the resume", got)
	}
	for _, n := range []string{"n07", "n08"} {
		if got := rollingLog(t, s, n); len(got) != 1 {
			t.Errorf("%s ran %v, want one upgrade", n, got)
		}
	}
	list, _, _ := s.cli("", "rollouts", "list")
	if !regexp.MustCompile(name + `\s+upgrade\s+done\s+4/4\s+8\s+7\s+1\s+0\s+0`).MatchString(list) {
		t.Errorf("rollouts list:\n%s", list)
	}

	// n05 back in service, then a slower rollout; the server is killed
	// while batch 2 runs.
	for _, action := range []string{"commission", "deploy"} {
		if out, errs, err := s.cli("", action, "n05", "--workflow", "quick", "--wait", "--timeout", "1m"); err != nil {
			t.Fatalf("%s n05: %v\n%s%s", action, err, out, errs)
		}
	}
	s.apply("kind: Param\nname: e2e/sleep\ntype: number\ndefault: 1.5\n")
	out, errs, err = s.cli("", "upgrade", "all", "--workflow", "rolling-up", "--batch-size", "2", "--max-unavailable", "2")
	if err != nil {
		t.Fatalf("second upgrade: %v\n%s%s", err, out, errs)
	}
	m = regexp.MustCompile(`rollout (upgrade-[0-9a-f]+) started`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rollout in %q", out)
	}
	second := m[1]
	eventually(t, time.Minute, "batch 2 running", func() (bool, string) {
		r := s.rollout(second)
		return r.Status.Batch == 2 && r.Status.Running == 2, fmt.Sprintf("%+v", r.Status)
	})
	t.Log("SIGKILL the server while batch 2 runs")
	s.srv.kill()
	time.Sleep(time.Second)
	s.start()
	eventually(t, 2*time.Minute, "the second rollout done", func() (bool, string) {
		r := s.rollout(second)
		return r.Status.State == api.RolloutDone, fmt.Sprintf("%+v", r.Status)
	})
	r = s.rollout(second)
	if r.Status.Succeeded != 8 || r.Status.BatchesDone != 4 {
		t.Errorf("second rollout: %+v", r.Status)
	}
	jobs = s.jobsOfRollout(second)
	if len(jobs) != 8 {
		t.Errorf("%d jobs in the second rollout, want 8", len(jobs))
	}
	if got := jobOverlap(t, jobs); got > 2 {
		t.Errorf("%d machines upgraded at once across the restart", got)
	}
	// Each machine ran the second rollout's job exactly once.
	for _, j := range jobs {
		if n := rollingLog(t, s, j.Machine)[j.Name]; n != 1 {
			t.Errorf("%s ran job %s %d times", j.Machine, j.Name, n)
		}
	}
	var machines []string
	for _, j := range jobs {
		machines = append(machines, j.Machine)
	}
	sort.Strings(machines)
	if strings.Join(machines, ",") != "n01,n02,n03,n04,n05,n06,n07,n08" {
		t.Errorf("machines upgraded: %v", machines)
	}
}
