package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/store/bolt"
)

type env struct {
	t    *testing.T
	st   store.Store
	eng  *Engine
	ctx  context.Context
	stop func()
	done chan struct{}
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st}
	e.start(cfg)
	return e
}

func (e *env) start(cfg Config) {
	e.eng = New(e.st, cfg, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	e.ctx, e.stop, e.done = ctx, cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		_ = e.eng.Run(ctx)
	}()
	e.t.Cleanup(e.shutdown)
	select {
	case <-e.eng.Ready():
	case <-time.After(10 * time.Second):
		e.t.Fatal("engine not ready")
	}
}

func (e *env) shutdown() {
	e.stop()
	<-e.done
}

func (e *env) put(objs ...api.Object) {
	e.t.Helper()
	var ops []store.Op
	for _, o := range objs {
		op, err := createOp(o)
		if err != nil {
			e.t.Fatal(err)
		}
		op.Type = store.OpPut
		ops = append(ops, op)
	}
	if _, _, err := e.st.Txn(context.Background(), ops); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) machines(n int) []string {
	var names []string
	for i := 1; i <= n; i++ {
		m := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: fmt.Sprintf("m%d", i)}}
		m.Status.State = api.StateDiscovered
		m.Status.AgentID = fmt.Sprintf("agent-%d", i)
		m.Status.Reachable = true
		e.put(m)
		names = append(names, m.Name)
	}
	return names
}

func task(name, script string, retries int, timeout string) *api.Task {
	return &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: name}, Script: script, Retries: retries, Timeout: timeout}
}

func workflow(name string, tasks ...string) *api.Workflow {
	return &api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: name}, Tasks: tasks}
}

func (e *env) machine(name string) *api.Machine {
	e.t.Helper()
	var m api.Machine
	if err := get(context.Background(), e.st, api.KindMachine, name, &m); err != nil {
		e.t.Fatal(err)
	}
	return &m
}

func (e *env) waitState(name, state string, limit time.Duration) *api.Machine {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		m := e.machine(name)
		if m.Status.State == state && m.Status.Run == "" {
			return m
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("machine %s: state %s run %q, want %s (message %q)", name, m.Status.State, m.Status.Run, state, m.Status.Message)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeAgent polls like an agent and runs jobs with fn.
func (e *env) agent(ctx context.Context, machine string, fn func(job *api.JobSpec) int) {
	for ctx.Err() == nil {
		spec, err := e.eng.NextJob(ctx, machine, "", time.Second)
		if err != nil || spec == nil {
			continue
		}
		code := fn(spec)
		if err := e.eng.CompleteJob(context.Background(), machine, spec.Name, api.JobResult{ExitCode: code}); err != nil && ctx.Err() == nil {
			e.t.Errorf("complete %s: %v", spec.Name, err)
		}
	}
}

func TestGlobalLimitAndOneJobPerMachine(t *testing.T) {
	e := newEnv(t, Config{MaxConcurrentJobs: 4})
	e.put(task("a", "true", 0, ""), task("b", "true", 0, ""), task("c", "true", 0, ""), workflow("wf", "a", "b", "c"))
	names := e.machines(16)
	var running, peak atomic.Int64
	var mu sync.Mutex
	perMachine := map[string]int{}
	ran := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.agent(ctx, m, func(job *api.JobSpec) int {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				mu.Lock()
				perMachine[m]++
				if perMachine[m] > 1 {
					t.Errorf("two jobs at once on %s", m)
				}
				ran[m+"/"+job.Task]++
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				mu.Lock()
				perMachine[m]--
				mu.Unlock()
				running.Add(-1)
				return 0
			})
		}()
	}
	for _, m := range names {
		if _, err := e.eng.StartAction(context.Background(), m, api.ActionCommission, "wf", "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range names {
		e.waitState(m, api.StateReady, 20*time.Second)
	}
	cancel()
	wg.Wait()
	if p := peak.Load(); p > 4 {
		t.Errorf("%d jobs ran at once, limit 4", p)
	} else if p < 2 {
		t.Errorf("only %d job at a time: the limit is not used", p)
	}
	for _, m := range names {
		for _, tk := range []string{"a", "b", "c"} {
			if ran[m+"/"+tk] != 1 {
				t.Errorf("%s/%s ran %d times", m, tk, ran[m+"/"+tk])
			}
		}
	}
	if s := e.eng.Stats(); s.Running != 0 || s.Queued != 0 {
		t.Errorf("stats after the end: %+v", s)
	}
}

func TestRetriesThenSuccess(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("flaky", "x", 2, ""), workflow("wf", "flaky"))
	e.machines(1)
	var attempts atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.agent(ctx, "m1", func(*api.JobSpec) int {
		if attempts.Add(1) < 3 {
			return 7
		}
		return 0
	})
	if _, err := e.eng.StartAction(context.Background(), "m1", api.ActionCommission, "wf", "t"); err != nil {
		t.Fatal(err)
	}
	e.waitState("m1", api.StateReady, 10*time.Second)
	if attempts.Load() != 3 {
		t.Errorf("%d attempts, want 3", attempts.Load())
	}
}

