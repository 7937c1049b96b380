// Package engine runs drover's work: lifecycle actions become workflow runs,
// runs become jobs one task at a time, and jobs are handed to agents under a
// global concurrency limit. All state lives in the store; the engine's
// memory is an index rebuilt from it, so a crash loses nothing.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/render"
	"github.com/drover-project/drover/internal/store"
)

// Config tunes the engine.
type Config struct {
	// MaxConcurrentJobs bounds jobs running at once across all machines.
	MaxConcurrentJobs int
	// HeartbeatInterval is what agents are told to use.
	HeartbeatInterval time.Duration
	// ReachableTimeout marks a machine unreachable after this long without
	// a heartbeat.
	ReachableTimeout time.Duration
	// DefaultTaskTimeout applies to tasks without a timeout.
	DefaultTaskTimeout time.Duration
	// JobGrace is added to a task's timeout before the server gives up on
	// an agent that does not report (the agent enforces the timeout itself).
	JobGrace time.Duration
	// Workers reconcile runs in parallel.
	Workers int
	// MaxLogBytes caps one job's log.
	MaxLogBytes int64
}

func (c *Config) setDefaults() {
	if c.MaxConcurrentJobs <= 0 {
		c.MaxConcurrentJobs = 10
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.ReachableTimeout <= 0 {
		c.ReachableTimeout = 30 * time.Second
	}
	if c.DefaultTaskTimeout <= 0 {
		c.DefaultTaskTimeout = 30 * time.Minute
	}
	if c.JobGrace <= 0 {
		c.JobGrace = time.Minute
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.MaxLogBytes <= 0 {
		c.MaxLogBytes = 16 << 20
	}
}

// Engine is the work engine of one endpoint.
type Engine struct {
	st      store.Store
	cfg     Config
	log     *slog.Logger
	secrets render.Opener
	now     func() time.Time

	runs    *workQueue
	disp    *dispatcher
	reach   *reachability
	logs    *logNotifier
	configs *configCache
	drift   *driftTracker

	timersMu sync.Mutex
	timers   map[string]*time.Timer

	ready chan struct{}

	// rollouts and policies are the reconcilers of rolling operations
	// and automatic policies (rollout.go, policy.go).
	rollouts *rolloutController
	policies *policyController
}

// New makes an engine; Run starts it.
func New(st store.Store, cfg Config, secrets render.Opener, log *slog.Logger) *Engine {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{
		st:      st,
		cfg:     cfg,
		log:     log,
		secrets: secrets,
		now:     time.Now,
		runs:    newWorkQueue(),
		timers:  map[string]*time.Timer{},
		logs:    newLogNotifier(),
		configs: newConfigCache(),
		ready:   make(chan struct{}),
	}
	e.disp = newDispatcher(cfg.MaxConcurrentJobs)
	e.reach = newReachability(e)
	e.rollouts = newRolloutController(e)
	e.policies = newPolicyController(e)
	e.drift = newDriftTracker(e)
	return e
}

// Config returns the engine's settings.
func (e *Engine) Config() Config { return e.cfg }

// Ready is closed once the engine has loaded its index from the store.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Run drives the engine until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer e.runs.Close()
	defer e.drift.queue.Close()
	defer e.stopTimers()

	for i := 0; i < e.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.runWorker(ctx)
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.reach.run(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.runControllers(ctx)
	}()
	go func() {
		defer wg.Done()
		e.drift.run(ctx)
	}()
	for range driftWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.driftWorker(ctx)
		}()
	}

	first := true
	for ctx.Err() == nil {
		rev, err := e.resync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			e.log.Error("engine resync failed; retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if first {
			close(e.ready)
			first = false
		}
		if err := e.follow(ctx, rev); err != nil && ctx.Err() == nil {
			e.log.Warn("engine watch ended; re-listing", "err", err)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// resync lists runs, jobs, machines and the configuration and rebuilds the
// in-memory index: the level-triggered starting point after a start or a
// lost watch.
func (e *Engine) resync(ctx context.Context) (int64, error) {
	jobs, rev, err := e.st.List(ctx, api.KindJob, store.ListOptions{})
	if err != nil {
		return 0, err
	}
	entries := make(map[string]*jobEntry)
	for _, rec := range jobs {
		var j api.Job
		if err := model.Decode(rec, &j); err != nil {
			e.log.Error("skipping undecodable job", "job", rec.Name, "err", err)
			continue
		}
		if j.Finished() {
			continue
		}
		entries[j.Name] = &jobEntry{name: j.Name, machine: j.Machine, run: j.Run, state: j.State, rev: rec.Revision, queuedAt: j.QueuedAt}
		if j.State == api.JobRunning {
			e.scheduleTimeout(&j)
		}
	}
	e.disp.reset(entries)

	runs, _, err := e.st.List(ctx, api.KindRun, store.ListOptions{})
	if err != nil {
		return 0, err
	}
	for _, rec := range runs {
		e.runs.Add(rec.Name)
	}
	machines, _, err := e.st.List(ctx, api.KindMachine, store.ListOptions{})
	if err != nil {
		return 0, err
	}
	e.reach.load(machines)
	if err := e.resyncControllers(ctx, machines); err != nil {
		return 0, err
	}
	cfg, _, err := loadConfig(ctx, e.st)
	if err != nil {
		return 0, err
	}
	e.configs.reset(cfg, rev)
	e.drift.load(machines)
	return rev, nil
}

// follow applies the event stream to the index and queues affected runs.
func (e *Engine) follow(ctx context.Context, from int64) error {
	ch, err := e.st.Watch(ctx, from)
	if err != nil {
		return err
	}
	for ev := range ch {
		e.observeForControllers(ev)
		if changed, before, after := e.configs.observe(ev); len(changed) > 0 {
			e.drift.configChanged(changed, before, after)
		}
		switch ev.Record.Kind {
		case api.KindRun:
			e.runs.Add(ev.Record.Name)
		case api.KindJob:
			if ev.Type == store.EventDelete {
				e.disp.observeDeleted(ev.Record.Name, ev.Revision)
				continue
			}
			var j api.Job
			if err := model.Decode(ev.Record, &j); err != nil {
				continue
			}
			e.disp.observe(&j, ev.Record.Revision)
			e.disp.advance(ev.Revision)
			e.runs.Add(j.Run)
			if j.Finished() {
				e.logs.notify(j.Name)
			}
		case api.KindMachine:
			if ev.Type == store.EventDelete {
				e.reach.forget(ev.Record.Name)
				e.drift.forget(ev.Record.Name)
				continue
			}
			e.drift.observeMachine(ev.Record, false)
		}
	}
	return errors.New("watch channel closed")
}

func (e *Engine) runWorker(ctx context.Context) {
	for {
		key, ok := e.runs.Get()
		if !ok {
			return
		}
		err := e.reconcileRun(ctx, key)
		e.runs.Done(key)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("reconcile run failed; will retry", "run", key, "err", err)
			go func() {
				sleep(ctx, 500*time.Millisecond)
				e.runs.Add(key)
			}()
		}
	}
}

func newID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// JobName is the deterministic name of a run's job for a step and attempt:
// creating it twice fails, so a reconcile repeated after a crash never
// makes a second job.
func JobName(run string, step, attempt int) string {
	return fmt.Sprintf("%s.%d.%d", run, step+1, attempt)
}

// StartAction starts a lifecycle action on one machine: it checks the
// transition, resolves the workflow, and in one transaction creates the run
// and moves the machine to its in-progress state.
func (e *Engine) StartAction(ctx context.Context, machine, action, workflow, user string) (*api.Run, error) {
	return e.startAction(ctx, machine, action, workflow, user, nil)
}

// startWith adds to a start: labels for the run, and an op written in the
// same transaction (a rollout's progress), so that the run exists if and
// only if the op was written.
type startWith struct {
	labels map[string]string
	op     func(run *api.Run) (store.Op, error)
}

// errStartWithConflict means the op of a startWith met a newer revision:
// nothing was started.
var errStartWithConflict = errors.New("the object written with the start changed")

func (e *Engine) startAction(ctx context.Context, machine, action, workflow, user string, with *startWith) (*api.Run, error) {
	for attempt := 0; ; attempt++ {
		var m api.Machine
		if err := get(ctx, e.st, api.KindMachine, machine, &m); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("machine %q: %w", machine, store.ErrNotFound)
			}
			return nil, err
		}
		t, err := checkTransition(&m, action)
		if err != nil {
			return nil, err
		}
		wfName := workflow
		if wfName == "" {
			in, err := e.renderInput(ctx, &m)
			if err != nil {
				return nil, err
			}
			v, err := in.Param(action + "/workflow")
			if err != nil {
				var mp *render.MissingParamError
				if errors.As(err, &mp) {
					return nil, fmt.Errorf("machine %q: no workflow for %s: pass --workflow or set param %s/workflow", machine, action, action)
				}
				return nil, err
			}
			s, ok := v.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("machine %q: param %s/workflow must be a workflow name, got %v", machine, action, v)
			}
			wfName = s
		}
		var wf api.Workflow
		if err := get(ctx, e.st, api.KindWorkflow, wfName, &wf); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("machine %q: workflow %q does not exist", machine, wfName)
			}
			return nil, err
		}
		for _, tn := range wf.Tasks {
			if _, err := e.st.Get(ctx, api.KindTask, tn); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return nil, fmt.Errorf("workflow %q: task %q does not exist", wfName, tn)
				}
				return nil, err
			}
		}
		now := e.now().UTC()
		run := &api.Run{
			Meta:      api.Meta{Kind: api.KindRun, Name: fmt.Sprintf("%s.%s.%s", machine, action, newID()), Labels: map[string]string{"machine": machine, "action": action}},
			Machine:   machine,
			Workflow:  wfName,
			Action:    action,
			Tasks:     append([]string(nil), wf.Tasks...),
			Attempt:   1,
			FromState: m.Status.State,
			ToState:   t.success,
			State:     api.RunRunning,
			User:      user,
			StartedAt: now,
		}
		if run.ToState == "" {
			run.ToState = m.Status.State
		}
		if with != nil {
			for k, v := range with.labels {
				run.Labels[k] = v
			}
		}
		m.Status.Run = run.Name
		m.Status.Message = ""
		if t.during != "" && t.during != m.Status.State {
			m.Status.State = t.during
			m.Status.StateChanged = &now
		}
		cop, err := createOp(run)
		if err != nil {
			return nil, err
		}
		uop, err := updateOp(&m)
		if err != nil {
			return nil, err
		}
		ops := []store.Op{cop, uop}
		if with != nil {
			op, err := with.op(run)
			if err != nil {
				return nil, err
			}
			ops = append(ops, op)
		}
		recs, _, err := e.st.Txn(ctx, ops)
		var te *store.TxnError
		if errors.As(err, &te) && te.Index == 2 && errors.Is(err, store.ErrConflict) {
			return nil, errStartWithConflict
		}
		if errors.Is(err, store.ErrConflict) && attempt < 20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		run.Revision = recs[0].Revision
		run.CreateRevision = recs[0].CreateRevision
		e.runs.Add(run.Name)
		return run, nil
	}
}

