// Package api holds drover's wire types: the objects every part of drover
// reads and writes over the HTTP/JSON API, and the Go client for it.
package api

import (
	"encoding/json"
	"time"
)

// Object kinds.
const (
	KindMachine   = "Machine"
	KindProfile   = "Profile"
	KindParam     = "Param"
	KindTemplate  = "Template"
	KindTask      = "Task"
	KindWorkflow  = "Workflow"
	KindRun       = "Run"
	KindJob       = "Job"
	KindUser      = "User"
	KindJoinToken = "JoinToken"
	KindToken     = "Token"
	KindAudit     = "Audit"
)

// Meta is carried by every object. Revision and CreateRevision are set by
// the store; a client that sends Revision on an update asks for optimistic
// concurrency (the write fails with 409 if the object changed since).
type Meta struct {
	Kind           string            `json:"kind"`
	Name           string            `json:"name"`
	Labels         map[string]string `json:"labels,omitempty"`
	Description    string            `json:"description,omitempty"`
	Revision       int64             `json:"revision,omitempty"`
	CreateRevision int64             `json:"createRevision,omitempty"`
	// Source says where an object comes from: empty for objects users
	// wrote, "pack:NAME@VERSION" for objects a content pack provides. Set
	// by the server; ignored when a user applies an object.
	Source string `json:"source,omitempty"`
	// Site names the site an object belongs to when a manager shows it
	// from its mirror of that site; empty for the endpoint's own objects.
	// Set by the manager; never stored.
	Site string `json:"site,omitempty"`
}

// GetMeta gives access to the common fields of any object.
func (m *Meta) GetMeta() *Meta { return m }

// Object is implemented by every kind.
type Object interface {
	GetMeta() *Meta
}

// Machine lifecycle states.
const (
	StateDiscovered      = "discovered"
	StateCommissioning   = "commissioning"
	StateReady           = "ready"
	StateDeploying       = "deploying"
	StateDeployed        = "deployed"
	StateUpgrading       = "upgrading"
	StateDecommissioning = "decommissioning"
	StateDecommissioned  = "decommissioned"
	StateBroken          = "broken"
)

// Lifecycle actions.
const (
	ActionCommission   = "commission"
	ActionDeploy       = "deploy"
	ActionUpgrade      = "upgrade"
	ActionDecommission = "decommission"
	ActionVerify       = "verify"
)

// Machine is one server in the inventory. The top-level fields are the
// desired configuration, written by users; Status is owned by drover and is
// ignored when a user applies a Machine.
type Machine struct {
	Meta
	// Profiles are applied in order after the machine's own params.
	Profiles []string `json:"profiles,omitempty"`
	// Params are the machine's own param values; they win over profiles.
	Params map[string]json.RawMessage `json:"params,omitempty"`
	// BootEnv names the boot environment the machine network-boots into
	// (a BootEnv); empty means discovery. Changing it is one write that
	// the boot services serve from the next request on.
	BootEnv string        `json:"bootEnv,omitempty"`
	Status  MachineStatus `json:"status,omitempty"`
}

// MachineStatus is what drover knows about a machine.
type MachineStatus struct {
	State     string     `json:"state,omitempty"`
	Reachable bool       `json:"reachable"`
	LastSeen  *time.Time `json:"lastSeen,omitempty"`
	// Run is the workflow run in progress (empty when idle).
	Run string `json:"run,omitempty"`
	// LastRun is the most recent finished run and how it ended.
	LastRun       string `json:"lastRun,omitempty"`
	LastRunResult string `json:"lastRunResult,omitempty"`
	Message       string `json:"message,omitempty"`
	AgentID       string `json:"agentID,omitempty"`
	// AgentToken is the id of the agent's current credential.
	AgentToken   string     `json:"agentToken,omitempty"`
	RegisteredAt *time.Time `json:"registeredAt,omitempty"`
	Inventory    *Inventory `json:"inventory,omitempty"`
	// Hardware sums up Inventory; lists in the summary view carry it
	// without the inventory.
	Hardware     *Hardware  `json:"hardware,omitempty"`
	StateChanged *time.Time `json:"stateChanged,omitempty"`
	// AppliedWorkflow and AppliedConfig record the last workflow that
	// configured the machine (commission, deploy or upgrade) and a digest
	// of what it rendered; ConfigDrift is true while what that workflow
	// would render now differs (a profile, param, task or pack changed).
	AppliedWorkflow string `json:"appliedWorkflow,omitempty"`
	AppliedConfig   string `json:"appliedConfig,omitempty"`
	ConfigDrift     bool   `json:"configDrift,omitempty"`
	// ConfigDriftReason says why ConfigDrift is set: what differs, or why
	// the configuration cannot be rendered now.
	ConfigDriftReason string `json:"configDriftReason,omitempty"`
	// LastVerify is what the last verify run found since the configuration
	// was last applied (a commission, deploy, upgrade or decommission
	// clears it).
	LastVerify *VerifyResult `json:"lastVerify,omitempty"`
}

