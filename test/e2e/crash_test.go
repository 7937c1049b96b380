package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// The server is SIGKILLed several times while 20 machines run a 3-task
// workflow; after each restart the work goes on. In the end every task ran
// exactly once on every machine, never two at a time on one machine, and
// never more than the global limit at once.
func TestServerSIGKILLMidWorkflow(t *testing.T) {
	s := startSite(t, "--max-concurrent-jobs", "10")
	s.apply(strings.Replace(content, "default: 0.2", "default: 0.7", 1))
	startAgents(s, 20)
	eventually(t, 60*time.Second, "20 machines discovered", func() (bool, string) {
		return len(s.machines()) == 20, ""
	})
	resp, err := s.client.Action(t.Context(), api.ActionCommission, "n[01-20]", "")
	if err != nil {
		t.Fatalf("commission: %v", err)
	}
	for _, r := range resp.Results {
		if r.Error != "" {
			t.Fatalf("%s: %s", r.Machine, r.Error)
		}
	}
	// Kill the server at different points of the run: early, while many
	// jobs run, and late.
	for i, after := range []time.Duration{900 * time.Millisecond, 1300 * time.Millisecond, 1100 * time.Millisecond} {
		time.Sleep(after)
		done := 0
		for _, m := range s.machines() {
			if m.Status.State == api.StateReady {
				done++
			}
		}
		t.Logf("kill %d: SIGKILL the server with %d/20 machines done", i+1, done)
		s.srv.kill()
		time.Sleep(300 * time.Millisecond)
		s.start()
	}
	eventually(t, 3*time.Minute, "all 20 machines ready", func() (bool, string) {
		ms := s.machines()
		c := countStates(ms)
		return c[api.StateReady] == 20, fmt.Sprint(c)
	})
	var all []interval
	for _, m := range s.machines() {
		all = append(all, ranLog(t, s, m.Name, threeTasks)...)
		if m.Status.LastRunResult != api.RunSucceeded {
			t.Errorf("%s: last run %s %s: %s", m.Name, m.Status.LastRun, m.Status.LastRunResult, m.Status.Message)
		}
	}
	if got := maxOverlap(all); got > 10 {
		t.Errorf("%d jobs ran at once; the limit is 10", got)
	}
	// The store agrees: one successful job per task per machine, no retry.
	per := map[string]int{}
	for _, j := range s.jobs("") {
		if j.State != api.JobSucceeded || j.Attempt != 1 {
			t.Errorf("job %s: state %s attempt %d (%s)", j.Name, j.State, j.Attempt, j.Message)
		}
		per[j.Machine+"/"+j.Task]++
	}
	if len(per) != 60 {
		t.Errorf("%d machine/task pairs have jobs, want 60", len(per))
	}
	for k, n := range per {
		if n != 1 {
			t.Errorf("%s has %d jobs", k, n)
		}
	}
}
