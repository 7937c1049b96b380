package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

func (e *env) policy(name string) *api.Policy { return load[api.Policy](e, api.KindPolicy, name) }

func (e *env) rolloutsOf(policy string) []*api.Rollout {
	e.t.Helper()
	recs, _, err := e.st.List(context.Background(), api.KindRollout, store.ListOptions{Selector: labelEquals{LabelPolicy, policy}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*api.Rollout
	for _, rec := range recs {
		var r api.Rollout
		if err := model.Decode(rec, &r); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, &r)
	}
	return out
}

func (e *env) eventually(limit time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not after %s (%s)", what, limit, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newMachine registers a machine as an agent would: discovered, with an
// agent and labels.
func (e *env) newMachine(name string, labels map[string]string) {
	m := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: name, Labels: labels}}
	m.Status.State = api.StateDiscovered
	m.Status.AgentID = "agent-" + name
	m.Status.Reachable = true
	e.put(m)
}

func intp(n int) *int { return &n }

// Only machines discovered after the policy exists, matching its selector
// and with an agent, are commissioned.
func TestAutoCommissionNewMachinesOnly(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("inv", "x", 0, ""), workflow("commission", "inv"))
	e.newMachine("old1", map[string]string{"role": "compute"})
	e.put(&api.Policy{Meta: api.Meta{Kind: api.KindPolicy, Name: "new-compute"}, Type: api.PolicyAutoCommission, Selector: "role=compute", Workflow: "commission"})
	e.newMachine("n1", map[string]string{"role": "compute"})
	e.newMachine("n2", map[string]string{"role": "storage"})
	// Created by hand, no agent yet.
	e.put(&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n3", Labels: map[string]string{"role": "compute"}}, Status: api.MachineStatus{State: api.StateDiscovered}})
	e.agents([]string{"old1", "n1", "n2", "n3", "n4"}, sleepyAgent(10*time.Millisecond))
	e.waitState("n1", api.StateReady, 10*time.Second)
	// A machine arriving while the rollout runs joins it or the next.
	e.newMachine("n4", map[string]string{"role": "compute"})
	e.waitState("n4", api.StateReady, 10*time.Second)
	// n3's agent registers: now it is commissioned too.
	e.setMachines(func(m *api.Machine) { m.Status.AgentID = "agent-n3" }, "n3")
	e.waitState("n3", api.StateReady, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	for _, n := range []string{"old1", "n2"} {
		if m := e.machine(n); m.Status.State != api.StateDiscovered || m.Status.LastRun != "" {
			t.Errorf("%s: %s, last run %q: the policy must leave it alone", n, m.Status.State, m.Status.LastRun)
		}
	}
	runs := e.runs(nil)
	if len(runs) != 3 {
		t.Errorf("%d runs, want 3 (n1, n3, n4)", len(runs))
	}
	for _, r := range runs {
		if r.User != "policy/new-compute" || r.Labels[LabelRollout] == "" {
			t.Errorf("run %s by %q, rollout %q", r.Name, r.User, r.Labels[LabelRollout])
		}
	}
	p := e.policy("new-compute")
	if p.Status.Rollout == "" || len(p.Status.Skipped) != 0 {
		t.Errorf("policy status %+v", p.Status)
	}
}

// fleet is machines deployed by real runs of workflow "up", whose task
// renders the param "version" and the machine's own param "extra": changing
// either makes the drift detector mark machines drifted. Its agents can be
// held (jobs wait) and made to fail.
type fleet struct {
	e     *env
	names []string
	mu    sync.Mutex
	hold  chan struct{}
	fail  func(machine string) bool
}

func (e *env) fleet(n int) *fleet {
	e.put(
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "version"}, Default: json.RawMessage(`"1"`)},
		task("up", `echo {{ param "version" }} {{ paramOr "extra" "-" }}`, 0, ""),
		workflow("up", "up"),
	)
	f := &fleet{e: e, names: e.machines(n)}
	e.agents(f.names, func(j *api.JobSpec) int {
		f.mu.Lock()
		hold, fail := f.hold, f.fail
		f.mu.Unlock()
		if hold != nil {
			<-hold
		}
		if fail != nil && fail(strings.SplitN(j.Run, ".", 2)[0]) {
			return 1
		}
		return 0
	})
	e.act(api.ActionCommission, "up", f.names...)
	for _, m := range f.names {
		e.waitState(m, api.StateReady, 10*time.Second)
	}
	e.act(api.ActionDeploy, "up", f.names...)
	for _, m := range f.names {
		e.waitState(m, api.StateDeployed, 10*time.Second)
	}
	return f
}