func TestFailureBreaksMachineWithReason(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("ok", "x", 0, ""), task("bad", "x", 1, ""), workflow("wf", "ok", "bad", "ok"))
	e.machines(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen []string
	var mu sync.Mutex
	go e.agent(ctx, "m1", func(j *api.JobSpec) int {
		mu.Lock()
		seen = append(seen, j.Task)
		mu.Unlock()
		if j.Task == "bad" {
			return 3
		}
		return 0
	})
	if _, err := e.eng.StartAction(context.Background(), "m1", api.ActionCommission, "wf", "t"); err != nil {
		t.Fatal(err)
	}
	m := e.waitState("m1", api.StateBroken, 10*time.Second)
	if !strings.Contains(m.Status.Message, "task bad failed with exit code 3 on attempt 2") {
		t.Errorf("message %q", m.Status.Message)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "ok,bad,bad" {
		t.Errorf("ran %v; the last task must not run after a failure", seen)
	}
	// From broken: commission again is allowed, deploy is not.
	_, err := e.eng.StartAction(context.Background(), "m1", api.ActionDeploy, "wf", "t")
	var te *TransitionError
	if !errors.As(err, &te) || err.Error() != `machine "m1": cannot deploy from state broken (commission it again first)` {
		t.Errorf("deploy from broken: %v", err)
	}
}

func TestTransitionsRefused(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("a", "x", 0, ""), workflow("wf", "a"))
	e.machines(1)
	_, err := e.eng.StartAction(context.Background(), "m1", api.ActionDeploy, "wf", "t")
	if err == nil || err.Error() != `machine "m1": cannot deploy from state discovered (commission it first)` {
		t.Errorf("deploy from discovered: %v", err)
	}
	if _, err := e.eng.StartAction(context.Background(), "m1", api.ActionCommission, "wf", "t"); err != nil {
		t.Fatal(err)
	}
	_, err = e.eng.StartAction(context.Background(), "m1", api.ActionCommission, "wf", "t")
	var be *BusyError
	if !errors.As(err, &be) {
		t.Errorf("second commission while busy: %v", err)
	}
	_, err = e.eng.StartAction(context.Background(), "m1", api.ActionUpgrade, "nope", "t")
	if err == nil {
		t.Error("upgrade of a busy machine accepted")
	}
	if _, err := e.eng.StartAction(context.Background(), "nope", api.ActionCommission, "wf", "t"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown machine: %v", err)
	}
	e2 := newEnv(t, Config{})
	e2.machines(1)
	_, err = e2.eng.StartAction(context.Background(), "m1", api.ActionCommission, "", "t")
	if err == nil || !strings.Contains(err.Error(), "no workflow for commission: pass --workflow or set param commission/workflow") {
		t.Errorf("no workflow: %v", err)
	}
	_, err = e2.eng.StartAction(context.Background(), "m1", api.ActionCommission, "ghost", "t")
	if err == nil || !strings.Contains(err.Error(), `workflow "ghost" does not exist`) {
		t.Errorf("missing workflow: %v", err)
	}
}

