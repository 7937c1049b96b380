package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// content: three tasks whose scripts use params from profiles, and record
// each run in the agent's state dir with start and end times, so the test
// can check from the machines' side what ran, how often and when.
const content = `
kind: Param
name: greeting
type: string
---
kind: Param
name: pause
type: number
default: 0.2
---
kind: Profile
name: global
params:
  commission/workflow: three-steps
  greeting: hello-from-global
---
kind: Profile
name: rack-a
params:
  greeting: hello-from-rack-a
  rack: a
---
kind: Task
name: step-one
script: |
  echo "start step-one $(date +%s.%N)" >> "$DROVER_STATE_DIR/ran.log"
  echo "greeting={{ param "greeting" }} machine={{ .Machine.Name }} cpus={{ .Machine.Status.Inventory.CPUs }}"
  sleep {{ param "pause" }}
  echo "end step-one $(date +%s.%N)" >> "$DROVER_STATE_DIR/ran.log"
---
kind: Task
name: step-two
script: |
  echo "start step-two $(date +%s.%N)" >> "$DROVER_STATE_DIR/ran.log"
  echo "rack={{ paramOr "rack" "none" }}"
  sleep {{ param "pause" }}
  echo "end step-two $(date +%s.%N)" >> "$DROVER_STATE_DIR/ran.log"
---
kind: Task
name: step-three
script: |
  echo "start step-three $(date +%s.%N)" >> "$DROVER_STATE_DIR/ran.log"
  sleep {{ param "pause" }}
  echo "end step-three $(date +%s.%N)" >> "$DROVER_STATE_DIR/ran.log"
---
kind: Workflow
name: three-steps
tasks: [step-one, step-two, step-three]
`

type interval struct {
	machine, task string
	start, end    float64
}

// ranLog reads what a machine's tasks recorded and checks each task
// started and ended exactly once, in order, without overlap.
func ranLog(t *testing.T, s *site, machine string, tasks []string) []interval {
	t.Helper()
	lines := readLines(t, filepath.Join(s.agentDir(machine), "ran.log"))
	var out []interval
	open := map[string]float64{}
	seen := map[string]int{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("%s: bad ran.log line %q", machine, l)
		}
		ts, _ := strconv.ParseFloat(f[2], 64)
		switch f[0] {
		case "start":
			if len(open) > 0 {
				t.Errorf("%s: %s started while %v was running", machine, f[1], open)
			}
			open[f[1]] = ts
			seen[f[1]]++
		case "end":
			st, ok := open[f[1]]
			if !ok {
				t.Errorf("%s: %s ended without a start", machine, f[1])
			}
			delete(open, f[1])
			out = append(out, interval{machine, f[1], st, ts})
		}
	}
	for _, task := range tasks {
		if seen[task] != 1 {
			t.Errorf("%s: task %s ran %d times, want exactly once (log: %q)", machine, task, seen[task], lines)
		}
	}
	if len(out) != len(tasks) {
		t.Errorf("%s: %d completed tasks, want %d", machine, len(out), len(tasks))
	}
	for i := range out {
		if i < len(tasks) && out[i].task != tasks[i] {
			t.Errorf("%s: task %d was %s, want %s", machine, i, out[i].task, tasks[i])
		}
	}
	return out
}