// reconcileRun moves a run one step at a time: it makes the current step's
// job, advances when the job succeeded, retries or fails when it failed, and
// finishes the run (and the machine's transition) at the end.
func (e *Engine) reconcileRun(ctx context.Context, name string) error {
	var run api.Run
	if err := get(ctx, e.st, api.KindRun, name, &run); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	if run.State != api.RunRunning {
		return nil
	}
	if run.Step >= len(run.Tasks) {
		return e.finishRun(ctx, &run, api.RunSucceeded, "")
	}
	jobName := JobName(run.Name, run.Step, run.Attempt)
	var job api.Job
	err := get(ctx, e.st, api.KindJob, jobName, &job)
	if errors.Is(err, store.ErrNotFound) {
		return e.createJob(ctx, &run, jobName)
	}
	if err != nil {
		return err
	}
	switch job.State {
	case api.JobSucceeded:
		for len(run.Digests) < run.Step {
			run.Digests = append(run.Digests, "")
		}
		run.Digests = append(run.Digests[:run.Step], job.Digest)
		run.Step++
		run.Attempt = 1
		if run.Step >= len(run.Tasks) {
			return e.finishRun(ctx, &run, api.RunSucceeded, "")
		}
		return e.saveAndRequeue(ctx, &run)
	case api.JobFailed, api.JobCancelled:
		var task api.Task
		retries := 0
		if err := get(ctx, e.st, api.KindTask, job.Task, &task); err == nil {
			retries = task.Retries
		}
		if job.State == api.JobFailed && run.Attempt <= retries {
			run.Attempt++
			return e.saveAndRequeue(ctx, &run)
		}
		msg := fmt.Sprintf("task %s failed", job.Task)
		if job.ExitCode != nil {
			msg += fmt.Sprintf(" with exit code %d", *job.ExitCode)
		}
		if run.Attempt > 1 {
			msg += fmt.Sprintf(" on attempt %d", run.Attempt)
		}
		if job.Message != "" {
			msg += ": " + job.Message
		}
		msg += fmt.Sprintf(" (drover logs %s)", job.Name)
		run.FailedJob = job.Name
		if run.Action == api.ActionVerify {
			// A verify task says "drifted" by exiting non-zero; killed
			// (-1), unrendered or cancelled jobs reached no verdict.
			run.Result = api.VerifyError
			if job.State == api.JobFailed && job.ExitCode != nil && *job.ExitCode > 0 {
				run.Result = api.VerifyDrifted
			}
		}
		return e.finishRun(ctx, &run, api.RunFailed, msg)
	}
	return nil
}