// holdJobs makes jobs wait until the returned function is called.
func (f *fleet) holdJobs() func() {
	ch := make(chan struct{})
	f.mu.Lock()
	f.hold = ch
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.hold = nil
		f.mu.Unlock()
		close(ch)
	}
}

// drift changes the machines' own param, as a user would.
func (f *fleet) drift(value string, names ...string) {
	f.e.setMachines(func(m *api.Machine) {
		m.Params = map[string]json.RawMessage{"extra": json.RawMessage(strconv.Quote(value))}
	}, names...)
	for _, n := range names {
		f.e.waitDrift(n, true)
	}
}

// Deployed machines whose configuration drifted are upgraded by a rollout
// with the policy's settings; machines that drift meanwhile go in the next
// one; new drift after an upgrade is upgraded again.
func TestAutoUpgradeOnDrift(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.fleet(6)
	e.setMachines(func(m *api.Machine) { m.Labels = map[string]string{"role": "web"} }, f.names[:5]...)
	e.setMachines(func(m *api.Machine) { m.Labels = map[string]string{"role": "db"} }, f.names[5])
	e.put(&api.Policy{Meta: api.Meta{Kind: api.KindPolicy, Name: "web"}, Type: api.PolicyAutoUpgrade, Selector: "role=web", Workflow: "up", BatchSize: 2, MaxUnavailable: 1})
	time.Sleep(100 * time.Millisecond)
	if rs := e.rolloutsOf("web"); len(rs) != 0 {
		t.Fatalf("a rollout without drift: %+v", rs[0])
	}
	release := f.holdJobs()
	f.drift("a", "m1", "m2", "m3", "m6")
	var first *api.Rollout
	e.eventually(5*time.Second, "a rollout", func() (bool, string) {
		rs := e.rolloutsOf("web")
		if len(rs) == 1 && rs[0].Status.Running == 1 {
			first = rs[0]
			return true, ""
		}
		return false, fmt.Sprint(len(rs))
	})
	if strings.Join(first.Machines, ",") != "m1,m2,m3" || first.BatchSize != 2 || first.MaxUnavailable != 1 || first.MaxFailures != 1 || first.Action != api.ActionUpgrade {
		t.Errorf("rollout %+v", first)
	}
	// m4 drifts while it runs: it waits for the next rollout.
	f.drift("a", "m4")
	e.eventually(5*time.Second, "the policy waits", func() (bool, string) {
		p := e.policy("web")
		return strings.Contains(p.Status.Message, "1 machine waiting for rollout "+first.Name), p.Status.Message
	})
	release()
	e.waitRollout(first.Name, api.RolloutDone, 10*time.Second)
	var second *api.Rollout
	e.eventually(5*time.Second, "a second rollout", func() (bool, string) {
		for _, r := range e.rolloutsOf("web") {
			if r.Name != first.Name {
				second = r
				return true, ""
			}
		}
		return false, ""
	})
	if strings.Join(second.Machines, ",") != "m4" {
		t.Errorf("second rollout has %v", second.Machines)
	}
	e.waitRollout(second.Name, api.RolloutDone, 10*time.Second)
	for _, n := range []string{"m1", "m2", "m3", "m4"} {
		if m := e.machine(n); m.Status.ConfigDrift || m.Status.State != api.StateDeployed {
			t.Errorf("%s after its upgrade: %s, drift %v", n, m.Status.State, m.Status.ConfigDrift)
		}
	}
	if p := peakOverlap(e.runs(func(r *api.Run) bool { return r.Action == api.ActionUpgrade })); p != 1 {
		t.Errorf("%d upgrades at once, want 1 (maxUnavailable)", p)
	}
	// New drift after the upgrade is acted on again.
	f.drift("b", "m2")
	e.eventually(5*time.Second, "a third rollout for m2", func() (bool, string) {
		rs := e.rolloutsOf("web")
		return len(rs) == 3, fmt.Sprint(len(rs))
	})
	time.Sleep(200 * time.Millisecond)
	if n := len(e.runs(func(r *api.Run) bool { return r.Machine == "m6" && r.Action == api.ActionUpgrade })); n != 0 {
		t.Errorf("m6 (not selected) was upgraded %d times", n)
	}
	if rs := e.rolloutsOf("web"); len(rs) != 3 {
		t.Errorf("%d rollouts, want 3", len(rs))
	}
}