// Verify verdicts (Run.Result of verify runs, VerifyResult.Result).
const (
	VerifyInSync  = "in-sync"
	VerifyDrifted = "drifted"
	// VerifyError: the verify reached no verdict (a task timed out, could
	// not be rendered, or was cancelled).
	VerifyError = "error"
)

// VerifyResult is the outcome of one verify run on a machine.
type VerifyResult struct {
	Run    string    `json:"run"`
	Time   time.Time `json:"time"`
	Result string    `json:"result"`
	// Job is the job that failed (drifted, error); its log says why.
	Job     string `json:"job,omitempty"`
	Message string `json:"message,omitempty"`
}

// Hardware is the short form of an inventory that tables show.
type Hardware struct {
	CPUs        int    `json:"cpus"`
	MemoryBytes uint64 `json:"memoryBytes"`
	Disks       int    `json:"disks"`
	DiskBytes   uint64 `json:"diskBytes"`
	PrimaryMAC  string `json:"primaryMAC,omitempty"`
}

// List views: ViewFull (the default) has every field; ViewSummary leaves
// out machines' status.inventory (status.hardware stays), for tables of
// thousands of machines; ViewTable answers a Table of the rows `drover get`
// prints (machines only).
const (
	ViewFull    = "full"
	ViewSummary = "summary"
	ViewTable   = "table"
)

// Profile is a named bundle of params. The profile named "global" applies
// to every machine, after its own profiles.
type Profile struct {
	Meta
	// Selector attaches the profile to every machine whose labels match
	// (label selector syntax: role=storage,env!=prod), after the
	// machine's own profiles.
	Selector string                     `json:"selector,omitempty"`
	Params   map[string]json.RawMessage `json:"params,omitempty"`
}

// GlobalProfile is looked up last for every machine.
const GlobalProfile = "global"

// Param declares a param: its type, an optional JSON schema its values must
// meet, a default, and whether values are secret.
type Param struct {
	Meta
	// Type is one of string, integer, number, boolean, object, array, any.
	Type    string          `json:"type,omitempty"`
	Schema  json.RawMessage `json:"schema,omitempty"`
	Default json.RawMessage `json:"default,omitempty"`
	// Secure values are encrypted at rest and shown masked.
	Secure bool `json:"secure,omitempty"`
}

// Template is a named Go text/template usable from task scripts with
// {{ template "name" . }}.
type Template struct {
	Meta
	Content string `json:"content"`
}

// Task is one step of a workflow: a script rendered per machine and run by
// the machine's agent.
type Task struct {
	Meta
	// Script is a Go text/template rendered with .Machine and .Param.
	Script string `json:"script"`
	// Shell runs the script; default "/bin/sh".
	Shell string `json:"shell,omitempty"`
	// Timeout is a Go duration ("5m"); default 30m.
	Timeout string `json:"timeout,omitempty"`
	// Retries is how many more times a failed attempt is tried.
	Retries int `json:"retries,omitempty"`
}

// Workflow is an ordered list of tasks.
type Workflow struct {
	Meta
	Tasks []string `json:"tasks"`
}

