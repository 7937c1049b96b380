package engine

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// setMachines writes the status of machines through fn (as drover's own
// components would: a test stands in for agents and the drift detector).
func (e *env) setMachines(fn func(m *api.Machine), names ...string) {
	e.t.Helper()
	for _, n := range names {
		if _, _, err := mutate(context.Background(), e.st, api.KindMachine, n, func(m *api.Machine) error {
			fn(m)
			return nil
		}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) deployed(n int) []string {
	names := e.machines(n)
	e.setMachines(func(m *api.Machine) { m.Status.State = api.StateDeployed }, names...)
	return names
}

// agents runs a simulated agent for each machine until the test ends or
// the returned function is called.
func (e *env) agents(names []string, fn func(job *api.JobSpec) int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.agent(ctx, m, fn)
		}()
	}
	stop = func() {
		cancel()
		wg.Wait()
	}
	e.t.Cleanup(stop)
	return stop
}

// load reads one object of the store.
func load[T any, P interface {
	*T
	api.Object
}](e *env, kind, name string) P {
	e.t.Helper()
	obj := P(new(T))
	if err := get(context.Background(), e.st, kind, name, obj); err != nil {
		e.t.Fatal(err)
	}
	return obj
}

func (e *env) rollout(name string) *api.Rollout { return load[api.Rollout](e, api.KindRollout, name) }