func (e *Engine) saveAndRequeue(ctx context.Context, run *api.Run) error {
	op, err := updateOp(run)
	if err != nil {
		return err
	}
	if _, _, err := e.st.Txn(ctx, []store.Op{op}); err != nil {
		return err
	}
	e.runs.Add(run.Name)
	return nil
}

func (e *Engine) createJob(ctx context.Context, run *api.Run, jobName string) error {
	taskName := run.Tasks[run.Step]
	timeout := e.cfg.DefaultTaskTimeout
	var task api.Task
	if err := get(ctx, e.st, api.KindTask, taskName, &task); err == nil {
		timeout = e.taskTimeout(&task)
	}
	job := &api.Job{
		Meta:     api.Meta{Kind: api.KindJob, Name: jobName, Labels: map[string]string{"machine": run.Machine, "run": run.Name}},
		Machine:  run.Machine,
		Run:      run.Name,
		Task:     taskName,
		Step:     run.Step,
		Attempt:  run.Attempt,
		State:    api.JobQueued,
		Timeout:  timeout.String(),
		QueuedAt: e.now().UTC(),
	}
	op, err := createOp(job)
	if err != nil {
		return err
	}
	recs, _, err := e.st.Txn(ctx, []store.Op{op})
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	if err != nil {
		return err
	}
	e.disp.observe(job, recs[0].Revision)
	return nil
}

