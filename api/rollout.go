package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Kinds of rolling operations and automatic policies.
const (
	KindRollout = "Rollout"
	KindPolicy  = "Policy"
)

// Rollout states.
const (
	// RolloutRunning starts machines batch by batch.
	RolloutRunning = "running"
	// RolloutPaused stopped after MaxFailures failed machines; machines
	// already running finish, nothing new starts until it is resumed.
	RolloutPaused = "paused"
	// RolloutCancelled starts nothing new; running machines finish.
	RolloutCancelled = "cancelled"
	// RolloutDone has no machine left to start or running.
	RolloutDone = "done"
)

// States of one machine in a rollout.
const (
	RolloutMachinePending   = "pending"
	RolloutMachineRunning   = "running"
	RolloutMachineSucceeded = "succeeded"
	RolloutMachineFailed    = "failed"
)

// Rollout runs a lifecycle action on many machines a batch at a time: it
// never has more than MaxUnavailable of its machines running at once, and
// stops starting machines after MaxFailures of them failed. It is created
// by drover (drover upgrade NODES --batch-size N, or a policy) and driven
// by the engine; its progress is in the store, so it survives restarts.
type Rollout struct {
	Meta
	Action   string `json:"action"`
	Workflow string `json:"workflow,omitempty"`
	// Nodes is the node range the machines were resolved from.
	Nodes string `json:"nodes,omitempty"`
	// Machines are the machines in the order they go (node range order).
	Machines []string `json:"machines"`
	// BatchSize is how many machines a batch has; 0: all in one batch.
	BatchSize int `json:"batchSize,omitempty"`
	// MaxUnavailable bounds the rollout's machines running at once; 0:
	// the batch size.
	MaxUnavailable int `json:"maxUnavailable,omitempty"`
	// MaxFailures stops the rollout once that many machines failed; 0:
	// never stop for failures.
	MaxFailures int `json:"maxFailures,omitempty"`
	// PauseBetween is waited after a batch ends before the next starts
	// (Go duration).
	PauseBetween string `json:"pauseBetween,omitempty"`
	// Policy names the policy that made the rollout, if any, and
	// PolicyDigest its settings then: failures under other settings do
	// not make the policy skip a machine.
	Policy       string        `json:"policy,omitempty"`
	PolicyDigest string        `json:"policyDigest,omitempty"`
	User         string        `json:"user,omitempty"`
	Status       RolloutStatus `json:"status"`
}

// RolloutStatus is the progress of a rollout.
type RolloutStatus struct {
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// Batch is the number of the current (or last) batch, from 1; 0
	// before the first.
	Batch int `json:"batch"`
	// BatchesDone counts batches whose machines all finished; Batches is
	// the number of batches the rollout will have, as far as known.
	BatchesDone int `json:"batchesDone"`
	Batches     int `json:"batches"`
	// BatchFinishedAt is when the last batch ended; NextBatchAt when the
	// next may start (with pauseBetween).
	BatchFinishedAt *time.Time `json:"batchFinishedAt,omitempty"`
	NextBatchAt     *time.Time `json:"nextBatchAt,omitempty"`
	Pending         int        `json:"pending"`
	Running         int        `json:"running"`
	Succeeded       int        `json:"succeeded"`
	Failed          int        `json:"failed"`
	// IgnoredFailures are failures a resume let pass: the rollout stops
	// again after MaxFailures more.
	IgnoredFailures int        `json:"ignoredFailures,omitempty"`
	StartedAt       time.Time  `json:"startedAt"`
	FinishedAt      *time.Time `json:"finishedAt,omitempty"`
	// Machines has one entry per machine, in the order of Machines.
	Machines []RolloutMachine `json:"machines"`
}

