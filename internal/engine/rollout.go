package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// A rollout is driven by a level-triggered reconciler: each pass reads the
// rollout, records the runs that ended, and starts what the settings allow
// now. It is woken by events (its runs, itself) and, for pauseBetween
// only, by a timer. Every start writes the run and the rollout's record of
// it in one transaction, so a crash can neither lose a started machine nor
// start one twice.

// LabelRollout marks the runs a rollout started.
const LabelRollout = "rollout"

// LabelPolicy marks the rollouts a policy started.
const LabelPolicy = "policy"

type rolloutController struct {
	e     *Engine
	queue *workQueue

	mu     sync.Mutex
	timers map[string]*time.Timer
}

func newRolloutController(e *Engine) *rolloutController {
	return &rolloutController{e: e, queue: newWorkQueue(), timers: map[string]*time.Timer{}}
}

// RolloutStateError refuses a resume or cancel in the rollout's state.
type RolloutStateError struct{ Msg string }

func (e *RolloutStateError) Error() string { return e.Msg }

// InvalidRolloutError says what is wrong with a new rollout's settings.
type InvalidRolloutError struct{ Err error }

func (e *InvalidRolloutError) Error() string { return e.Err.Error() }
func (e *InvalidRolloutError) Unwrap() error { return e.Err }

// NewRollout checks a rollout's settings and fills its initial status. The
// machines go in the order given.
func NewRollout(r *api.Rollout, now time.Time) error {
	if err := checkRollout(r); err != nil {
		return &InvalidRolloutError{err}
	}
	if r.Name == "" {
		prefix := r.Action
		if r.Policy != "" {
			prefix = r.Policy
		}
		r.Name = prefix + "-" + newID()
	}
	r.Kind = api.KindRollout
	if r.Labels == nil {
		r.Labels = map[string]string{}
	}
	r.Labels["action"] = r.Action
	if r.Policy != "" {
		r.Labels[LabelPolicy] = r.Policy
	}
	r.Status = api.RolloutStatus{State: api.RolloutRunning, StartedAt: now.UTC()}
	for _, m := range r.Machines {
		r.Status.Machines = append(r.Status.Machines, api.RolloutMachine{Name: m, State: api.RolloutMachinePending})
	}
	recount(r)
	return nil
}

func checkRollout(r *api.Rollout) error {
	if !slices.Contains(model.RolloutActions, r.Action) {
		return fmt.Errorf("a rollout runs %s, not %q", strings.Join(model.RolloutActions, ", "), r.Action)
	}
	if r.Workflow != "" {
		if err := model.ValidateName(r.Workflow); err != nil {
			return fmt.Errorf("workflow: %w", err)
		}
	}
	if len(r.Machines) == 0 {
		return errors.New("a rollout needs at least one machine")
	}
	seen := map[string]bool{}
	for _, m := range r.Machines {
		if seen[m] {
			return fmt.Errorf("machine %q is listed twice", m)
		}
		seen[m] = true
	}
	return model.ValidateRolloutSettings(r.BatchSize, r.MaxUnavailable, r.MaxFailures, r.PauseBetween)
}

// CreateRollout writes a new rollout (see NewRollout), with the ops extra
// makes for it (an audit entry) in the same transaction; the engine picks
// it up from the event stream.
func (e *Engine) CreateRollout(ctx context.Context, r *api.Rollout, extra func(*api.Rollout) []store.Op) error {
	if err := NewRollout(r, e.now()); err != nil {
		return err
	}
	op, err := createOp(r)
	if err != nil {
		return err
	}
	ops := []store.Op{op}
	if extra != nil {
		ops = append(ops, extra(r)...)
	}
	recs, _, err := e.st.Txn(ctx, ops)
	if err != nil {
		return err
	}
	r.Revision, r.CreateRevision = recs[0].Revision, recs[0].CreateRevision
	return nil
}

