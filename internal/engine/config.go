package engine

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/labels"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/render"
	"github.com/drover-project/drover/internal/store"
)

// configKinds are the kinds rendering reads.
var configKinds = []string{api.KindProfile, api.KindParam, api.KindTemplate, api.KindTask, api.KindWorkflow}

func isConfigKind(kind string) bool {
	switch kind {
	case api.KindProfile, api.KindParam, api.KindTemplate, api.KindTask, api.KindWorkflow:
		return true
	}
	return false
}

// configSnapshot is the configuration at one point: decoded objects by
// name, and the parsed selectors of profiles that have one. A snapshot is
// never changed once published (a change makes a new one), so renders use
// it without locks, and objects in it must not be modified.
type configSnapshot struct {
	profiles  map[string]*api.Profile
	selectors map[string]render.Selector
	params    map[string]*api.Param
	templates map[string]*api.Template
	tasks     map[string]*api.Task
	workflows map[string]*api.Workflow
}

func emptySnapshot() *configSnapshot {
	return &configSnapshot{
		profiles:  map[string]*api.Profile{},
		selectors: map[string]render.Selector{},
		params:    map[string]*api.Param{},
		templates: map[string]*api.Template{},
		tasks:     map[string]*api.Task{},
		workflows: map[string]*api.Workflow{},
	}
}

// revisionOf is the record revision of an object in the snapshot (0: absent).
func (s *configSnapshot) revisionOf(kind, name string) int64 {
	switch kind {
	case api.KindProfile:
		return revisionIn(s.profiles, name)
	case api.KindParam:
		return revisionIn(s.params, name)
	case api.KindTemplate:
		return revisionIn(s.templates, name)
	case api.KindTask:
		return revisionIn(s.tasks, name)
	case api.KindWorkflow:
		return revisionIn(s.workflows, name)
	}
	return 0
}

func revisionIn[T api.Object](objs map[string]T, name string) int64 {
	if o, ok := objs[name]; ok {
		return o.GetMeta().Revision
	}
	return 0
}

// with returns a copy of s with the events applied; only the maps of kinds
// the events touch are copied. Events older than what s holds (replayed
// after a re-list) are skipped.
func (s *configSnapshot) with(evs []store.Event) *configSnapshot {
	n := *s
	cloned := map[string]bool{}
	clone := func(kind string) {
		if cloned[kind] {
			return
		}
		cloned[kind] = true
		switch kind {
		case api.KindProfile:
			n.profiles = maps.Clone(n.profiles)
			n.selectors = maps.Clone(n.selectors)
		case api.KindParam:
			n.params = maps.Clone(n.params)
		case api.KindTemplate:
			n.templates = maps.Clone(n.templates)
		case api.KindTask:
			n.tasks = maps.Clone(n.tasks)
		case api.KindWorkflow:
			n.workflows = maps.Clone(n.workflows)
		}
	}
	for _, ev := range evs {
		rec := ev.Record
		have := n.revisionOf(rec.Kind, rec.Name)
		if ev.Type == store.EventDelete {
			if have == 0 || have >= ev.Revision {
				continue
			}
			clone(rec.Kind)
			n.remove(rec.Kind, rec.Name)
			continue
		}
		if have >= rec.Revision {
			continue
		}
		clone(rec.Kind)
		n.put(rec)
	}
	return &n
}

// put adds a record to maps the caller owns.
func (s *configSnapshot) put(rec store.Record) {
	obj, err := model.DecodeNew(rec)
	if err != nil {
		// Only valid objects get into the store; one that does not decode
		// renders as missing, which names it.
		return
	}
	switch o := obj.(type) {
	case *api.Profile:
		s.profiles[o.Name] = o
		delete(s.selectors, o.Name)
		if o.Selector != "" && o.Name != api.GlobalProfile {
			if sel, err := labels.Parse(o.Selector); err == nil && !sel.Empty() {
				s.selectors[o.Name] = sel
			}
		}
	case *api.Param:
		s.params[o.Name] = o
	case *api.Template:
		s.templates[o.Name] = o
	case *api.Task:
		s.tasks[o.Name] = o
	case *api.Workflow:
		s.workflows[o.Name] = o
	}
}

func (s *configSnapshot) remove(kind, name string) {
	switch kind {
	case api.KindProfile:
		delete(s.profiles, name)
		delete(s.selectors, name)
	case api.KindParam:
		delete(s.params, name)
	case api.KindTemplate:
		delete(s.templates, name)
	case api.KindTask:
		delete(s.tasks, name)
	case api.KindWorkflow:
		delete(s.workflows, name)
	}
}

