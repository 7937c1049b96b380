package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/store"
)

// jobEntry is the dispatcher's view of an unfinished job.
type jobEntry struct {
	name, machine, run string
	state              string
	rev                int64
	queuedAt           time.Time
}

// dispatcher hands queued jobs to agents. It keeps, per machine, the one
// unfinished job (runs are sequential and a machine has one run at a time),
// the count of running jobs, and the agents waiting for work. Entries only
// move forward in revision, so a late event never undoes a newer state.
type dispatcher struct {
	mu        sync.Mutex
	max       int
	jobs      map[string]*jobEntry
	byMachine map[string]string
	running   int
	// finished remembers jobs finished by this process until their event
	// arrives, so the stale "running" event cannot bring them back.
	finished map[string]int64
	waiters  map[string]chan struct{}
	// blocked lists machines whose agent waits while their job is queued
	// behind the global limit, in the order they started waiting: a freed
	// slot wakes the first of them still in that situation.
	blocked []string
}

func newDispatcher(max int) *dispatcher {
	return &dispatcher{
		max:       max,
		jobs:      map[string]*jobEntry{},
		byMachine: map[string]string{},
		finished:  map[string]int64{},
		waiters:   map[string]chan struct{}{},
	}
}

func (d *dispatcher) reset(entries map[string]*jobEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.jobs = entries
	d.byMachine = map[string]string{}
	d.finished = map[string]int64{}
	d.running = 0
	d.blocked = d.blocked[:0]
	for _, e := range entries {
		d.byMachine[e.machine] = e.name
		if e.state == api.JobRunning {
			d.running++
		}
	}
	// Every waiting agent looks again at the rebuilt index.
	for m, ch := range d.waiters {
		close(ch)
		delete(d.waiters, m)
	}
}

// observe records a job's state at a revision.
func (d *dispatcher) observe(j *api.Job, rev int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.observeLocked(j.Name, j.Machine, j.Run, j.State, j.QueuedAt, rev)
}

func (d *dispatcher) observeLocked(name, machine, run, state string, queuedAt time.Time, rev int64) {
	if fin, ok := d.finished[name]; ok {
		if rev < fin {
			return
		}
		delete(d.finished, name)
	}
	cur := d.jobs[name]
	if cur != nil && rev <= cur.rev {
		return
	}
	switch state {
	case api.JobQueued, api.JobRunning:
		if cur == nil {
			cur = &jobEntry{name: name, machine: machine, run: run, queuedAt: queuedAt}
			d.jobs[name] = cur
			d.byMachine[machine] = name
		}
		if cur.state != api.JobRunning && state == api.JobRunning {
			d.running++
		}
		cur.state = state
		cur.rev = rev
		if state == api.JobQueued {
			d.offerLocked(machine)
		}
	default:
		d.removeLocked(name)
		d.finished[name] = rev
		d.wakeLocked()
	}
}

// advance tells the dispatcher that every event up to rev has been seen, so
// tombstones older than that can go.
func (d *dispatcher) advance(rev int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.finished) < 1024 {
		return
	}
	for name, fin := range d.finished {
		if fin <= rev {
			delete(d.finished, name)
		}
	}
}

func (d *dispatcher) observeDeleted(name string, rev int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur := d.jobs[name]; cur != nil && rev > cur.rev {
		d.removeLocked(name)
		d.wakeLocked()
	}
}

func (d *dispatcher) removeLocked(name string) {
	cur := d.jobs[name]
	if cur == nil {
		return
	}
	if cur.state == api.JobRunning {
		d.running--
	}
	delete(d.jobs, name)
	if d.byMachine[cur.machine] == name {
		delete(d.byMachine, cur.machine)
	}
}

// wakeLocked gives a free slot to the agent that has waited longest with a
// queued job.
func (d *dispatcher) wakeLocked() {
	for d.running < d.max && len(d.blocked) > 0 {
		m := d.blocked[0]
		d.blocked[0] = ""
		d.blocked = d.blocked[1:]
		if d.queuedFor(m) == "" {
			continue
		}
		if ch, ok := d.waiters[m]; ok {
			close(ch)
			delete(d.waiters, m)
			return
		}
		// Its agent stopped waiting; its next poll finds the job itself.
	}
}