// maxOverlap is the largest number of intervals running at one instant.
func maxOverlap(ivs []interval) int {
	type edge struct {
		at    float64
		delta int
	}
	var edges []edge
	for _, iv := range ivs {
		edges = append(edges, edge{iv.start, 1}, edge{iv.end, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at != edges[j].at {
			return edges[i].at < edges[j].at
		}
		return edges[i].delta < edges[j].delta
	})
	cur, max := 0, 0
	for _, e := range edges {
		cur += e.delta
		if cur > max {
			max = cur
		}
	}
	return max
}

var threeTasks = []string{"step-one", "step-two", "step-three"}

func TestTwentyAgentsRunThreeTaskWorkflow(t *testing.T) {
	s := startSite(t, "--max-concurrent-jobs", "10")
	s.apply(content)
	startAgents(s, 20)
	eventually(t, 60*time.Second, "20 machines discovered", func() (bool, string) {
		ms := s.machines()
		return len(ms) == 20 && countStates(ms)[api.StateDiscovered] == 20, fmt.Sprint(countStates(ms))
	})
	for _, m := range s.machines() {
		if m.Status.Inventory == nil || m.Status.Inventory.CPUs < 1 || m.Status.Inventory.MemoryBytes == 0 || len(m.Status.Inventory.NICs) == 0 && m.Status.Inventory.PrimaryMAC() != "" {
			t.Errorf("machine %s has no usable inventory: %+v", m.Name, m.Status.Inventory)
		}
		if !m.Status.Reachable {
			t.Errorf("machine %s not reachable after registration", m.Name)
		}
	}
	// Half the machines take the rack-a profile: its greeting wins over
	// global's.
	for i := 1; i <= 10; i++ {
		s.apply(fmt.Sprintf("kind: Machine\nname: n%02d\nprofiles: [rack-a]\n", i))
	}

	out, errs, err := s.cli("", "commission", "n[01-20]", "--wait", "--timeout", "3m")
	if err != nil {
		t.Fatalf("commission --wait: %v\n%s\n%s", err, out, errs)
	}
	if !strings.Contains(out, "commission: 20 succeeded, 0 failed") {
		t.Errorf("unexpected summary: %q", out)
	}
	if !strings.Contains(errs, "20/20 done") {
		t.Errorf("no progress shown on stderr: %q", errs)
	}
	ms := s.machines()
	if c := countStates(ms); c[api.StateReady] != 20 {
		t.Fatalf("states after commission: %v", c)
	}
	var all []interval
	for _, m := range ms {
		all = append(all, ranLog(t, s, m.Name, threeTasks)...)
	}
	if got := maxOverlap(all); got > 10 {
		t.Errorf("%d jobs ran at once; the limit is 10", got)
	} else {
		t.Logf("at most %d jobs ran at once (limit 10)", got)
	}
	// The rendered scripts used the right params.
	for _, j := range s.jobs("") {
		if j.Task != "step-one" {
			continue
		}
		var b strings.Builder
		if _, err := s.client.JobLog(context.Background(), j.Name, 0, false, &b); err != nil {
			t.Fatal(err)
		}
		want := "greeting=hello-from-global"
		if n, _ := strconv.Atoi(strings.TrimPrefix(j.Machine, "n")); n <= 10 {
			want = "greeting=hello-from-rack-a"
		}
		if !strings.Contains(b.String(), want) || !strings.Contains(b.String(), "machine="+j.Machine) {
			t.Errorf("job %s log %q does not contain %q", j.Name, b.String(), want)
		}
	}
	// The table is readable.
	table, _, err := s.cli("", "get", "machines")
	if err != nil || !strings.Contains(table, "NAME") || strings.Count(table, "ready") != 20 {
		t.Errorf("get machines: %v\n%s", err, table)
	}
	// Illegal transitions are refused with a clear error.
	_, errs, err = s.cli("", "upgrade", "n01")
	if err == nil || !strings.Contains(errs, `machine "n01": cannot upgrade from state ready (deploy it first)`) {
		t.Errorf("upgrade from ready: err=%v stderr=%q", err, errs)
	}
}

// A missing param fails the job before anything runs, naming the param.
func TestMissingParamFailsJobBeforeRunning(t *testing.T) {
	s := startSite(t)
	s.apply(`
kind: Task
name: needs-param
script: |
  echo ran >> "$DROVER_STATE_DIR/ran.log"
  echo {{ param "no/such-param" }}
---
kind: Workflow
name: wf
tasks: [needs-param]
`)
	s.startAgent("m1")
	eventually(t, 30*time.Second, "m1 registered", func() (bool, string) { return len(s.machines()) == 1, "" })
	out, errs, err := s.cli("", "commission", "m1", "--workflow", "wf", "--wait", "--timeout", "1m")
	if err == nil {
		t.Fatalf("commission should fail: %s %s", out, errs)
	}
	if !strings.Contains(errs, `param "no/such-param" is not set for machine "m1"`) {
		t.Errorf("error does not name the param: %q", errs)
	}
	if lines := readLines(t, filepath.Join(s.agentDir("m1"), "ran.log")); len(lines) != 0 {
		t.Errorf("the task ran although its param is missing: %q", lines)
	}
	m := s.machines()[0]
	if m.Status.State != api.StateBroken {
		t.Errorf("state %s, want broken", m.Status.State)
	}
}