// CancelRollout stops a rollout from starting machines; those running
// finish.
func (e *Engine) CancelRollout(ctx context.Context, name, user string) (*api.Rollout, error) {
	r, _, err := mutate(ctx, e.st, api.KindRollout, name, func(r *api.Rollout) error {
		switch r.Status.State {
		case api.RolloutDone:
			return &RolloutStateError{fmt.Sprintf("rollout %q is done already; nothing to cancel", name)}
		case api.RolloutCancelled:
			return &RolloutStateError{fmt.Sprintf("rollout %q is cancelled already", name)}
		}
		r.Status.State = api.RolloutCancelled
		r.Status.NextBatchAt = nil
		r.Status.Message = fmt.Sprintf("cancelled by %s with %s not started", user, plural(r.Status.Pending, "machine", "machines"))
		if r.Status.Running == 0 {
			now := e.now().UTC()
			r.Status.FinishedAt = &now
		}
		return nil
	})
	return r, notFoundRollout(name, err)
}

// ResumeRollout lets a paused rollout start machines again. Without
// retryFailed the failed machines stay failed and the rollout stops again
// after maxFailures new failures; with it they are started again in the
// next batches (a done rollout with failures can be resumed this way).
func (e *Engine) ResumeRollout(ctx context.Context, name string, retryFailed bool, user string) (*api.Rollout, error) {
	r, _, err := mutate(ctx, e.st, api.KindRollout, name, func(r *api.Rollout) error {
		switch r.Status.State {
		case api.RolloutCancelled:
			return &RolloutStateError{fmt.Sprintf("rollout %q was cancelled; start a new one", name)}
		case api.RolloutDone:
			if !retryFailed || r.Status.Failed == 0 {
				return &RolloutStateError{fmt.Sprintf("rollout %q is done; nothing to resume (--retry-failed starts failed machines again)", name)}
			}
		case api.RolloutRunning:
			if !retryFailed || r.Status.Failed == 0 {
				return &RolloutStateError{fmt.Sprintf("rollout %q is running; nothing to resume", name)}
			}
		}
		if retryFailed {
			for i := range r.Status.Machines {
				m := &r.Status.Machines[i]
				if m.State == api.RolloutMachineFailed {
					*m = api.RolloutMachine{Name: m.Name, State: api.RolloutMachinePending, Attempts: m.Attempts}
				}
			}
		}
		recount(r)
		r.Status.IgnoredFailures = r.Status.Failed
		r.Status.State = api.RolloutRunning
		r.Status.FinishedAt = nil
		r.Status.Message = "resumed by " + user
		if retryFailed {
			r.Status.Message += ", retrying failed machines"
		}
		return nil
	})
	return r, notFoundRollout(name, err)
}

func notFoundRollout(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("rollout %q: %w", name, store.ErrNotFound)
	}
	return err
}

// recount sets the per-state counters and the number of batches.
func recount(r *api.Rollout) {
	s := &r.Status
	s.Pending, s.Running, s.Succeeded, s.Failed = 0, 0, 0, 0
	unassigned := 0
	for _, m := range s.Machines {
		switch m.State {
		case api.RolloutMachinePending:
			s.Pending++
			if m.Batch == 0 {
				unassigned++
			}
		case api.RolloutMachineRunning:
			s.Running++
		case api.RolloutMachineSucceeded:
			s.Succeeded++
		case api.RolloutMachineFailed:
			s.Failed++
		}
	}
	bs := batchSize(r)
	s.Batches = s.Batch + (unassigned+bs-1)/bs
}

func batchSize(r *api.Rollout) int {
	if r.BatchSize > 0 {
		return r.BatchSize
	}
	return max(1, len(r.Status.Machines))
}

func maxUnavailable(r *api.Rollout) int {
	if r.MaxUnavailable > 0 {
		return r.MaxUnavailable
	}
	return batchSize(r)
}

// batchOpen reports whether the current batch has machines pending or
// running.
func batchOpen(r *api.Rollout) bool {
	if r.Status.Batch == 0 {
		return false
	}
	for _, m := range r.Status.Machines {
		if m.Batch == r.Status.Batch && (m.State == api.RolloutMachinePending || m.State == api.RolloutMachineRunning) {
			return true
		}
	}
	return false
}

