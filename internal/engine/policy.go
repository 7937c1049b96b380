package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/labels"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/noderange"
	"github.com/drover-project/drover/internal/store"
)

// Policies act through rollouts. A policy's reconciler lists the machines
// it would act on now (level-triggered), leaves out those its active
// rollout has and those it skips, and starts a rollout with the rest (or,
// for auto-commission, adds them to its running rollout). It never acts
// twice on the same failure: a machine whose last attempt by the policy
// failed is skipped, with the reason in the policy's status, until the
// machine runs a workflow again or the policy's settings change.

// A configuration change drifts machines one by one, as the drift
// reconciler gets to them: auto-upgrade waits until no machine has started
// drifting for policySettle (but no longer than policyMaxDelay after the
// first), so that one change makes one rollout.
const (
	policySettle   = 500 * time.Millisecond
	policyMaxDelay = 10 * time.Second
)

type policyController struct {
	e     *Engine
	queue *workQueue

	mu     sync.Mutex
	timers map[string]*time.Timer
	// firstDrift and lastDrift bound the current burst of machines
	// starting to drift.
	firstDrift, lastDrift time.Time
	policies              map[string]bool
	// facts are the parts of each machine that policies look at: a
	// machine event that changes none of them (a heartbeat's lastSeen)
	// wakes no policy.
	facts map[string]machineFacts
	// driftSince is the revision at which a machine's configDrift was
	// seen turning true (0: it was already true when the engine started).
	driftSince map[string]int64
}

type machineFacts struct {
	state, run, lastRun, labels string
	drift, agent                bool
}

func newPolicyController(e *Engine) *policyController {
	return &policyController{e: e, queue: newWorkQueue(), timers: map[string]*time.Timer{}, policies: map[string]bool{}, facts: map[string]machineFacts{}, driftSince: map[string]int64{}}
}

// machineView is the part of a machine record policies decode.
type machineView struct {
	Status struct {
		State       string `json:"state"`
		Run         string `json:"run"`
		LastRun     string `json:"lastRun"`
		AgentID     string `json:"agentID"`
		ConfigDrift bool   `json:"configDrift"`
	} `json:"status"`
}

func factsOf(rec store.Record) (machineFacts, bool) {
	var v machineView
	if err := json.Unmarshal(rec.Data, &v); err != nil {
		return machineFacts{}, false
	}
	var ls []string
	for _, k := range model.SortedKeys(rec.Labels) {
		ls = append(ls, k+"="+rec.Labels[k])
	}
	return machineFacts{
		state: v.Status.State, run: v.Status.Run, lastRun: v.Status.LastRun,
		labels: strings.Join(ls, ","), drift: v.Status.ConfigDrift, agent: v.Status.AgentID != "",
	}, true
}

// observeMachine follows a machine event; it wakes every policy when the
// machine changed in a way a policy may care about.
func (c *policyController) observeMachine(ev store.Event) {
	name := ev.Record.Name
	c.mu.Lock()
	if ev.Type == store.EventDelete {
		delete(c.facts, name)
		delete(c.driftSince, name)
		c.mu.Unlock()
		return
	}
	f, ok := factsOf(ev.Record)
	if !ok {
		c.mu.Unlock()
		return
	}
	prev, known := c.facts[name]
	c.facts[name] = f
	if f.drift && (!known || !prev.drift) {
		c.driftSince[name] = ev.Revision
		now := c.e.now()
		if now.Sub(c.lastDrift) > policySettle {
			c.firstDrift = now
		}
		c.lastDrift = now
	} else if !f.drift {
		delete(c.driftSince, name)
	}
	wake := !known || prev != f
	var names []string
	if wake {
		names = model.SortedKeys(c.policies)
	}
	c.mu.Unlock()
	for _, p := range names {
		c.queue.Add(p)
	}
}