// finishRun ends a run and applies its outcome to the machine in one
// transaction.
func (e *Engine) finishRun(ctx context.Context, run *api.Run, state, msg string) error {
	if run.Action == api.ActionVerify && run.Result == "" {
		run.Result = api.VerifyError
		if state == api.RunSucceeded {
			run.Result = api.VerifyInSync
		}
	}
	applied := ""
	for attempt := 0; ; attempt++ {
		var m api.Machine
		mErr := get(ctx, e.st, api.KindMachine, run.Machine, &m)
		if mErr != nil && !errors.Is(mErr, store.ErrNotFound) {
			return mErr
		}
		now := e.now().UTC()
		run.State = state
		run.Message = msg
		run.FinishedAt = &now
		rop, err := updateOp(run)
		if err != nil {
			return err
		}
		ops := []store.Op{rop}
		if mErr == nil && m.Status.Run == run.Name {
			m.Status.Run = ""
			m.Status.LastRun = run.Name
			m.Status.LastRunResult = state
			m.Status.Message = msg
			next := run.ToState
			if state != api.RunSucceeded {
				next = api.StateBroken
				if run.Action == api.ActionVerify {
					next = run.FromState
				}
			}
			if next != "" && next != m.Status.State {
				m.Status.State = next
				m.Status.StateChanged = &now
			}
			switch {
			case run.Action == api.ActionVerify:
				m.Status.LastVerify = &api.VerifyResult{Run: run.Name, Time: now, Result: run.Result, Job: run.FailedJob, Message: msg}
			case state != api.RunSucceeded:
			case recordsConfig(run.Action):
				if applied == "" {
					if applied, err = e.appliedDigest(ctx, run, &m); err != nil {
						// Recorded as drift by the reconciler, with the reason.
						applied = "unrenderable: " + err.Error()
					}
				}
				m.Status.AppliedWorkflow, m.Status.AppliedConfig = run.Workflow, applied
				m.Status.ConfigDrift, m.Status.ConfigDriftReason = false, ""
				m.Status.LastVerify = nil
			case run.Action == api.ActionDecommission:
				m.Status.AppliedWorkflow, m.Status.AppliedConfig = "", ""
				m.Status.ConfigDrift, m.Status.ConfigDriftReason = false, ""
				m.Status.LastVerify = nil
			}
			mop, err := updateOp(&m)
			if err != nil {
				return err
			}
			ops = append(ops, mop)
		}
		_, _, err = e.st.Txn(ctx, ops)
		if err == nil {
			e.log.Info("run finished", "run", run.Name, "machine", run.Machine, "state", state, "msg", msg)
			return nil
		}
		var te *store.TxnError
		if errors.As(err, &te) && te.Index == 1 && errors.Is(err, store.ErrConflict) && attempt < 20 {
			continue // the machine changed (a heartbeat); the run did not
		}
		return err
	}
}