func failedNames(r *api.Rollout) []string {
	var out []string
	for _, m := range r.Status.Machines {
		if m.State == api.RolloutMachineFailed {
			out = append(out, m.Name)
		}
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// settle applies what follows from the machines' states: a batch that
// ended, the stop after maxFailures, the end. It reports whether it
// changed anything.
func settle(r *api.Rollout, now time.Time) bool {
	before := r.Status
	s := &r.Status
	recount(r)
	if s.Batch > 0 && s.BatchFinishedAt == nil && !batchOpen(r) {
		s.BatchesDone++
		t := now
		s.BatchFinishedAt = &t
	}
	switch s.State {
	case api.RolloutRunning:
		if r.MaxFailures > 0 && s.Failed-s.IgnoredFailures >= r.MaxFailures {
			s.State = api.RolloutPaused
			s.NextBatchAt = nil
			failures := plural(s.Failed-s.IgnoredFailures, "failed machine", "failed machines")
			if s.IgnoredFailures > 0 {
				failures = plural(s.Failed-s.IgnoredFailures, "more failed machine", "more failed machines") + " since the resume"
			}
			s.Message = fmt.Sprintf("stopped after %s (max-failures %d): %s; nothing new starts. Fix the cause, then: drover rollouts resume %s (--retry-failed to start the failed machines again)",
				failures, r.MaxFailures, strings.Join(failedNames(r), ", "), r.Name)
		} else if s.Pending == 0 && s.Running == 0 {
			s.State = api.RolloutDone
			s.NextBatchAt = nil
			t := now
			s.FinishedAt = &t
			s.Message = fmt.Sprintf("%d succeeded", s.Succeeded)
			if s.Failed > 0 {
				s.Message += fmt.Sprintf(", %d failed: %s", s.Failed, strings.Join(failedNames(r), ", "))
			}
		}
	case api.RolloutCancelled:
		if s.Running == 0 && s.FinishedAt == nil {
			t := now
			s.FinishedAt = &t
		}
	}
	return !statusEqual(&before, s)
}

func statusEqual(a, b *api.RolloutStatus) bool {
	return a.State == b.State && a.Message == b.Message && a.Batch == b.Batch && a.BatchesDone == b.BatchesDone &&
		a.Batches == b.Batches && timeEqual(a.BatchFinishedAt, b.BatchFinishedAt) && timeEqual(a.NextBatchAt, b.NextBatchAt) &&
		a.Pending == b.Pending && a.Running == b.Running && a.Succeeded == b.Succeeded && a.Failed == b.Failed &&
		timeEqual(a.FinishedAt, b.FinishedAt)
}

func timeEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// pass drives one rollout until it has nothing more to do now.
func (c *rolloutController) pass(ctx context.Context, name string) error {
	e := c.e
	var r api.Rollout
	if err := get(ctx, e.st, api.KindRollout, name, &r); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			c.stopTimer(name)
			return nil
		}
		return err
	}
	for {
		now := e.now().UTC()
		observed, err := c.observeRuns(ctx, &r)
		if err != nil {
			return err
		}
		if settled := settle(&r, now); settled || observed {
			if err := c.write(ctx, &r); err != nil {
				return err
			}
		}
		if r.Status.State != api.RolloutRunning {
			c.stopTimer(name)
			return nil
		}
		idx, at := c.next(&r, now)
		if at != nil {
			if !timeEqual(r.Status.NextBatchAt, at) {
				r.Status.NextBatchAt = at
				if err := c.write(ctx, &r); err != nil {
					return err
				}
			}
			c.schedule(name, at.Sub(now))
			return nil
		}
		if idx < 0 {
			return nil
		}
		if err := c.start(ctx, &r, idx, now); err != nil {
			return err
		}
	}
}

// observeRuns records the runs of running machines that ended.
func (c *rolloutController) observeRuns(ctx context.Context, r *api.Rollout) (bool, error) {
	changed := false
	for i := range r.Status.Machines {
		m := &r.Status.Machines[i]
		if m.State != api.RolloutMachineRunning {
			continue
		}
		rec, err := c.e.st.Get(ctx, api.KindRun, m.Run)
		if errors.Is(err, store.ErrNotFound) {
			m.State = api.RolloutMachineFailed
			m.Message = fmt.Sprintf("run %s was deleted before it was seen to end", m.Run)
			t := c.e.now().UTC()
			m.FinishedAt = &t
			changed = true
			continue
		}
		if err != nil {
			return false, err
		}
		var run api.Run
		if err := model.Decode(rec, &run); err != nil {
			return false, err
		}
		if run.State == api.RunRunning {
			continue
		}
		m.State = api.RolloutMachineFailed
		if run.State == api.RunSucceeded {
			m.State = api.RolloutMachineSucceeded
		}
		m.Message = run.Message
		m.FinishedAt = run.FinishedAt
		m.FinishedRevision = rec.Revision
		changed = true
	}
	return changed, nil
}