func (c *policyController) observePolicy(ev store.Event) {
	c.mu.Lock()
	if ev.Type == store.EventDelete {
		delete(c.policies, ev.Record.Name)
	} else {
		c.policies[ev.Record.Name] = true
	}
	c.mu.Unlock()
	c.queue.Add(ev.Record.Name)
}

// load rebuilds the controller's memory from a listing.
func (c *policyController) load(policies, machines []store.Record) {
	c.mu.Lock()
	c.policies = map[string]bool{}
	for _, p := range policies {
		c.policies[p.Name] = true
	}
	facts := map[string]machineFacts{}
	drift := map[string]int64{}
	for _, rec := range machines {
		f, ok := factsOf(rec)
		if !ok {
			continue
		}
		facts[rec.Name] = f
		if f.drift {
			// Kept only if it was true all along; else unknown.
			if prev, ok := c.facts[rec.Name]; ok && prev.drift {
				drift[rec.Name] = c.driftSince[rec.Name]
			} else {
				drift[rec.Name] = 0
			}
		}
	}
	c.facts, c.driftSince = facts, drift
	c.mu.Unlock()
	for _, p := range policies {
		c.queue.Add(p.Name)
	}
}

// PolicyDigest identifies a policy's settings: a failure under other
// settings does not make the policy skip a machine.
func PolicyDigest(p *api.Policy) string {
	b, _ := json.Marshal([]any{p.Type, p.Selector, p.IsEnabled(), p.Workflow, p.BatchSize, p.MaxUnavailable, p.PauseBetween, p.MaxFailures})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// policyAction is the lifecycle action a policy type runs.
func policyAction(p *api.Policy) string {
	if p.Type == api.PolicyAutoUpgrade {
		return api.ActionUpgrade
	}
	return api.ActionCommission
}

func policyMaxFailures(p *api.Policy) int {
	if p.MaxFailures != nil {
		return *p.MaxFailures
	}
	if p.Type == api.PolicyAutoUpgrade {
		return 1
	}
	return 0
}

// lastAttempt is a machine's latest entry in a policy's rollouts.
type lastAttempt struct {
	rollout *api.Rollout
	entry   api.RolloutMachine
}

func (c *policyController) pass(ctx context.Context, name string) error {
	e := c.e
	var p api.Policy
	if err := get(ctx, e.st, api.KindPolicy, name, &p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	status := api.PolicyStatus{}
	rollouts, err := c.rollouts(ctx, name)
	if err != nil {
		return err
	}
	var active *api.Rollout
	for _, r := range rollouts {
		if r.Active() && (active == nil || r.CreateRevision > active.CreateRevision) {
			active = r
		}
		if status.Rollout == "" || r.CreateRevision > rolloutByName(rollouts, status.Rollout).CreateRevision {
			status.Rollout = r.Name
		}
	}
	if active != nil {
		status.Rollout = active.Name
	}
	if !p.IsEnabled() {
		status.Message = "disabled (enabled: false)"
		return c.writeStatus(ctx, &p, status)
	}
	sel, err := labels.Parse(p.Selector)
	if err != nil {
		status.Message = "selector: " + err.Error()
		return c.writeStatus(ctx, &p, status)
	}
	last := map[string]lastAttempt{}
	for _, r := range rollouts {
		for _, m := range r.Status.Machines {
			if prev, ok := last[m.Name]; !ok || r.CreateRevision > prev.rollout.CreateRevision {
				last[m.Name] = lastAttempt{r, m}
			}
		}
	}
	machines, _, err := e.st.List(ctx, api.KindMachine, store.ListOptions{Selector: sel})
	if err != nil {
		return err
	}
	digest := PolicyDigest(&p)
	var eligible []string
	for _, rec := range machines {
		var m api.Machine
		if err := model.Decode(rec, &m); err != nil {
			continue
		}
		if m.Status.Run != "" || !c.wants(&p, &m) {
			continue
		}
		if a, ok := last[m.Name]; ok {
			if a.rollout == active && active != nil {
				continue
			}
			reason, err := c.skip(ctx, &p, digest, &m, a)
			if err != nil {
				return err
			}
			if reason == "-" {
				continue
			}
			if reason != "" {
				status.Skipped = append(status.Skipped, api.PolicySkip{Machine: m.Name, Rollout: a.rollout.Name, Reason: reason})
				continue
			}
		}
		eligible = append(eligible, m.Name)
	}
	eligible = noderange.NewNodeSet(nodes(eligible)...).Names("")
	switch {
	case len(eligible) == 0:
	case active == nil && p.Type == api.PolicyAutoUpgrade && c.settling(name):
		status.Message = fmt.Sprintf("%s drifted; waiting for drift to settle", plural(len(eligible), "machine", "machines"))
	case active == nil:
		r := &api.Rollout{
			Action: policyAction(&p), Workflow: p.Workflow, Machines: eligible,
			Nodes:     noderange.NewNodeSet(nodes(eligible)...).Fold(),
			BatchSize: p.BatchSize, MaxUnavailable: p.MaxUnavailable, MaxFailures: policyMaxFailures(&p), PauseBetween: p.PauseBetween,
			Policy: p.Name, PolicyDigest: digest, User: "policy/" + p.Name,
		}
		if err := e.CreateRollout(ctx, r, nil); err != nil {
			return err
		}
		e.log.Info("policy started a rollout", "policy", p.Name, "rollout", r.Name, "machines", r.Nodes)
		status.Rollout = r.Name
	case p.Type == api.PolicyAutoCommission && active.Status.State == api.RolloutRunning && active.PolicyDigest == digest:
		if err := c.extend(ctx, active, eligible); err != nil {
			return err
		}
		e.log.Info("policy added machines to its rollout", "policy", p.Name, "rollout", active.Name, "machines", strings.Join(eligible, ","))
	default:
		status.Message = fmt.Sprintf("%s waiting for rollout %s (%s) to end", plural(len(eligible), "machine", "machines"), active.Name, active.Status.State)
	}
	if active != nil && active.Status.State == api.RolloutPaused {
		if status.Message != "" {
			status.Message += "; "
		}
		status.Message += fmt.Sprintf("rollout %s is paused: drover rollouts resume %s (or cancel it)", active.Name, active.Name)
	}
	return c.writeStatus(ctx, &p, status)
}

func nodes(names []string) []noderange.Node {
	out := make([]noderange.Node, len(names))
	for i, n := range names {
		out[i] = noderange.Node{Name: n}
	}
	return out
}

func rolloutByName(rs []*api.Rollout, name string) *api.Rollout {
	for _, r := range rs {
		if r.Name == name {
			return r
		}
	}
	return &api.Rollout{}
}

// settling reports whether machines started drifting too recently to act,
// and if so wakes the policy when they will have settled.
func (c *policyController) settling(policy string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.e.now()
	at := c.lastDrift.Add(policySettle)
	if limit := c.firstDrift.Add(policyMaxDelay); limit.Before(at) {
		at = limit
	}
	if !at.After(now) {
		return false
	}
	if t := c.timers[policy]; t != nil {
		t.Stop()
	}
	c.timers[policy] = time.AfterFunc(at.Sub(now), func() { c.queue.Add(policy) })
	return true
}

func (c *policyController) stopTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, t := range c.timers {
		t.Stop()
		delete(c.timers, n)
	}
}

// wants reports whether a policy would act on an idle machine.
func (c *policyController) wants(p *api.Policy, m *api.Machine) bool {
	switch p.Type {
	case api.PolicyAutoCommission:
		// Only machines discovered since the policy exists, and only once
		// their agent registered (there is nobody to run the jobs before).
		return m.Status.State == api.StateDiscovered && m.Status.AgentID != "" && m.CreateRevision > p.CreateRevision
	case api.PolicyAutoUpgrade:
		return m.Status.State == api.StateDeployed && m.Status.ConfigDrift
	}
	return false
}

// skip decides about a machine the policy tried before: "" to act on it
// again, "-" to leave it without a word (done already), or the reason it is
// skipped.
func (c *policyController) skip(ctx context.Context, p *api.Policy, digest string, m *api.Machine, a lastAttempt) (string, error) {
	switch a.entry.State {
	case api.RolloutMachineSucceeded:
		if p.Type != api.PolicyAutoUpgrade {
			return "", nil
		}
		// Upgraded by this policy: act again only on drift seen after
		// that upgrade, never on the drift it was started for.
		c.mu.Lock()
		since, ok := c.driftSince[m.Name]
		c.mu.Unlock()
		if ok && since > 0 {
			if since > a.entry.FinishedRevision {
				return "", nil
			}
			return "-", nil
		}
		if m.Status.LastRun != a.entry.Run {
			return "", nil
		}
		return "-", nil
	case api.RolloutMachineFailed, api.RolloutMachinePending:
		if a.rollout.PolicyDigest != digest {
			return "", nil
		}
		ran, err := c.ranSince(ctx, m, a)
		if err != nil || ran {
			return "", err
		}
		if a.entry.State == api.RolloutMachinePending {
			return fmt.Sprintf("rollout %s was %s before it started; change the policy or run a workflow on the machine to try again", a.rollout.Name, a.rollout.Status.State), nil
		}
		return fmt.Sprintf("%s failed in rollout %s: %s; fix it, then run a workflow on the machine or change the policy to try again", policyAction(p), a.rollout.Name, a.entry.Message), nil
	}
	return "", nil
}

// ranSince reports whether a run of the machine ended after the policy's
// attempt did (or, for a machine never started, after its rollout ended).
func (c *policyController) ranSince(ctx context.Context, m *api.Machine, a lastAttempt) (bool, error) {
	end := a.entry.FinishedAt
	if end == nil {
		end = a.rollout.Status.FinishedAt
	}
	if m.Status.LastRun == "" || m.Status.LastRun == a.entry.Run || end == nil {
		return false, nil
	}
	var run api.Run
	if err := get(ctx, c.e.st, api.KindRun, m.Status.LastRun, &run); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return run.FinishedAt != nil && run.FinishedAt.After(*end), nil
}

func (c *policyController) rollouts(ctx context.Context, policy string) ([]*api.Rollout, error) {
	recs, _, err := c.e.st.List(ctx, api.KindRollout, store.ListOptions{Selector: labelEquals{LabelPolicy, policy}})
	if err != nil {
		return nil, err
	}
	out := make([]*api.Rollout, 0, len(recs))
	for _, rec := range recs {
		var r api.Rollout
		if err := model.Decode(rec, &r); err == nil {
			out = append(out, &r)
		}
	}
	return out, nil
}

// extend adds machines to a running rollout, after those it has.
func (c *policyController) extend(ctx context.Context, r *api.Rollout, machines []string) error {
	for _, m := range machines {
		r.Machines = append(r.Machines, m)
		r.Status.Machines = append(r.Status.Machines, api.RolloutMachine{Name: m, State: api.RolloutMachinePending})
	}
	r.Nodes = noderange.NewNodeSet(nodes(r.Machines)...).Fold()
	recount(r)
	op, err := updateOp(r)
	if err != nil {
		return err
	}
	_, _, err = c.e.st.Txn(ctx, []store.Op{op})
	return err
}

func (c *policyController) writeStatus(ctx context.Context, p *api.Policy, status api.PolicyStatus) error {
	if reflect.DeepEqual(p.Status, status) {
		return nil
	}
	p.Status = status
	op, err := updateOp(p)
	if err != nil {
		return err
	}
	_, _, err = c.e.st.Txn(ctx, []store.Op{op})
	return err
}

// labelEquals selects records whose label key is value.
type labelEquals struct{ key, value string }

func (l labelEquals) Matches(set map[string]string) bool {
	v, ok := set[l.key]
	return ok && v == l.value
}
