package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// A job that ends while the server is away for longer than a minute keeps
// all of its output and its result: the agent holds both until the server
// is back.
func TestJobOutputSurvivesLongServerOutage(t *testing.T) {
	t.Parallel()
	s := startSite(t)
	s.apply(`
kind: Task
name: talk
script: |
  for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.5; done
---
kind: Workflow
name: talk
tasks: [talk]
`)
	s.startAgent("o1")
	eventually(t, 30*time.Second, "o1 registered", func() (bool, string) { return len(s.machines()) == 1, "" })
	if _, err := s.client.Action(context.Background(), api.ActionCommission, "o1", "talk"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "job running", func() (bool, string) {
		js := s.jobs("")
		return len(js) == 1 && js[0].State == api.JobRunning, ""
	})
	time.Sleep(time.Second)
	s.srv.kill()
	// Longer than the agent used to keep trying (about 50 s).
	time.Sleep(60 * time.Second)
	s.start()
	eventually(t, 60*time.Second, "o1 ready", func() (bool, string) {
		m := s.machines()[0]
		return m.Status.State == api.StateReady, m.Status.State + " " + m.Status.Message
	})
	j := s.jobs("")[0]
	var b strings.Builder
	if _, err := s.client.JobLog(context.Background(), j.Name, 0, false, &b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"line 1\n", "line 6\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("log lacks %q: %q", want, b.String())
		}
	}
	if j.ExitCode == nil || *j.ExitCode != 0 {
		t.Errorf("job result %v %s", j.ExitCode, j.Message)
	}
}