// next picks the machine to start now: the next pending machine of the
// current batch while fewer than maxUnavailable run, or, once the batch
// ended and the pause passed, the first of a new batch. It returns -1 when
// nothing can start now, with the time the next batch may start when the
// pause holds it back.
func (c *rolloutController) next(r *api.Rollout, now time.Time) (int, *time.Time) {
	s := &r.Status
	if batchOpen(r) {
		if s.Running >= maxUnavailable(r) {
			return -1, nil
		}
		for i, m := range s.Machines {
			if m.Batch == s.Batch && m.State == api.RolloutMachinePending {
				return i, nil
			}
		}
		return -1, nil
	}
	first := -1
	for i, m := range s.Machines {
		if m.State == api.RolloutMachinePending && m.Batch == 0 {
			first = i
			break
		}
	}
	if first < 0 {
		return -1, nil
	}
	if pause, _ := model.ParsePauseBetween(r.PauseBetween); pause > 0 && s.BatchFinishedAt != nil {
		if at := s.BatchFinishedAt.Add(pause); at.After(now) {
			return -1, &at
		}
	}
	s.Batch++
	s.BatchFinishedAt = nil
	s.NextBatchAt = nil
	n := batchSize(r)
	for i := range s.Machines {
		m := &s.Machines[i]
		if n > 0 && m.State == api.RolloutMachinePending && m.Batch == 0 {
			m.Batch = s.Batch
			n--
		}
	}
	return first, nil
}

// start starts machine idx: the run and the rollout's record of it are one
// transaction. A refusal (wrong state, no workflow...) fails the machine
// with the reason.
func (c *rolloutController) start(ctx context.Context, r *api.Rollout, idx int, now time.Time) error {
	next := *r
	next.Status.Machines = slices.Clone(r.Status.Machines)
	m := &next.Status.Machines[idx]
	m.Attempts++
	m.StartedAt = &now
	m.FinishedAt = nil
	m.FinishedRevision = 0
	user := r.User
	if user == "" {
		user = "drover"
	}
	run, err := c.e.startAction(ctx, m.Name, r.Action, r.Workflow, user, &startWith{
		labels: map[string]string{LabelRollout: r.Name},
		op: func(run *api.Run) (store.Op, error) {
			m.State = api.RolloutMachineRunning
			m.Run = run.Name
			m.Message = ""
			recount(&next)
			return updateOp(&next)
		},
	})
	switch {
	case err == nil:
		next.Revision = run.Revision
		*r = next
		c.e.log.Info("rollout started machine", "rollout", r.Name, "machine", m.Name, "batch", m.Batch, "run", run.Name)
		return nil
	case errors.Is(err, errStartWithConflict), ctx.Err() != nil, errors.Is(err, store.ErrClosed):
		return err
	}
	m.State = api.RolloutMachineFailed
	m.Run = ""
	m.Message = err.Error()
	m.StartedAt = nil
	m.FinishedAt = &now
	recount(&next)
	if werr := c.write(ctx, &next); werr != nil {
		return werr
	}
	*r = next
	c.e.log.Info("rollout could not start machine", "rollout", r.Name, "machine", m.Name, "err", err)
	return nil
}

func (c *rolloutController) write(ctx context.Context, r *api.Rollout) error {
	op, err := updateOp(r)
	if err != nil {
		return err
	}
	_, rev, err := c.e.st.Txn(ctx, []store.Op{op})
	if err != nil {
		return err
	}
	r.Revision = rev
	return nil
}

func (c *rolloutController) schedule(name string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.timers[name]; t != nil {
		t.Stop()
	}
	c.timers[name] = time.AfterFunc(d, func() { c.queue.Add(name) })
}

func (c *rolloutController) stopTimer(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.timers[name]; t != nil {
		t.Stop()
		delete(c.timers, name)
	}
}

func (c *rolloutController) stopTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, t := range c.timers {
		t.Stop()
		delete(c.timers, n)
	}
}