// Run states (shared by runs and jobs where they apply).
const (
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunFailed    = "failed"
	RunCancelled = "cancelled"
)

// Run is one execution of a workflow on one machine, created by a lifecycle
// action. Its tasks are copied at start so a workflow edit does not change a
// run under way.
type Run struct {
	Meta
	Machine  string   `json:"machine"`
	Workflow string   `json:"workflow"`
	Action   string   `json:"action"`
	Tasks    []string `json:"tasks"`
	// Step is the index of the task now running (== len(Tasks) when done).
	Step int `json:"step"`
	// FromState and ToState: the machine's state before the action and the
	// state it reaches on success.
	FromState string `json:"fromState,omitempty"`
	ToState   string `json:"toState,omitempty"`
	// Attempt is the attempt number of the current step's job (from 1).
	Attempt int    `json:"attempt"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// FailedJob is the job whose failure ended the run.
	FailedJob string `json:"failedJob,omitempty"`
	// Result is a verify run's verdict: in-sync, drifted or error.
	Result string `json:"result,omitempty"`
	// Digests holds, per finished step, the digest of what its job ran;
	// a commission, deploy or upgrade that succeeds records their
	// combination as the machine's status.appliedConfig.
	Digests    []string   `json:"digests,omitempty"`
	User       string     `json:"user,omitempty"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}

// Job states.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Job is one attempt at one task on one machine. Its output is kept in the
// job log (GET /api/v1/jobs/{name}/log).
type Job struct {
	Meta
	Machine  string `json:"machine"`
	Run      string `json:"run"`
	Task     string `json:"task"`
	Step     int    `json:"step"`
	Attempt  int    `json:"attempt"`
	State    string `json:"state"`
	ExitCode *int   `json:"exitCode,omitempty"`
	Message  string `json:"message,omitempty"`
	// Timeout is the task timeout resolved at creation.
	Timeout string `json:"timeout,omitempty"`
	// Digest is the sha256 of what was handed to the agent: the rendered
	// script, shell, timeout and the task's retries (for config drift).
	Digest string `json:"digest,omitempty"`
	// Deliveries counts hand-outs to the agent; more than one means the
	// agent lost a response and the job was handed out again unstarted.
	Deliveries int        `json:"deliveries,omitempty"`
	QueuedAt   time.Time  `json:"queuedAt"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	LogBytes   int64      `json:"logBytes,omitempty"`
}

// Finished reports whether the job reached a final state.
func (j *Job) Finished() bool {
	return j.State == JobSucceeded || j.State == JobFailed || j.State == JobCancelled
}

// User roles.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleViewer   = "viewer"
	// RoleAgent is held only by machine tokens.
	RoleAgent = "agent"
)

// User is a person or program that logs in. Password is write-only: it is
// hashed on write and never returned.
type User struct {
	Meta
	Role         string `json:"role"`
	Password     string `json:"password,omitempty"`
	PasswordHash string `json:"passwordHash,omitempty"`
	Disabled     bool   `json:"disabled,omitempty"`
}

// JoinToken lets agents register machines until it expires. The secret is
// shown once at creation; only its hash is stored.
type JoinToken struct {
	Meta
	ExpiresAt  time.Time `json:"expiresAt"`
	SecretHash string    `json:"secretHash,omitempty"`
	CreatedBy  string    `json:"createdBy,omitempty"`
	// Labels given to machines registered with this token.
	MachineLabels map[string]string `json:"machineLabels,omitempty"`
}

// Token is an API credential: a login session of a user or a machine's agent
// credential. Name is the token id; the secret is never stored.
type Token struct {
	Meta
	User       string     `json:"user,omitempty"`
	Machine    string     `json:"machine,omitempty"`
	Role       string     `json:"role"`
	SecretHash string     `json:"secretHash,omitempty"`
	ExpiresAt  *time.Time `json:"expiresAt,omitempty"`
	CreatedAt  time.Time  `json:"createdAt"`
}

// Audit records one write through the API.
type Audit struct {
	Meta
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
}
