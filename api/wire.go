package api

import (
	"encoding/json"
	"time"
)

// Error is the body of every failed API call.
type Error struct {
	Message string `json:"error"`
	// Code is a stable machine-readable reason: bad_request, unauthorized,
	// forbidden, not_found, conflict, exists, compacted, internal...
	Code   string `json:"code"`
	Status int    `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// List is the body of a list call: the items and the store revision they
// reflect (watch from it to follow changes without missing any).
type List struct {
	Kind     string            `json:"kind"`
	Revision int64             `json:"revision"`
	Items    []json.RawMessage `json:"items"`
}

// LoginRequest asks for a session token.
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	// TTL is a Go duration; default 24h, at most 30 days.
	TTL string `json:"ttl,omitempty"`
}

// LoginResponse carries the token, shown once.
type LoginResponse struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// ApplyRequest holds the documents of one all-or-nothing apply.
type ApplyRequest struct {
	Documents []json.RawMessage `json:"documents"`
}

// ApplyResult says what happened to each document.
type ApplyResult struct {
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Action   string `json:"action"` // created, updated, unchanged
	Revision int64  `json:"revision"`
	// Warnings are what the object names that is not there yet (a version
	// set's pack versions the manager does not hold).
	Warnings []string `json:"warnings,omitempty"`
}

// ApplyResponse is the answer to an apply.
type ApplyResponse struct {
	Revision int64         `json:"revision"`
	Results  []ApplyResult `json:"results"`
}

// ActionRequest starts a lifecycle action on the machines a node range
// selects.
type ActionRequest struct {
	Nodes    string `json:"nodes"`
	Workflow string `json:"workflow,omitempty"`
}

// ActionResult is the outcome for one machine.
type ActionResult struct {
	// Site is the site of the machine when a manager forwarded the action
	// to it (empty: the endpoint's own machine).
	Site    string `json:"site,omitempty"`
	Machine string `json:"machine"`
	Run     string `json:"run,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ActionResponse lists per-machine outcomes; an action is started on every
// machine it can be, and refused with a reason on the others.
type ActionResponse struct {
	Action  string         `json:"action"`
	Results []ActionResult `json:"results"`
}

// JoinTokenRequest creates a join token.
type JoinTokenRequest struct {
	TTL           string            `json:"ttl,omitempty"`
	MachineLabels map[string]string `json:"machineLabels,omitempty"`
}

// JoinTokenResponse carries the secret, shown once.
type JoinTokenResponse struct {
	Name      string    `json:"name"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// RegisterRequest is sent by an agent with a join token.
type RegisterRequest struct {
	Name      string    `json:"name"`
	AgentID   string    `json:"agentID"`
	Inventory Inventory `json:"inventory"`
}

// RegisterResponse gives the agent its own credential.
type RegisterResponse struct {
	Machine string `json:"machine"`
	Token   string `json:"token"`
	// HeartbeatInterval is how often the agent should heartbeat.
	HeartbeatInterval string `json:"heartbeatInterval"`
}

// HeartbeatResponse tells the agent the interval to keep.
type HeartbeatResponse struct {
	HeartbeatInterval string `json:"heartbeatInterval"`
}

// NextJobRequest is an agent's long poll for work. Running names the job the
// agent is executing right now, if any.
type NextJobRequest struct {
	Running string `json:"running,omitempty"`
	// Wait is how long the server may hold the request (Go duration, max 60s).
	Wait string `json:"wait,omitempty"`
	// Commands says the agent runs ad-hoc commands (drover run, drover
	// cp): the answer may carry them, and it comes as soon as one arrives.
	Commands bool `json:"commands,omitempty"`
	// Results are results of commands that ended before this poll: a
	// quick command's result rides on the next poll instead of a request
	// of its own.
	Results []CommandReport `json:"results,omitempty"`
}

// CommandReport is a command's result with its ID.
type CommandReport struct {
	ID string `json:"id"`
	CommandResult
}

// JobSpec is what an agent runs.
type JobSpec struct {
	Name    string `json:"name"`
	Task    string `json:"task"`
	Run     string `json:"run"`
	Shell   string `json:"shell"`
	Script  string `json:"script"`
	Timeout string `json:"timeout"`
}

// NextJobResponse has a job, or none when the wait ran out. To an agent
// that runs commands it may also bring commands to start and commands to
// cancel (by ID), with or without a job.
type NextJobResponse struct {
	Job            *JobSpec       `json:"job,omitempty"`
	Commands       []AgentCommand `json:"commands,omitempty"`
	CancelCommands []string       `json:"cancelCommands,omitempty"`
}

// JobResult is what an agent reports when a job ends.
type JobResult struct {
	ExitCode int    `json:"exitCode"`
	Message  string `json:"message,omitempty"`
}
