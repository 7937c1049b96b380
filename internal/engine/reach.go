package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/render"
	"github.com/drover-project/drover/internal/store"
)

// reachability tracks agent heartbeats in memory and writes a machine's
// reachable flag only when it changes (and lastSeen now and then), so that
// ten thousand heartbeating agents do not turn into ten thousand writes.
type reachability struct {
	e         *Engine
	mu        sync.Mutex
	lastSeen  map[string]time.Time
	reachable map[string]bool
	persisted map[string]time.Time
}

func newReachability(e *Engine) *reachability {
	return &reachability{
		e:         e,
		lastSeen:  map[string]time.Time{},
		reachable: map[string]bool{},
		persisted: map[string]time.Time{},
	}
}

// load seeds the tracker from the store. Machines that were reachable get a
// full timeout from now to heartbeat, since the server itself was away.
func (r *reachability) load(recs []store.Record) {
	now := r.e.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		var m api.Machine
		if err := model.Decode(rec, &m); err != nil {
			continue
		}
		if m.Status.AgentID == "" {
			continue
		}
		if _, ok := r.reachable[m.Name]; ok {
			continue
		}
		r.reachable[m.Name] = m.Status.Reachable
		if m.Status.Reachable {
			r.lastSeen[m.Name] = now
			if m.Status.LastSeen != nil {
				r.persisted[m.Name] = *m.Status.LastSeen
			}
		}
	}
}

func (r *reachability) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.lastSeen, name)
	delete(r.reachable, name)
	delete(r.persisted, name)
}

// Heartbeat records that a machine's agent is alive.
func (r *reachability) Heartbeat(name string) {
	now := r.e.now()
	r.mu.Lock()
	r.lastSeen[name] = now
	came := !r.reachable[name]
	stale := now.Sub(r.persisted[name]) > r.e.cfg.ReachableTimeout
	if came {
		r.reachable[name] = true
	}
	if came || stale {
		r.persisted[name] = now
	}
	r.mu.Unlock()
	if came || stale {
		go r.write(name, true, now, came)
	}
}

// Heartbeat records an agent's heartbeat.
func (e *Engine) Heartbeat(machine string) { e.reach.Heartbeat(machine) }

func (r *reachability) run(ctx context.Context) {
	tick := r.e.cfg.ReachableTimeout / 10
	if tick < 50*time.Millisecond {
		tick = 50 * time.Millisecond
	}
	if tick > time.Second {
		tick = time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := r.e.now()
		var lost []string
		r.mu.Lock()
		for name, ok := range r.reachable {
			if ok && now.Sub(r.lastSeen[name]) > r.e.cfg.ReachableTimeout {
				r.reachable[name] = false
				lost = append(lost, name)
			}
		}
		r.mu.Unlock()
		for _, name := range lost {
			r.e.log.Info("machine unreachable", "machine", name, "timeout", r.e.cfg.ReachableTimeout)
			r.write(name, false, time.Time{}, false)
		}
	}
}

// write persists a reachability change; when a machine comes back it runs
// its verify workflow, if one is configured.
func (r *reachability) write(name string, reachable bool, seen time.Time, cameBack bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wasKnownDown bool
	m, _, err := mutate(ctx, r.e.st, api.KindMachine, name, func(m *api.Machine) error {
		wasKnownDown = !m.Status.Reachable && m.Status.LastSeen != nil
		if reachable {
			t := seen.UTC()
			if m.Status.LastSeen != nil && !m.Status.LastSeen.Before(t) && m.Status.Reachable {
				return errSkip
			}
			m.Status.Reachable = true
			m.Status.LastSeen = &t
			return nil
		}
		if !m.Status.Reachable {
			return errSkip
		}
		// Re-check under the lock: a heartbeat may have arrived meanwhile.
		r.mu.Lock()
		back := r.reachable[name]
		last := r.lastSeen[name]
		r.mu.Unlock()
		if back {
			return errSkip
		}
		m.Status.Reachable = false
		if !last.IsZero() {
			t := last.UTC()
			m.Status.LastSeen = &t
		}
		return nil
	})
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrClosed) {
			r.e.log.Warn("writing reachability", "machine", name, "err", err)
		}
		return
	}
	if reachable && cameBack && wasKnownDown {
		r.e.log.Info("machine reachable again", "machine", name)
		r.e.verifyOnReturn(ctx, m)
	}
}

// verifyOnReturn runs the verify workflow (param verify/workflow) on a
// machine whose agent came back, if it is idle and in a verifiable state.
func (e *Engine) verifyOnReturn(ctx context.Context, m *api.Machine) {
	if m.Status.Run != "" {
		return
	}
	if _, err := checkTransition(m, api.ActionVerify); err != nil {
		return
	}
	in, err := e.renderInput(ctx, m)
	if err != nil {
		return
	}
	v, err := in.Param(api.ActionVerify + "/workflow")
	var mp *render.MissingParamError
	if errors.As(err, &mp) {
		return
	}
	wf, _ := v.(string)
	if err != nil || wf == "" {
		e.log.Warn("verify/workflow param is not usable", "machine", m.Name, "err", err)
		return
	}
	run, err := e.StartAction(ctx, m.Name, api.ActionVerify, wf, "drover")
	if err != nil {
		e.log.Warn("cannot start verify on return", "machine", m.Name, "err", err)
		return
	}
	e.log.Info("verify started on return", "machine", m.Name, "run", run.Name)
}

// Reachable reports the in-memory view (for tests and metrics).
func (e *Engine) Reachable(machine string) (bool, time.Time) {
	e.reach.mu.Lock()
	defer e.reach.mu.Unlock()
	return e.reach.reachable[machine], e.reach.lastSeen[machine]
}

// Registered tells the tracker that a machine was just registered with
// reachable already set in the store.
func (e *Engine) Registered(machine string) {
	now := e.now()
	e.reach.mu.Lock()
	e.reach.lastSeen[machine] = now
	e.reach.reachable[machine] = true
	e.reach.persisted[machine] = now
	e.reach.mu.Unlock()
}
