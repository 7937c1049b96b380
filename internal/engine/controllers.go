package engine

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// runControllers runs the rollout and policy reconcilers until ctx ends.
func (e *Engine) runControllers(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.work(ctx, e.rollouts.queue, "rollout", e.rollouts.pass)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.work(ctx, e.policies.queue, "policy", e.policies.pass)
	}()
	<-ctx.Done()
	e.rollouts.queue.Close()
	e.policies.queue.Close()
	wg.Wait()
	e.rollouts.stopTimers()
	e.policies.stopTimers()
}

// work reconciles the keys of a queue with pass until it is closed. A pass
// that met a conflict (someone else wrote the object: a resume, a cancel, a
// policy adding machines) is run again from what the store holds; a failed
// key is tried again a little later.
func (e *Engine) work(ctx context.Context, q *workQueue, what string, pass func(context.Context, string) error) {
	for {
		key, ok := q.Get()
		if !ok {
			return
		}
		var err error
		for attempt := 0; attempt < 50; attempt++ {
			err = pass(ctx, key)
			if !errors.Is(err, store.ErrConflict) && !errors.Is(err, errStartWithConflict) {
				break
			}
		}
		q.Done(key)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("reconcile failed; will retry", what, key, "err", err)
			go func() {
				sleep(ctx, 500*time.Millisecond)
				q.Add(key)
			}()
		}
	}
}

// resyncControllers queues every rollout that may still act and every
// policy, after a start or a lost watch.
func (e *Engine) resyncControllers(ctx context.Context, machines []store.Record) error {
	rollouts, _, err := e.st.List(ctx, api.KindRollout, store.ListOptions{})
	if err != nil {
		return err
	}
	for _, rec := range rollouts {
		var r api.Rollout
		if err := model.Decode(rec, &r); err == nil && (r.Active() || r.Status.State == api.RolloutCancelled && r.Status.FinishedAt == nil) {
			e.rollouts.queue.Add(r.Name)
		}
	}
	policies, _, err := e.st.List(ctx, api.KindPolicy, store.ListOptions{})
	if err != nil {
		return err
	}
	e.policies.load(policies, machines)
	return nil
}

// observeForControllers routes an event to the reconcilers it concerns.
func (e *Engine) observeForControllers(ev store.Event) {
	rec := ev.Record
	switch rec.Kind {
	case api.KindRollout:
		if ev.Type == store.EventDelete {
			e.rollouts.stopTimer(rec.Name)
		} else {
			e.rollouts.queue.Add(rec.Name)
		}
		// A policy waits for its rollout to stop running, not for its
		// progress.
		if p := rec.Labels[LabelPolicy]; p != "" {
			var r struct {
				Status struct{ State string } `json:"status"`
			}
			if ev.Type == store.EventDelete || json.Unmarshal(rec.Data, &r) != nil || r.Status.State != api.RolloutRunning {
				e.policies.queue.Add(p)
			}
		}
	case api.KindRun:
		if r := rec.Labels[LabelRollout]; r != "" {
			e.rollouts.queue.Add(r)
		}
	case api.KindPolicy:
		e.policies.observePolicy(ev)
	case api.KindMachine:
		e.policies.observeMachine(ev)
	}
}
