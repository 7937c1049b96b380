package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

func profile(name, selector string, kv ...string) *api.Profile {
	p := &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: name}, Selector: selector, Params: map[string]json.RawMessage{}}
	for i := 0; i+1 < len(kv); i += 2 {
		b, _ := json.Marshal(kv[i+1])
		p.Params[kv[i]] = b
	}
	return p
}

// relabel sets a machine's labels the way an apply does: the status stays.
func (e *env) relabel(name string, labels map[string]string) {
	e.t.Helper()
	if _, _, err := mutate(context.Background(), e.st, api.KindMachine, name, func(m *api.Machine) error {
		m.Labels = labels
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) lookup(machine, param string) (string, string) {
	e.t.Helper()
	in, err := e.eng.RenderInput(context.Background(), e.machine(machine))
	if err != nil {
		e.t.Fatal(err)
	}
	v, ok := in.Lookup(param)
	if !ok {
		return "", ""
	}
	return string(v.Value), v.Source
}

// Profiles attach by label: after the machine's own profiles, before
// global, sorted by name; a label or selector change is seen by the very
// next render.
func TestSelectorProfilesLookupOrder(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(
		profile("global", "", "x", "global", "y", "global", "z", "global"),
		profile("listed", "", "x", "listed"),
		profile("role-storage", "role=storage", "x", "storage", "y", "storage", "z", "storage"),
		profile("a-fast", "disk in (ssd,nvme)", "z", "fast"),
	)
	e.machines(1)
	if _, _, err := mutate(context.Background(), e.st, api.KindMachine, "m1", func(m *api.Machine) error {
		m.Profiles = []string{"listed"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check := func(param, value, source string) {
		t.Helper()
		v, s := e.lookup("m1", param)
		if v != value || s != source {
			t.Errorf("%s = %s from %q, want %s from %q", param, v, s, value, source)
		}
	}
	check("x", `"listed"`, "profile listed")
	check("y", `"global"`, "profile global")

	e.relabel("m1", map[string]string{"role": "storage"})
	check("x", `"listed"`, "profile listed")
	check("y", `"storage"`, "profile role-storage (selector role=storage)")
	check("z", `"storage"`, "profile role-storage (selector role=storage)")

	e.relabel("m1", map[string]string{"role": "storage", "disk": "nvme"})
	check("z", `"fast"`, "profile a-fast (selector disk in (ssd,nvme))") // a-fast sorts first

	e.put(profile("role-storage", "role=db", "x", "storage", "y", "storage", "z", "storage"))
	check("y", `"global"`, "profile global")
	check("z", `"fast"`, "profile a-fast (selector disk in (ssd,nvme))")

	e.put(profile("role-storage", "role=storage", "y", "storage-2"))
	check("y", `"storage-2"`, "profile role-storage (selector role=storage)")
}

// configAgent runs jobs like an agent that applies configuration: it keeps
// the last script of each task per machine.
type configAgent struct {
	mu      sync.Mutex
	scripts map[string]string // machine/task → script
	fail    func(job *api.JobSpec, machine string) int
}

func (e *env) configAgents(names ...string) *configAgent {
	a := &configAgent{scripts: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.agent(ctx, n, func(job *api.JobSpec) int {
				a.mu.Lock()
				defer a.mu.Unlock()
				a.scripts[n+"/"+job.Task] = job.Script
				if a.fail != nil {
					return a.fail(job, n)
				}
				return 0
			})
		}()
	}
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	return a
}

func (e *env) act(action, workflow string, machines ...string) {
	e.t.Helper()
	for _, m := range machines {
		if _, err := e.eng.StartAction(context.Background(), m, action, workflow, "test"); err != nil {
			e.t.Fatal(err)
		}
	}
}

// waitDrift waits until the machine's configDrift is want and returns it.
func (e *env) waitDrift(name string, want bool) *api.Machine {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := e.machine(name)
		if m.Status.ConfigDrift == want && m.Status.Run == "" {
			return m
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("machine %s: configDrift %v (%s), want %v", name, m.Status.ConfigDrift, m.Status.ConfigDriftReason, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settleDrift waits until the drift reconciler has looked at every machine
// queued, and returns how many renders it made so far.
func (e *env) settleDrift() int64 {
	last := e.eng.DriftRenders()
	for {
		time.Sleep(3 * driftSettle)
		now := e.eng.DriftRenders()
		if now == last && e.eng.drift.queue.Len() == 0 {
			return now
		}
		last = now
	}
}

func TestConfigDrift(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(
		profile("global", "", "motd", "hello"),
		profile("role-storage", "role=storage", "mount", "/srv/a"),
		task("write", `echo {{ param "mount" }} {{ param "motd" }} > /etc/node.conf`, 0, ""),
		task("other", `true`, 0, ""),
		workflow("configure", "write"),
		workflow("unrelated", "other"),
	)
	e.machines(2)
	e.relabel("m1", map[string]string{"role": "storage"})
	e.relabel("m2", map[string]string{"role": "storage"})
	agent := e.configAgents("m1", "m2")

	e.act(api.ActionCommission, "configure", "m1", "m2")
	m := e.waitState("m1", api.StateReady, 10*time.Second)
	if m.Status.AppliedWorkflow != "configure" || !strings.HasPrefix(m.Status.AppliedConfig, "sha256:") || m.Status.ConfigDrift {
		t.Fatalf("after commission: %+v", m.Status)
	}
	agent.mu.Lock()
	if got := agent.scripts["m1/write"]; got != "echo /srv/a hello > /etc/node.conf" {
		t.Errorf("script %q", got)
	}
	agent.mu.Unlock()
	applied := m.Status.AppliedConfig

	// A profile param changes: drift; changed back: in sync again.
	e.put(profile("role-storage", "role=storage", "mount", "/srv/b"))
	m = e.waitDrift("m1", true)
	if !strings.Contains(m.Status.ConfigDriftReason, "workflow configure renders differently now") {
		t.Errorf("reason %q", m.Status.ConfigDriftReason)
	}
	e.put(profile("role-storage", "role=storage", "mount", "/srv/a"))
	e.waitDrift("m1", false)
	e.waitDrift("m2", false)

	// A machine's labels: no longer a storage node, so the param is
	// missing: drift, saying so.
	e.relabel("m2", nil)
	m = e.waitDrift("m2", true)
	if !strings.Contains(m.Status.ConfigDriftReason, `workflow configure cannot be rendered for this machine now: task write: param "mount" is not set`) {
		t.Errorf("reason %q", m.Status.ConfigDriftReason)
	}
	e.relabel("m2", map[string]string{"role": "storage"})
	e.waitDrift("m2", false)

	// A task's script changes: drift, until the workflow runs again.
	e.put(task("write", `echo {{ param "mount" }} {{ param "motd" }} >> /etc/node.conf`, 0, ""))
	e.waitDrift("m1", true)
	e.waitDrift("m2", true)
	e.act(api.ActionDeploy, "configure", "m1")
	m = e.waitState("m1", api.StateDeployed, 10*time.Second)
	if m.Status.ConfigDrift || m.Status.AppliedConfig == applied {
		t.Errorf("after deploy: drift %v, applied %s (was %s)", m.Status.ConfigDrift, m.Status.AppliedConfig, applied)
	}
	time.Sleep(3 * driftSettle)
	if m := e.machine("m1"); m.Status.ConfigDrift {
		t.Errorf("m1 drifted again after deploy: %s", m.Status.ConfigDriftReason)
	}
	if m := e.machine("m2"); !m.Status.ConfigDrift {
		t.Error("m2 did not run the new script; it must stay drifted")
	}

	// The retries and timeout are part of what was applied.
	e.put(task("write", `echo {{ param "mount" }} {{ param "motd" }} >> /etc/node.conf`, 0, "1m"))
	e.waitDrift("m1", true)

	// A change to another workflow's task renders nothing of these.
	before := e.settleDrift()
	e.put(task("other", `false`, 0, ""))
	if n := e.settleDrift() - before; n != 0 {
		t.Errorf("a task of no applied workflow rendered %d machines", n)
	}

	// Decommission: nothing applied any more, nothing to drift from.
	e.act(api.ActionDecommission, "unrelated", "m1")
	m = e.waitState("m1", api.StateDecommissioned, 10*time.Second)
	if m.Status.AppliedWorkflow != "" || m.Status.AppliedConfig != "" || m.Status.ConfigDrift {
		t.Errorf("after decommission: %+v", m.Status)
	}
}

// A change to global touches every configured machine; a burst of changes
// renders each machine about once, not once per change.
func TestConfigDriftCoalescesBursts(t *testing.T) {
	const machines, changes = 60, 20
	e := newEnv(t, Config{MaxConcurrentJobs: machines})
	e.put(profile("global", "", "x", "v0"), task("write", `echo {{ param "x" }}`, 0, ""), workflow("configure", "write"))
	names := e.machines(machines)
	e.configAgents(names...)
	e.act(api.ActionCommission, "configure", names...)
	for _, n := range names {
		e.waitState(n, api.StateReady, 20*time.Second)
	}
	before := e.settleDrift()
	for i := 1; i <= changes; i++ {
		e.put(profile("global", "", "x", fmt.Sprintf("v%d", i)))
	}
	for _, n := range names {
		e.waitDrift(n, true)
	}
	renders := e.settleDrift() - before
	t.Logf("%d changes to global on %d machines: %d renders", changes, machines, renders)
	if renders < machines || renders > 2*machines {
		t.Errorf("%d renders for %d changes on %d machines; want about one per machine", renders, changes, machines)
	}

	// And back: one more burst ends where it started.
	for i := changes - 1; i >= 0; i-- {
		e.put(profile("global", "", "x", fmt.Sprintf("v%d", i)))
	}
	for _, n := range names {
		e.waitDrift(n, false)
	}
}

// A verify run keeps the machine's state; a failed one marks the machine
// drifted (not broken) and says which job shows why.
func TestVerifyResults(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("push", "true", 0, ""), task("check", "check", 0, ""), task("hang", "sleep", 0, ""),
		workflow("configure", "push"), workflow("verify", "check"), workflow("verify-hang", "hang"))
	e.machines(3)
	agent := e.configAgents("m1", "m2", "m3")
	agent.fail = func(job *api.JobSpec, machine string) int {
		switch {
		case job.Task == "check" && machine == "m2":
			return 1
		case job.Task == "hang":
			return -1 // what a timed-out task reports
		}
		return 0
	}
	e.act(api.ActionCommission, "configure", "m1", "m2", "m3")
	for _, n := range []string{"m1", "m2", "m3"} {
		e.waitState(n, api.StateReady, 10*time.Second)
	}
	e.act(api.ActionVerify, "verify", "m1", "m2")
	e.act(api.ActionVerify, "verify-hang", "m3")
	want := map[string]string{"m1": api.VerifyInSync, "m2": api.VerifyDrifted, "m3": api.VerifyError}
	for n, result := range want {
		m := e.waitState(n, api.StateReady, 10*time.Second)
		lv := m.Status.LastVerify
		if lv == nil || lv.Result != result || lv.Run != m.Status.LastRun {
			t.Fatalf("%s: lastVerify %+v, want %s of run %s", n, lv, result, m.Status.LastRun)
		}
		var run api.Run
		if err := get(context.Background(), e.st, api.KindRun, lv.Run, &run); err != nil {
			t.Fatal(err)
		}
		if run.Result != result {
			t.Errorf("%s: run result %q, want %q", n, run.Result, result)
		}
		if result == api.VerifyInSync {
			if lv.Job != "" || run.FailedJob != "" {
				t.Errorf("%s: in sync, yet failed job %q/%q", n, lv.Job, run.FailedJob)
			}
			continue
		}
		if lv.Job != JobName(run.Name, 0, 1) || run.FailedJob != lv.Job || !strings.Contains(lv.Message, "drover logs "+lv.Job) {
			t.Errorf("%s: job %q, run's failed job %q, message %q", n, lv.Job, run.FailedJob, lv.Message)
		}
	}
	// A commission applies the configuration again: the old verdict goes.
	e.act(api.ActionCommission, "configure", "m2")
	if m := e.waitState("m2", api.StateReady, 10*time.Second); m.Status.LastVerify != nil {
		t.Errorf("lastVerify kept after commission: %+v", m.Status.LastVerify)
	}
}