// waitRollout waits until the rollout reaches state with nothing running.
func (e *env) waitRollout(name, state string, limit time.Duration) *api.Rollout {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		r := e.rollout(name)
		if r.Status.State == state && r.Status.Running == 0 {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("rollout %s: %s with %d running, want %s (%s)", name, r.Status.State, r.Status.Running, state, r.Status.Message)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) startRollout(r *api.Rollout) *api.Rollout {
	e.t.Helper()
	if r.User == "" {
		r.User = "test"
	}
	if err := e.eng.CreateRollout(context.Background(), r, nil); err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) runs(selector func(*api.Run) bool) []*api.Run {
	e.t.Helper()
	recs, _, err := e.st.List(context.Background(), api.KindRun, store.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*api.Run
	for _, rec := range recs {
		var r api.Run
		if err := model.Decode(rec, &r); err != nil {
			e.t.Fatal(err)
		}
		if selector == nil || selector(&r) {
			out = append(out, &r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

func ofRollout(name string) func(*api.Run) bool {
	return func(r *api.Run) bool { return r.Labels[LabelRollout] == name }
}

// peakOverlap is the most runs in progress at one instant, from their
// start and finish times.
func peakOverlap(runs []*api.Run) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, r := range runs {
		end := time.Now()
		if r.FinishedAt != nil {
			end = *r.FinishedAt
		}
		edges = append(edges, edge{r.StartedAt, 1}, edge{end, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if !edges[i].at.Equal(edges[j].at) {
			return edges[i].at.Before(edges[j].at)
		}
		return edges[i].delta < edges[j].delta
	})
	cur, peak := 0, 0
	for _, ed := range edges {
		cur += ed.delta
		peak = max(peak, cur)
	}
	return peak
}

func sleepyAgent(d time.Duration) func(*api.JobSpec) int {
	return func(*api.JobSpec) int {
		time.Sleep(d)
		return 0
	}
}

// Batches go in node range order, each after the previous one ended.
func TestRolloutBatchesInOrder(t *testing.T) {
	e := newEnv(t, Config{MaxConcurrentJobs: 10})
	e.put(task("up", "x", 0, ""), workflow("up", "up"))
	names := e.deployed(7)
	e.agents(names, sleepyAgent(30*time.Millisecond))
	r := e.startRollout(&api.Rollout{Action: api.ActionUpgrade, Workflow: "up", Machines: names, BatchSize: 3})
	r = e.waitRollout(r.Name, api.RolloutDone, 20*time.Second)
	if r.Status.Succeeded != 7 || r.Status.BatchesDone != 3 || r.Status.Batches != 3 || r.Status.FinishedAt == nil {
		t.Fatalf("status %+v", r.Status)
	}
	byMachine := map[string]*api.Run{}
	for _, run := range e.runs(ofRollout(r.Name)) {
		if byMachine[run.Machine] != nil {
			t.Errorf("%s ran twice", run.Machine)
		}
		byMachine[run.Machine] = run
	}
	wantBatch := []int{1, 1, 1, 2, 2, 2, 3}
	for i, m := range r.Status.Machines {
		if m.Name != names[i] || m.Batch != wantBatch[i] || m.State != api.RolloutMachineSucceeded || m.Run != byMachine[m.Name].Name {
			t.Errorf("entry %d: %+v", i, m)
		}
	}
	// Every run of a batch started after every run of the batch before
	// it finished.
	for i, m := range r.Status.Machines {
		for j, prev := range r.Status.Machines[:i] {
			if prev.Batch < m.Batch && byMachine[m.Name].StartedAt.Before(*byMachine[prev.Name].FinishedAt) {
				t.Errorf("%s (batch %d) started before %s (batch %d) finished", names[i], m.Batch, names[j], prev.Batch)
			}
		}
	}
	if p := peakOverlap(e.runs(ofRollout(r.Name))); p != 3 {
		t.Errorf("peak %d machines at once, want 3 (the batch size)", p)
	}
	for _, n := range names {
		if m := e.machine(n); m.Status.State != api.StateDeployed || m.Status.LastRunResult != api.RunSucceeded {
			t.Errorf("%s: %s %s", n, m.Status.State, m.Status.LastRunResult)
		}
	}
}

// Within a batch, never more than maxUnavailable machines run at once.
func TestRolloutMaxUnavailable(t *testing.T) {
	e := newEnv(t, Config{MaxConcurrentJobs: 10})
	e.put(task("a", "x", 0, ""), task("b", "x", 0, ""), workflow("up", "a", "b"))
	names := e.deployed(9)
	var mu sync.Mutex
	n := 0
	e.agents(names, func(*api.JobSpec) int {
		mu.Lock()
		n++
		d := time.Duration(5+n*7%40) * time.Millisecond
		mu.Unlock()
		time.Sleep(d)
		return 0
	})
	r := e.startRollout(&api.Rollout{Action: api.ActionUpgrade, Workflow: "up", Machines: names, BatchSize: 5, MaxUnavailable: 2})
	r = e.waitRollout(r.Name, api.RolloutDone, 30*time.Second)
	if r.Status.Succeeded != 9 || r.Status.BatchesDone != 2 {
		t.Fatalf("status %+v", r.Status)
	}
	runs := e.runs(ofRollout(r.Name))
	if p := peakOverlap(runs); p != 2 {
		t.Errorf("peak %d runs at once, want exactly 2 (maxUnavailable)", p)
	}
	// The jobs agree with the runs.
	recs, _, _ := e.st.List(context.Background(), api.KindJob, store.ListOptions{})
	var jobRuns []*api.Run
	for _, rec := range recs {
		var j api.Job
		_ = model.Decode(rec, &j)
		jobRuns = append(jobRuns, &api.Run{StartedAt: *j.StartedAt, FinishedAt: j.FinishedAt})
	}
	if len(jobRuns) != 18 {
		t.Errorf("%d jobs, want 18", len(jobRuns))
	}
	if p := peakOverlap(jobRuns); p > 2 {
		t.Errorf("peak %d jobs at once, want at most 2", p)
	}
}

// After maxFailures failed machines nothing new starts; the rollout says
// which machines failed; resume goes on with the others.
func TestRolloutStopsAfterMaxFailuresAndResumes(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("up", "x", 0, ""), workflow("up", "up"))
	names := e.deployed(6)
	var mu sync.Mutex
	failing := "m3"
	e.agents(names, func(j *api.JobSpec) int {
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if failing != "" && strings.HasPrefix(j.Run, failing+".") {
			return 4
		}
		return 0
	})
	r := e.startRollout(&api.Rollout{Action: api.ActionUpgrade, Workflow: "up", Machines: names, BatchSize: 2, MaxFailures: 1})
	r = e.waitRollout(r.Name, api.RolloutPaused, 20*time.Second)
	if !strings.Contains(r.Status.Message, "stopped after 1 failed machine (max-failures 1): m3;") || !strings.Contains(r.Status.Message, "drover rollouts resume "+r.Name) {
		t.Errorf("message %q", r.Status.Message)
	}
	if s := r.Status; s.Succeeded != 3 || s.Failed != 1 || s.Pending != 2 || s.BatchesDone != 2 {
		t.Errorf("status %+v", s)
	}
	if m := r.Status.Machines[2]; m.State != api.RolloutMachineFailed || !strings.Contains(m.Message, "task up failed with exit code 4") {
		t.Errorf("m3: %+v", m)
	}
	// Nothing starts while paused, even on events.
	e.setMachines(func(m *api.Machine) { m.Labels = map[string]string{"poke": "1"} }, "m5", "m6")
	time.Sleep(200 * time.Millisecond)
	if runs := e.runs(func(r *api.Run) bool { return r.Machine == "m5" || r.Machine == "m6" }); len(runs) != 0 {
		t.Fatalf("%d runs started while paused", len(runs))
	}
	// Resumed, the rollout lets m3's failure pass and stops again on the
	// next one.
	mu.Lock()
	failing = "m5"
	mu.Unlock()
	if _, err := e.eng.ResumeRollout(context.Background(), r.Name, false, "test"); err != nil {
		t.Fatal(err)
	}
	r = e.waitRollout(r.Name, api.RolloutPaused, 20*time.Second)
	if s := r.Status; s.Failed != 2 || s.Pending != 0 || s.IgnoredFailures != 1 || !strings.HasPrefix(s.Message, "stopped after 1 more failed machine since the resume (max-failures 1): m3, m5;") {
		t.Errorf("after resume: %+v", s)
	}
	mu.Lock()
	failing = ""
	mu.Unlock()
	if _, err := e.eng.ResumeRollout(context.Background(), r.Name, false, "test"); err != nil {
		t.Fatal(err)
	}
	r = e.waitRollout(r.Name, api.RolloutDone, 20*time.Second)
	if s := r.Status; s.Succeeded != 4 || s.Failed != 2 || s.Message != "4 succeeded, 2 failed: m3, m5" {
		t.Errorf("after the second resume: %+v", s)
	}
	// m3 and m5 are broken after their failed upgrade: retrying is refused
	// by the lifecycle, and the refusal is a failure: the first one stops
	// the rollout again.
	if _, err := e.eng.ResumeRollout(context.Background(), r.Name, true, "test"); err != nil {
		t.Fatal(err)
	}
	r = e.waitRollout(r.Name, api.RolloutPaused, 20*time.Second)
	if m := r.Status.Machines[2]; m.State != api.RolloutMachineFailed || m.Attempts != 2 || m.Message != `machine "m3": cannot upgrade from state broken (commission it again first)` || m.StartedAt != nil {
		t.Errorf("m3 retried: %+v", m)
	}
	if m := r.Status.Machines[4]; m.State != api.RolloutMachinePending || m.Attempts != 1 {
		t.Errorf("m5 after the stop: %+v", m)
	}
	if runs := e.runs(ofRollout(r.Name)); len(runs) != 6 {
		t.Errorf("%d runs, want 6 (the refused retry starts none)", len(runs))
	}
	if _, err := e.eng.ResumeRollout(context.Background(), "nope", false, "t"); err == nil || !strings.Contains(err.Error(), `rollout "nope"`) {
		t.Errorf("resume of a missing rollout: %v", err)
	}
}

// Lifecycle refusals fail machines with the reason; with maxFailures 0 the
// rollout goes on and ends done.
func TestRolloutRefusalsAreFailures(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("up", "x", 0, ""), workflow("up", "up"))
	names := e.deployed(3)
	e.setMachines(func(m *api.Machine) { m.Status.State = api.StateReady }, "m2")
	e.agents(names, sleepyAgent(0))
	r := e.startRollout(&api.Rollout{Action: api.ActionUpgrade, Workflow: "up", Machines: append(names, "ghost"), BatchSize: 1})
	r = e.waitRollout(r.Name, api.RolloutDone, 20*time.Second)
	want := map[string]string{
		"m2":    `machine "m2": cannot upgrade from state ready (deploy it first)`,
		"ghost": `machine "ghost": not found`,
	}
	for _, m := range r.Status.Machines {
		if msg, bad := want[m.Name]; bad {
			if m.State != api.RolloutMachineFailed || m.Message != msg || m.Run != "" {
				t.Errorf("%s: %+v", m.Name, m)
			}
		} else if m.State != api.RolloutMachineSucceeded {
			t.Errorf("%s: %+v", m.Name, m)
		}
	}
	if r.Status.Message != "2 succeeded, 2 failed: m2, ghost" {
		t.Errorf("message %q", r.Status.Message)
	}
}

// Cancel starts nothing new and lets running machines finish.
func TestRolloutCancel(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("up", "x", 0, ""), workflow("up", "up"))
	names := e.deployed(4)
	release := make(chan struct{})
	e.agents(names, func(*api.JobSpec) int {
		<-release
		return 0
	})
	r := e.startRollout(&api.Rollout{Action: api.ActionUpgrade, Workflow: "up", Machines: names, BatchSize: 2})
	deadline := time.Now().Add(10 * time.Second)
	for e.rollout(r.Name).Status.Running != 2 {
		if time.Now().After(deadline) {
			t.Fatal("batch 1 did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := e.eng.CancelRollout(context.Background(), r.Name, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.State != api.RolloutCancelled || c.Status.FinishedAt != nil || c.Status.Message != "cancelled by alice with 2 machines not started" {
		t.Errorf("cancelled: %+v", c.Status)
	}
	close(release)
	r = e.waitRollout(r.Name, api.RolloutCancelled, 10*time.Second)
	if s := r.Status; s.Succeeded != 2 || s.Pending != 2 || s.FinishedAt == nil {
		t.Errorf("after cancel: %+v", s)
	}
	time.Sleep(100 * time.Millisecond)
	if runs := e.runs(ofRollout(r.Name)); len(runs) != 2 {
		t.Errorf("%d runs, want the 2 started before the cancel", len(runs))
	}
	if _, err := e.eng.CancelRollout(context.Background(), r.Name, "alice"); err == nil {
		t.Error("second cancel accepted")
	}
	if _, err := e.eng.ResumeRollout(context.Background(), r.Name, false, "alice"); err == nil || !strings.Contains(err.Error(), "was cancelled") {
		t.Errorf("resume of a cancelled rollout: %v", err)
	}
}

// A batch starts pauseBetween after the previous one ended.
func TestRolloutPauseBetween(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("up", "x", 0, ""), workflow("up", "up"))
	names := e.deployed(3)
	e.agents(names, sleepyAgent(0))
	const pause = 400 * time.Millisecond
	r := e.startRollout(&api.Rollout{Action: api.ActionUpgrade, Workflow: "up", Machines: names, BatchSize: 1, PauseBetween: pause.String()})
	// While it pauses, the next batch's time is in the status.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur := e.rollout(r.Name)
		if cur.Status.NextBatchAt != nil {
			if got := cur.Status.NextBatchAt.Sub(*cur.Status.BatchFinishedAt); got != pause {
				t.Errorf("next batch at +%s, want +%s", got, pause)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no nextBatchAt")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.waitRollout(r.Name, api.RolloutDone, 20*time.Second)
	runs := e.runs(ofRollout(r.Name))
	if len(runs) != 3 {
		t.Fatalf("%d runs", len(runs))
	}
	for i := 1; i < len(runs); i++ {
		if gap := runs[i].StartedAt.Sub(*runs[i-1].FinishedAt); gap < pause {
			t.Errorf("batch %d started %s after batch %d ended, want at least %s", i+1, gap, i, pause)
		}
	}
}

// The engine stops in the middle of a rollout, once while machines run and
// once during a pause; a new engine on the same store finishes it without
// starting any machine twice.
func TestRolloutSurvivesEngineRestart(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("up", "x", 0, ""), workflow("up", "up"))
	names := e.deployed(6)
	r := e.startRollout(&api.Rollout{Action: api.ActionUpgrade, Workflow: "up", Machines: names, BatchSize: 2, PauseBetween: "300ms"})
	// No agents yet: batch 1 starts and stays running.
	deadline := time.Now().Add(10 * time.Second)
	for e.rollout(r.Name).Status.Running != 2 {
		if time.Now().After(deadline) {
			t.Fatal("batch 1 did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.shutdown()
	e.start(Config{})
	var mu sync.Mutex
	ran := map[string]int{}
	count := func(j *api.JobSpec) int {
		mu.Lock()
		ran[strings.SplitN(j.Run, ".", 2)[0]]++
		mu.Unlock()
		return 0
	}
	stop := e.agents(names, count)
	// Stop again while batch 2 waits out its pause.
	for e.rollout(r.Name).Status.NextBatchAt == nil {
		if time.Now().After(deadline) {
			t.Fatal("no pause after batch 1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	e.shutdown()
	e.start(Config{})
	e.agents(names, count)
	r = e.waitRollout(r.Name, api.RolloutDone, 20*time.Second)
	if r.Status.Succeeded != 6 || r.Status.BatchesDone != 3 {
		t.Errorf("status %+v", r.Status)
	}
	runs := e.runs(nil)
	if len(runs) != 6 {
		t.Errorf("%d runs, want 6", len(runs))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range names {
		if ran[m] != 1 {
			t.Errorf("%s ran %d jobs, want 1", m, ran[m])
		}
	}
	if p := peakOverlap(runs); p > 2 {
		t.Errorf("%d machines at once", p)
	}
}

func TestNewRolloutChecks(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		r    api.Rollout
		want string
	}{
		{api.Rollout{Action: "verify", Machines: []string{"a"}}, `a rollout runs commission, deploy, upgrade, decommission, not "verify"`},
		{api.Rollout{Action: "upgrade", Machines: []string{"a"}, BatchSize: -1}, "field batchSize: -1 is negative"},
		{api.Rollout{Action: "upgrade", Machines: []string{"a"}, PauseBetween: "soon"}, `field pauseBetween: "soon" is not a duration`},
		{api.Rollout{Action: "upgrade", Machines: []string{"a", "a"}}, `machine "a" is listed twice`},
		{api.Rollout{Action: "upgrade", Machines: []string{"a"}, Workflow: "a b"}, "workflow: invalid name"},
	} {
		if err := NewRollout(&c.r, now); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.r, err, c.want)
		}
	}
	r := api.Rollout{Action: "upgrade", Machines: []string{"a", "b", "c"}, BatchSize: 2}
	if err := NewRollout(&r, now); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Name, "upgrade-") || r.Status.Batches != 2 || r.Status.Pending != 3 || r.Status.State != api.RolloutRunning {
		t.Errorf("%s %+v", r.Name, r.Status)
	}
}