// offerLocked tells a waiting agent that its machine has a queued job: it is
// woken if a slot is free, else it joins the blocked line.
func (d *dispatcher) offerLocked(machine string) {
	ch, ok := d.waiters[machine]
	if !ok {
		return
	}
	if d.running < d.max {
		close(ch)
		delete(d.waiters, machine)
		return
	}
	d.blocked = append(d.blocked, machine)
}

func (d *dispatcher) queuedFor(machine string) string {
	name := d.byMachine[machine]
	if e := d.jobs[name]; e != nil && e.state == api.JobQueued {
		return name
	}
	return ""
}

// Stats is a snapshot for metrics and tests.
type Stats struct {
	Running, Queued, Waiting, Max int
}

// Stats reports the dispatcher's counters.
func (e *Engine) Stats() Stats {
	d := e.disp
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Stats{Running: d.running, Waiting: len(d.waiters), Max: d.max}
	for _, j := range d.jobs {
		if j.state == api.JobQueued {
			s.Queued++
		}
	}
	return s
}

// ErrNotYourJob is returned when an agent names a job of another machine.
var ErrNotYourJob = errors.New("job belongs to another machine")

// NextJob waits up to wait for a job for machine and hands it out. running
// is the job the agent says it is executing: a job the store says is running
// but the agent does not have was handed out in a response the agent never
// got, so it is handed out again (it never started).
func (e *Engine) NextJob(ctx context.Context, machine, running string, wait time.Duration) (*api.JobSpec, error) {
	e.reach.Heartbeat(machine)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	d := e.disp
	for {
		d.mu.Lock()
		name := d.byMachine[machine]
		var entry jobEntry
		if name != "" {
			entry = *d.jobs[name]
		}
		switch {
		case name != "" && entry.state == api.JobRunning && running != name:
			d.mu.Unlock()
			spec, err := e.redeliver(ctx, machine, name)
			if spec != nil || err != nil {
				return spec, err
			}
			continue
		case name != "" && entry.state == api.JobQueued && d.running < d.max:
			// Reserve the slot before the write so that concurrent polls
			// cannot overshoot the limit.
			d.jobs[name].state = api.JobRunning
			d.running++
			d.mu.Unlock()
			spec, err := e.dispatch(ctx, machine, name)
			if err != nil || spec == nil {
				d.mu.Lock()
				if cur := d.jobs[name]; cur != nil && cur.state == api.JobRunning && cur.rev == entry.rev {
					cur.state = api.JobQueued
					d.running--
					d.wakeLocked()
				}
				d.mu.Unlock()
			}
			if err != nil {
				return nil, err
			}
			if spec != nil {
				return spec, nil
			}
			continue
		}
		ch, ok := d.waiters[machine]
		if !ok {
			ch = make(chan struct{})
			d.waiters[machine] = ch
			if name != "" && entry.state == api.JobQueued {
				// Queued behind the global limit: wait in line.
				d.blocked = append(d.blocked, machine)
			}
		}
		d.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			d.dropWaiter(machine, ch)
			return nil, nil
		case <-ctx.Done():
			d.dropWaiter(machine, ch)
			return nil, ctx.Err()
		}
	}
}

func (d *dispatcher) dropWaiter(machine string, ch chan struct{}) {
	d.mu.Lock()
	if d.waiters[machine] == ch {
		delete(d.waiters, machine)
	}
	d.mu.Unlock()
}