// A job handed out in a response the agent never got is handed out again,
// and only once it is reported does the run go on.
func TestRedeliveryOfLostDispatch(t *testing.T) {
	e := newEnv(t, Config{})
	e.put(task("a", "x", 0, ""), workflow("wf", "a"))
	e.machines(1)
	if _, err := e.eng.StartAction(context.Background(), "m1", api.ActionCommission, "wf", "t"); err != nil {
		t.Fatal(err)
	}
	first, err := e.eng.NextJob(context.Background(), "m1", "", 5*time.Second)
	if err != nil || first == nil {
		t.Fatalf("first poll: %v %v", first, err)
	}
	// The agent says it runs that job: nothing new for it.
	none, err := e.eng.NextJob(context.Background(), "m1", first.Name, 200*time.Millisecond)
	if err != nil || none != nil {
		t.Fatalf("poll while running: %v %v", none, err)
	}
	// The agent never got it (it says it is idle): same job again.
	again, err := e.eng.NextJob(context.Background(), "m1", "", 5*time.Second)
	if err != nil || again == nil || again.Name != first.Name {
		t.Fatalf("redelivery: %+v %v", again, err)
	}
	var j api.Job
	if err := get(context.Background(), e.st, api.KindJob, first.Name, &j); err != nil || j.Deliveries != 2 {
		t.Fatalf("deliveries %d (%v)", j.Deliveries, err)
	}
	if err := e.eng.CompleteJob(context.Background(), "m1", first.Name, api.JobResult{}); err != nil {
		t.Fatal(err)
	}
	// Reporting twice is fine; reporting a different end is not.
	if err := e.eng.CompleteJob(context.Background(), "m1", first.Name, api.JobResult{}); err != nil {
		t.Errorf("second identical report: %v", err)
	}
	if err := e.eng.CompleteJob(context.Background(), "m1", first.Name, api.JobResult{ExitCode: 1}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("contradicting report: %v", err)
	}
	e.waitState("m1", api.StateReady, 5*time.Second)
	// Another machine cannot report this machine's job.
	if err := e.eng.CompleteJob(context.Background(), "m2", first.Name, api.JobResult{}); !errors.Is(err, ErrNotYourJob) {
		t.Errorf("foreign report: %v", err)
	}
}

// An agent that never reports loses its job after the task timeout plus
// the grace period.
func TestJobTimeout(t *testing.T) {
	e := newEnv(t, Config{JobGrace: 200 * time.Millisecond})
	e.put(task("slow", "x", 0, "1s"), workflow("wf", "slow"))
	e.machines(1)
	if _, err := e.eng.StartAction(context.Background(), "m1", api.ActionCommission, "wf", "t"); err != nil {
		t.Fatal(err)
	}
	spec, err := e.eng.NextJob(context.Background(), "m1", "", 5*time.Second)
	if err != nil || spec == nil {
		t.Fatal(spec, err)
	}
	m := e.waitState("m1", api.StateBroken, 10*time.Second)
	if !strings.Contains(m.Status.Message, "timed out") {
		t.Errorf("message %q", m.Status.Message)
	}
}

// The engine stops while runs are under way; a new engine on the same
// store finishes them without running any task twice.
func TestRestartResumesRuns(t *testing.T) {
	e := newEnv(t, Config{MaxConcurrentJobs: 3})
	e.put(task("a", "x", 0, ""), task("b", "x", 0, ""), workflow("wf", "a", "b"))
	names := e.machines(6)
	for _, m := range names {
		if _, err := e.eng.StartAction(context.Background(), m, api.ActionCommission, "wf", "t"); err != nil {
			t.Fatal(err)
		}
	}
	// Take three jobs, finish two, then stop the engine with one running.
	var got []*api.JobSpec
	for _, m := range names[:3] {
		spec, err := e.eng.NextJob(context.Background(), m, "", 5*time.Second)
		if err != nil || spec == nil {
			t.Fatalf("%s: %v %v", m, spec, err)
		}
		got = append(got, spec)
	}
	for i, s := range got[:2] {
		if err := e.eng.CompleteJob(context.Background(), names[i], s.Name, api.JobResult{}); err != nil {
			t.Fatal(err)
		}
	}
	e.shutdown()
	e.start(Config{MaxConcurrentJobs: 3})
	if s := e.eng.Stats(); s.Running != 1 {
		t.Errorf("after restart %d running, want the 1 left running", s.Running)
	}
	var mu sync.Mutex
	ran := map[string]int{got[0].Name: 1, got[1].Name: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, m := range names {
		go e.agent(ctx, m, func(j *api.JobSpec) int {
			mu.Lock()
			ran[j.Name]++
			mu.Unlock()
			return 0
		})
	}
	for _, m := range names {
		e.waitState(m, api.StateReady, 10*time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, n := range ran {
		if n != 1 {
			t.Errorf("job %s ran %d times", name, n)
		}
	}
	if len(ran) != 12 {
		t.Errorf("%d jobs ran, want 12", len(ran))
	}
}