// A machine the policy failed on is skipped, with the reason, and not
// tried again until the policy changes: no loop.
func TestAutoUpgradeDoesNotRetryForever(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.fleet(2)
	// No workflow anywhere: every start is refused, and the machines stay
	// deployed and drifted.
	e.put(&api.Policy{Meta: api.Meta{Kind: api.KindPolicy, Name: "all"}, Type: api.PolicyAutoUpgrade, MaxFailures: intp(0)})
	f.drift("a", f.names...)
	e.eventually(5*time.Second, "the policy skips both machines", func() (bool, string) {
		p := e.policy("all")
		return len(p.Status.Skipped) == 2, fmt.Sprintf("%+v", p.Status)
	})
	p := e.policy("all")
	if s := p.Status.Skipped[0]; s.Machine != "m1" || !strings.Contains(s.Reason, `upgrade failed in rollout all-`) || !strings.Contains(s.Reason, "no workflow for upgrade") {
		t.Errorf("skip %+v", s)
	}
	// Machine changes that do not touch the cause do not bring it back.
	for i := 0; i < 5; i++ {
		e.setMachines(func(m *api.Machine) { m.Labels = map[string]string{"poke": fmt.Sprint(i)} }, f.names...)
	}
	time.Sleep(policySettle + 300*time.Millisecond)
	if rs := e.rolloutsOf("all"); len(rs) != 1 {
		t.Fatalf("%d rollouts: the policy retried", len(rs))
	}
	// Changing the policy (giving it a workflow) tries again, and works.
	p.Workflow = "up"
	p.Status = api.PolicyStatus{}
	e.put(p)
	e.eventually(10*time.Second, "both upgraded", func() (bool, string) {
		rs := e.rolloutsOf("all")
		for _, r := range rs {
			if r.Status.State == api.RolloutDone && r.Status.Succeeded == 2 {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(rs))
	})
	e.eventually(5*time.Second, "no skip left", func() (bool, string) {
		p := e.policy("all")
		return len(p.Status.Skipped) == 0, fmt.Sprintf("%+v", p.Status)
	})
}

// A disabled policy does nothing; a failed upgrade stops the policy's
// rollout (max-failures 1 by default) and leaves the machine broken, which
// the policy does not touch again.
func TestPolicyDisabledAndFailedUpgrade(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.fleet(3)
	off := false
	e.put(&api.Policy{Meta: api.Meta{Kind: api.KindPolicy, Name: "p"}, Type: api.PolicyAutoUpgrade, Workflow: "up", BatchSize: 1, Enabled: &off})
	f.drift("a", f.names...)
	e.eventually(5*time.Second, "disabled status", func() (bool, string) {
		p := e.policy("p")
		return p.Status.Message == "disabled (enabled: false)", p.Status.Message
	})
	time.Sleep(policySettle)
	if rs := e.rolloutsOf("p"); len(rs) != 0 {
		t.Fatal("a disabled policy started a rollout")
	}
	f.mu.Lock()
	f.fail = func(m string) bool { return m == "m1" }
	f.mu.Unlock()
	p := e.policy("p")
	p.Enabled = nil
	p.Status = api.PolicyStatus{}
	e.put(p)
	var r *api.Rollout
	e.eventually(5*time.Second, "a rollout", func() (bool, string) {
		rs := e.rolloutsOf("p")
		if len(rs) == 1 {
			r = rs[0]
			return true, ""
		}
		return false, ""
	})
	r = e.waitRollout(r.Name, api.RolloutPaused, 10*time.Second)
	if !strings.Contains(r.Status.Message, "stopped after 1 failed machine (max-failures 1): m1;") || r.Status.Pending != 2 {
		t.Errorf("rollout %+v", r.Status)
	}
	if m := e.machine("m1"); m.Status.State != api.StateBroken {
		t.Errorf("m1 %s", m.Status.State)
	}
	// The paused rollout holds the policy.
	e.eventually(5*time.Second, "the policy waits", func() (bool, string) {
		p := e.policy("p")
		return p.Status.Message == fmt.Sprintf("rollout %s is paused: drover rollouts resume %s (or cancel it)", r.Name, r.Name), p.Status.Message
	})
	// Cancelled: machines it did not start are skipped too (the policy
	// respects the cancel), and broken m1 is left alone.
	if _, err := e.eng.CancelRollout(context.Background(), r.Name, "t"); err != nil {
		t.Fatal(err)
	}
	e.eventually(5*time.Second, "skips after the cancel", func() (bool, string) {
		p := e.policy("p")
		return len(p.Status.Skipped) == 2 && strings.Contains(p.Status.Skipped[0].Reason, "was cancelled before it started"), fmt.Sprintf("%+v", p.Status)
	})
	time.Sleep(policySettle)
	if rs := e.rolloutsOf("p"); len(rs) != 1 {
		t.Errorf("%d rollouts after the cancel", len(rs))
	}
}