// loadConfig reads the configuration from the store. The revision returned
// is the oldest of the lists: the snapshot holds every write up to it.
func loadConfig(ctx context.Context, st store.Store) (*configSnapshot, int64, error) {
	s := emptySnapshot()
	var oldest int64
	for _, kind := range configKinds {
		recs, rev, err := st.List(ctx, kind, store.ListOptions{})
		if err != nil {
			return nil, 0, err
		}
		if oldest == 0 || rev < oldest {
			oldest = rev
		}
		for _, rec := range recs {
			s.put(rec)
		}
	}
	return s, oldest, nil
}

// input gathers what rendering needs for a machine: its profiles (listed,
// selected by its labels, global), the params and templates.
func (s *configSnapshot) input(m *api.Machine, secrets render.Opener) (*render.Input, error) {
	in := &render.Input{
		Machine:   m,
		Profiles:  map[string]*api.Profile{},
		Selected:  render.SelectProfiles(m.Labels, s.selectors),
		Params:    s.params,
		Templates: s.templates,
		Secrets:   secrets,
	}
	for _, pn := range in.Order() {
		p := s.profiles[pn]
		if p == nil {
			if pn == api.GlobalProfile {
				continue
			}
			return nil, fmt.Errorf("machine %q uses profile %q, which does not exist", m.Name, pn)
		}
		in.Profiles[pn] = p
	}
	return in, nil
}

// configCache keeps the current configSnapshot, fed by the event stream
// the engine follows anyway. Renders wait until it holds the store's
// revision at the time of the call, so a render sees every write made
// before it, as a read of the store would, without listing and decoding
// every param and template for each job (and for each machine when drift
// is checked).
type configCache struct {
	mu      sync.Mutex
	snap    *configSnapshot
	rev     int64 // every event up to rev is applied
	changed chan struct{}
	// pending holds the config events of the transaction being read: a
	// transaction's events are applied together.
	pending []store.Event
}

func newConfigCache() *configCache {
	return &configCache{changed: make(chan struct{})}
}

// reset installs a snapshot read from the store at rev.
func (c *configCache) reset(s *configSnapshot, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.snap = s
	c.pending = nil
	c.advanceLocked(rev)
}

// observe takes one event of the stream; the last event of a transaction
// applies the transaction's config events and moves the revision. It
// returns the config events applied with the snapshots before and after.
func (c *configCache) observe(ev store.Event) (changed []store.Event, before, after *configSnapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap == nil {
		return nil, nil, nil
	}
	if isConfigKind(ev.Record.Kind) {
		c.pending = append(c.pending, ev)
	}
	if !ev.Last {
		return nil, nil, nil
	}
	changed, before = c.pending, c.snap
	c.pending = nil
	if len(changed) > 0 {
		c.snap = c.snap.with(changed)
	}
	c.advanceLocked(ev.Revision)
	return changed, before, c.snap
}

func (c *configCache) advanceLocked(rev int64) {
	if rev > c.rev {
		c.rev = rev
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// current returns the snapshot now held, nil before the first load.
func (c *configCache) current() *configSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

// at waits until the cache holds revision rev and returns the snapshot;
// nil if that takes longer than wait.
func (c *configCache) at(ctx context.Context, rev int64, wait time.Duration) *configSnapshot {
	var timer <-chan time.Time
	for {
		c.mu.Lock()
		if c.snap != nil && c.rev >= rev {
			s := c.snap
			c.mu.Unlock()
			return s
		}
		ch := c.changed
		c.mu.Unlock()
		if timer == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ch:
		case <-timer:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// configWait bounds how long a render waits for the engine to catch up
// with the store before it reads the store itself.
const configWait = 2 * time.Second

// config returns the configuration as of now: the cache once it has caught
// up with the store, else (engine not running, or far behind) a fresh read.
func (e *Engine) config(ctx context.Context) (*configSnapshot, error) {
	rev, err := e.st.Revision(ctx)
	if err != nil {
		return nil, err
	}
	if s := e.configs.at(ctx, rev, configWait); s != nil {
		return s, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	s, _, err := loadConfig(ctx, e.st)
	return s, err
}

// renderInput gathers what rendering needs for a machine.
func (e *Engine) renderInput(ctx context.Context, m *api.Machine) (*render.Input, error) {
	cfg, err := e.config(ctx)
	if err != nil {
		return nil, err
	}
	return cfg.input(m, e.secrets)
}

// RenderInput exposes renderInput for the API (effective params).
func (e *Engine) RenderInput(ctx context.Context, m *api.Machine) (*render.Input, error) {
	return e.renderInput(ctx, m)
}