// RolloutMachine is one machine's progress in a rollout.
type RolloutMachine struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Batch is the batch the machine went in (0 while not assigned).
	Batch   int    `json:"batch,omitempty"`
	Run     string `json:"run,omitempty"`
	Message string `json:"message,omitempty"`
	// Attempts counts starts (more than one after resume --retry-failed).
	Attempts   int        `json:"attempts,omitempty"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	// FinishedRevision is the store revision at which its run ended.
	FinishedRevision int64 `json:"finishedRevision,omitempty"`
}

// Active reports whether the rollout may still start machines or has
// machines running.
func (r *Rollout) Active() bool {
	switch r.Status.State {
	case RolloutRunning, RolloutPaused:
		return true
	case RolloutCancelled:
		return r.Status.Running > 0
	}
	return false
}

// RolloutRequest starts a rollout of a lifecycle action on the machines of
// a node range.
type RolloutRequest struct {
	Action         string `json:"action"`
	Nodes          string `json:"nodes"`
	Workflow       string `json:"workflow,omitempty"`
	BatchSize      int    `json:"batchSize,omitempty"`
	MaxUnavailable int    `json:"maxUnavailable,omitempty"`
	MaxFailures    int    `json:"maxFailures,omitempty"`
	PauseBetween   string `json:"pauseBetween,omitempty"`
}

// RolloutResumeRequest resumes a paused rollout.
type RolloutResumeRequest struct {
	// RetryFailed starts the failed machines again (in the next batches);
	// without it they stay failed and are skipped.
	RetryFailed bool `json:"retryFailed,omitempty"`
}

// Policy types.
const (
	// PolicyAutoCommission commissions machines discovered after the
	// policy was created.
	PolicyAutoCommission = "auto-commission"
	// PolicyAutoUpgrade upgrades deployed machines whose configuration
	// drifted, as a rollout.
	PolicyAutoUpgrade = "auto-upgrade"
)

// Policy makes drover act on its own: commission new machines or upgrade
// drifted ones. Users write the fields; Status is drover's.
type Policy struct {
	Meta
	Type string `json:"type"`
	// Selector limits the policy to machines whose labels match; empty:
	// every machine.
	Selector string `json:"selector,omitempty"`
	// Enabled defaults to true: applying a policy turns it on.
	Enabled *bool `json:"enabled,omitempty"`
	// Workflow overrides the machines' <action>/workflow param.
	Workflow string `json:"workflow,omitempty"`
	// Rollout settings of the rollouts the policy starts (see Rollout).
	BatchSize      int    `json:"batchSize,omitempty"`
	MaxUnavailable int    `json:"maxUnavailable,omitempty"`
	PauseBetween   string `json:"pauseBetween,omitempty"`
	// MaxFailures: default 1 for auto-upgrade (stop at the first failed
	// machine), 0 (never stop) for auto-commission.
	MaxFailures *int         `json:"maxFailures,omitempty"`
	Status      PolicyStatus `json:"status,omitempty"`
}

// IsEnabled reports whether the policy acts.
func (p *Policy) IsEnabled() bool { return p.Enabled == nil || *p.Enabled }

// PolicyStatus is what a policy did last and which machines it leaves
// alone.
type PolicyStatus struct {
	// Rollout is the policy's active rollout, or its last one.
	Rollout string `json:"rollout,omitempty"`
	Message string `json:"message,omitempty"`
	// Skipped are machines the policy would act on but does not, because
	// their last attempt by this policy failed.
	Skipped []PolicySkip `json:"skipped,omitempty"`
}

// PolicySkip says why a policy leaves a machine alone.
type PolicySkip struct {
	Machine string `json:"machine"`
	Rollout string `json:"rollout"`
	Reason  string `json:"reason"`
}

// StartRollout starts a rolling action; the answer is the new rollout.
func (c *Client) StartRollout(ctx context.Context, req RolloutRequest) (*Rollout, error) {
	var out Rollout
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/rollouts", req, &out)
}

// ResumeRollout lets a paused rollout go on.
func (c *Client) ResumeRollout(ctx context.Context, name string, retryFailed bool) (*Rollout, error) {
	var out Rollout
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/rollouts/"+url.PathEscape(name)+"/resume", RolloutResumeRequest{RetryFailed: retryFailed}, &out)
}

// CancelRollout stops a rollout from starting machines.
func (c *Client) CancelRollout(ctx context.Context, name string) (*Rollout, error) {
	var out Rollout
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/rollouts/"+url.PathEscape(name)+"/cancel", struct{}{}, &out)
}