// dispatch moves a queued job to running and renders its script. A nil spec
// with a nil error means the job changed under us; the caller looks again.
func (e *Engine) dispatch(ctx context.Context, machine, name string) (*api.JobSpec, error) {
	var job api.Job
	if err := get(ctx, e.st, api.KindJob, name, &job); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	if job.State != api.JobQueued || job.Machine != machine {
		e.disp.observe(&job, job.Revision)
		return nil, nil
	}
	spec, renderErr := e.renderJob(ctx, &job)
	now := e.now().UTC()
	job.StartedAt = &now
	job.Deliveries = 1
	if renderErr != nil {
		// A job that cannot be rendered fails before anything runs.
		job.State = api.JobFailed
		job.FinishedAt = &now
		job.Message = renderErr.Error()
	} else {
		job.State = api.JobRunning
	}
	op, err := updateOp(&job)
	if err != nil {
		return nil, err
	}
	recs, _, err := e.st.Txn(ctx, []store.Op{op})
	if errors.Is(err, store.ErrConflict) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e.disp.observe(&job, recs[0].Revision)
	if renderErr != nil {
		_, _ = e.st.AppendLog(ctx, job.Name, []byte("drover: "+renderErr.Error()+"\n"))
		e.logs.notify(job.Name)
		e.runs.Add(job.Run)
		return nil, nil
	}
	e.scheduleTimeout(&job)
	return spec, nil
}

func (e *Engine) redeliver(ctx context.Context, machine, name string) (*api.JobSpec, error) {
	var spec *api.JobSpec
	var renderErr error
	job, _, err := mutate(ctx, e.st, api.KindJob, name, func(j *api.Job) error {
		if j.State != api.JobRunning || j.Machine != machine {
			return errSkip
		}
		j.Deliveries++
		// Rendered again, as it may render differently now: the digest
		// records what this delivery hands out.
		spec, renderErr = e.renderJob(ctx, j)
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			e.disp.mu.Lock()
			e.disp.removeLocked(name)
			e.disp.mu.Unlock()
			return nil, nil
		}
		return nil, err
	}
	if job.State != api.JobRunning {
		e.disp.observe(job, job.Revision)
		return nil, nil
	}
	e.log.Warn("handing out a running job again: the agent does not have it", "job", name, "machine", machine, "deliveries", job.Deliveries)
	if renderErr != nil {
		return nil, e.finishJob(ctx, machine, name, -1, renderErr.Error())
	}
	return spec, nil
}

// renderJob renders a job's script for its machine, and sets the job's
// digest of what it hands out (see taskDigest).
func (e *Engine) renderJob(ctx context.Context, job *api.Job) (*api.JobSpec, error) {
	cfg, err := e.config(ctx)
	if err != nil {
		return nil, err
	}
	task := cfg.tasks[job.Task]
	if task == nil {
		return nil, fmt.Errorf("task %q: %v", job.Task, store.ErrNotFound)
	}
	var m api.Machine
	if err := get(ctx, e.st, api.KindMachine, job.Machine, &m); err != nil {
		return nil, fmt.Errorf("machine %q: %v", job.Machine, err)
	}
	in, err := cfg.input(&m, e.secrets)
	if err != nil {
		return nil, err
	}
	script, err := renderScript(in, task)
	if err != nil {
		return nil, err
	}
	job.Digest = taskDigest(task, job.Timeout, script)
	return &api.JobSpec{Name: job.Name, Task: job.Task, Run: job.Run, Shell: taskShell(task), Script: script, Timeout: job.Timeout}, nil
}

// CompleteJob records the end of a job an agent ran. Reporting the same end
// twice is fine (the agent retries until it hears back).
func (e *Engine) CompleteJob(ctx context.Context, machine, name string, res api.JobResult) error {
	var job api.Job
	if err := get(ctx, e.st, api.KindJob, name, &job); err != nil {
		return err
	}
	if job.Machine != machine {
		return ErrNotYourJob
	}
	if job.Finished() {
		if job.ExitCode != nil && *job.ExitCode == res.ExitCode {
			return nil
		}
		return fmt.Errorf("job %q already ended as %s: %w", name, job.State, store.ErrConflict)
	}
	if job.State != api.JobRunning {
		return fmt.Errorf("job %q is %s, not running: %w", name, job.State, store.ErrConflict)
	}
	return e.finishJob(ctx, machine, name, res.ExitCode, res.Message)
}

func (e *Engine) finishJob(ctx context.Context, machine, name string, exit int, msg string) error {
	size, _ := e.logSize(ctx, name)
	job, rev, err := mutate(ctx, e.st, api.KindJob, name, func(j *api.Job) error {
		if j.Finished() {
			return errSkip
		}
		now := e.now().UTC()
		j.FinishedAt = &now
		j.ExitCode = &exit
		j.Message = msg
		j.LogBytes = size
		if exit == 0 {
			j.State = api.JobSucceeded
		} else {
			j.State = api.JobFailed
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.cancelTimeout(name)
	if rev != 0 {
		e.disp.observe(job, rev)
		e.runs.Add(job.Run)
	}
	e.logs.notify(name)
	return nil
}

func (e *Engine) logSize(ctx context.Context, name string) (int64, error) {
	b, err := e.st.ReadLog(ctx, name, 0)
	return int64(len(b)), err
}

// AppendLog adds output to a running job's log.
func (e *Engine) AppendLog(ctx context.Context, machine, name string, data []byte) error {
	var job api.Job
	if err := get(ctx, e.st, api.KindJob, name, &job); err != nil {
		return err
	}
	if job.Machine != machine {
		return ErrNotYourJob
	}
	if job.State != api.JobRunning {
		return fmt.Errorf("job %q is %s; its log is closed: %w", name, job.State, store.ErrConflict)
	}
	size, err := e.st.AppendLog(ctx, name, nil)
	if err != nil {
		return err
	}
	if size+int64(len(data)) > e.cfg.MaxLogBytes {
		if size >= e.cfg.MaxLogBytes {
			return nil
		}
		data = append(data[:e.cfg.MaxLogBytes-size:e.cfg.MaxLogBytes-size], []byte("\ndrover: log truncated at the size limit\n")...)
	}
	if _, err := e.st.AppendLog(ctx, name, data); err != nil {
		return err
	}
	e.logs.notify(name)
	return nil
}

// WaitLog returns a channel closed at the next change of a job's log or
// state, for followers.
func (e *Engine) WaitLog(name string) <-chan struct{} { return e.logs.wait(name) }

func (e *Engine) scheduleTimeout(job *api.Job) {
	d, err := time.ParseDuration(job.Timeout)
	if err != nil || d <= 0 {
		d = e.cfg.DefaultTaskTimeout
	}
	start := e.now()
	if job.StartedAt != nil {
		start = *job.StartedAt
	}
	after := time.Until(start.Add(d + e.cfg.JobGrace))
	name, machine := job.Name, job.Machine
	e.timersMu.Lock()
	defer e.timersMu.Unlock()
	if old := e.timers[name]; old != nil {
		old.Stop()
	}
	e.timers[name] = time.AfterFunc(after, func() {
		e.timersMu.Lock()
		delete(e.timers, name)
		e.timersMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		msg := fmt.Sprintf("timed out: the agent did not report within %s (task timeout %s plus %s grace)", d+e.cfg.JobGrace, d, e.cfg.JobGrace)
		if err := e.finishJob(ctx, machine, name, -1, msg); err != nil && !errors.Is(err, store.ErrClosed) {
			e.log.Warn("failing timed-out job", "job", name, "err", err)
		}
	})
}

func (e *Engine) cancelTimeout(name string) {
	e.timersMu.Lock()
	defer e.timersMu.Unlock()
	if t := e.timers[name]; t != nil {
		t.Stop()
		delete(e.timers, name)
	}
}

func (e *Engine) stopTimers() {
	e.timersMu.Lock()
	defer e.timersMu.Unlock()
	for n, t := range e.timers {
		t.Stop()
		delete(e.timers, n)
	}
}

// logNotifier lets log followers wait for the next append without polling.
type logNotifier struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func newLogNotifier() *logNotifier { return &logNotifier{ch: map[string]chan struct{}{}} }

func (l *logNotifier) wait(name string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.ch[name]
	if !ok {
		c = make(chan struct{})
		l.ch[name] = c
	}
	return c
}

func (l *logNotifier) notify(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.ch[name]; ok {
		close(c)
		delete(l.ch, name)
	}
}
