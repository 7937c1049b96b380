// Package adhoc holds a site's ad-hoc commands (drover run, drover cp) in
// memory, hands them to agents through the long poll each agent already
// holds, and gathers their results.
//
// Commands are not jobs: nothing is written to the store, so a command on
// 10,000 machines costs no fsync, and a site that restarts forgets the
// commands it was running (their requests end with the connection). A
// waiting poll is woken as soon as a command for its machine arrives: the
// poll's context is cancelled with the cause ErrWoken, which ends the
// engine's wait for a job without a goroutine or a request of its own.
package adhoc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
)

// ErrWoken is the cause of a poll context cancelled because work arrived.
var ErrWoken = errors.New("adhoc: commands arrived for this machine")

// ErrUnknownCommand is returned for results of commands the hub does not
// hold (finished, cancelled, or from before a restart).
var ErrUnknownCommand = errors.New("no such command on this site (it ended, was cancelled, or the site restarted)")

// ErrNotYours is returned when an agent names another machine's command.
var ErrNotYours = errors.New("command belongs to another machine")

// Config tunes the hub's patience.
type Config struct {
	// Pickup is how long a command waits for its agent to take it.
	Pickup time.Duration
	// Grace is how long past a command's timeout the hub waits for its
	// result before reporting the agent gone.
	Grace time.Duration
	// Gone is how long an agent whose poll was cut may take to poll again
	// before its running commands are reported lost.
	Gone time.Duration
	// Recent: an agent whose last poll was answered this recently counts
	// as connected (it is between two polls).
	Recent time.Duration
}

func (c *Config) defaults() {
	if c.Pickup <= 0 {
		c.Pickup = 10 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = 15 * time.Second
	}
	if c.Gone <= 0 {
		c.Gone = 5 * time.Second
	}
	if c.Recent <= 0 {
		c.Recent = 10 * time.Second
	}
}

// Spec is what a batch runs on each of its nodes.
type Spec struct {
	Argv    []string
	Timeout time.Duration
	// Copy makes it a copy; Archive is the archive's file on this server.
	Copy    *api.AgentCopy
	Archive string
}

// Hub is a site's table of ad-hoc commands and connected agents.
type Hub struct {
	cfg      Config
	prefix   string
	mu       sync.Mutex
	seq      uint64
	machines map[string]*machine
	cmds     map[string]*command
}

// machine is what the hub knows of one machine's agent.
type machine struct {
	name  string
	polls []*Poll
	// accepts: the agent's last poll said it runs commands.
	accepts bool
	// lastAnswered is when a poll of it was last answered; cut says the
	// last poll ended because the agent went away.
	lastAnswered time.Time
	cut          bool
	queue        []*command
	cancels      []string
	running      map[string]*command
	goneTimer    *time.Timer
}

type command struct {
	id      string
	machine *machine
	batch   *Batch
	sent    time.Time
	queued  time.Time
	timer   *time.Timer
	started bool
}

// New makes an empty hub.
func New(cfg Config) *Hub {
	cfg.defaults()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &Hub{cfg: cfg, prefix: hex.EncodeToString(b), machines: map[string]*machine{}, cmds: map[string]*command{}}
}

func (h *Hub) machineLocked(name string) *machine {
	m := h.machines[name]
	if m == nil {
		m = &machine{name: name, running: map[string]*command{}}
		h.machines[name] = m
	}
	return m
}

// Delivery is what a poll hands to its agent.
type Delivery struct {
	Commands []api.AgentCommand
	Cancel   []string
}

// Empty reports whether there is nothing to hand out.
func (d Delivery) Empty() bool { return len(d.Commands) == 0 && len(d.Cancel) == 0 }

// Poll is one long poll of an agent, from Enter to Leave.
type Poll struct {
	h      *Hub
	m      *machine
	cancel context.CancelCauseFunc
}

// Enter registers a poll by machine's agent. What is waiting for it comes
// back at once in the Delivery; otherwise ctx (derived from parent) is
// cancelled with cause ErrWoken when something arrives. Leave must follow.
func (h *Hub) Enter(parent context.Context, machine string, accepts bool) (context.Context, *Poll, Delivery) {
	ctx, cancel := context.WithCancelCause(parent)
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.machineLocked(machine)
	p := &Poll{h: h, m: m, cancel: cancel}
	m.polls = append(m.polls, p)
	m.accepts = accepts
	m.cut = false
	if m.goneTimer != nil {
		m.goneTimer.Stop()
		m.goneTimer = nil
	}
	return ctx, p, h.takeLocked(m)
}

// Woken reports whether ctx (from Enter) ended because work arrived.
func Woken(ctx context.Context) bool { return errors.Is(context.Cause(ctx), ErrWoken) }

// Leave ends the poll and returns what arrived for the agent meanwhile.
// gone says the agent went away before its answer: then nothing is handed
// out, and if it does not poll again within Config.Gone its running
// commands are reported lost.
func (p *Poll) Leave(gone bool) Delivery {
	h, m := p.h, p.m
	defer p.cancel(nil)
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(m.polls, p); i >= 0 {
		m.polls = slices.Delete(m.polls, i, i+1)
	}
	if gone {
		if len(m.polls) == 0 {
			m.cut = true
			switch {
			case len(m.running) > 0 || len(m.queue) > 0:
				if m.goneTimer == nil {
					m.goneTimer = time.AfterFunc(h.cfg.Gone, func() { h.lost(m) })
				}
			case len(m.cancels) == 0:
				// Nothing to remember: an unknown machine is just as
				// unreachable, and deleted machines leave no entry.
				delete(h.machines, m.name)
			}
		}
		return Delivery{}
	}
	m.lastAnswered = time.Now()
	return h.takeLocked(m)
}

// takeLocked hands out m's queued commands and cancels.
func (h *Hub) takeLocked(m *machine) Delivery {
	var d Delivery
	now := time.Now()
	for _, c := range m.queue {
		c.timer.Stop()
		c.started = true
		c.sent = now
		m.running[c.id] = c
		spec := c.batch.spec
		d.Commands = append(d.Commands, api.AgentCommand{ID: c.id, Argv: spec.Argv, Timeout: spec.Timeout.String(), Copy: spec.Copy})
		c.timer = time.AfterFunc(spec.Timeout+h.cfg.Grace, func() {
			h.expire(c, true, api.CommandResult{Error: api.ErrAgentGone, Detail: fmt.Sprintf("no result from the agent %s after the command's timeout", h.cfg.Grace)})
		})
	}
	clear(m.queue)
	m.queue = m.queue[:0]
	d.Cancel = m.cancels
	m.cancels = nil
	return d
}

// wakeLocked wakes m's waiting polls.
func wakeLocked(m *machine) {
	for _, p := range m.polls {
		p.cancel(ErrWoken)
	}
}

// lost fails the commands of a machine whose agent went away and did not
// come back.
func (h *Hub) lost(m *machine) {
	h.mu.Lock()
	if !m.cut || len(m.polls) > 0 {
		h.mu.Unlock()
		return
	}
	m.goneTimer = nil
	var cmds []*command
	for _, c := range m.running {
		cmds = append(cmds, c)
	}
	queued := slices.Clone(m.queue)
	h.mu.Unlock()
	for _, c := range cmds {
		h.finish(c, api.CommandResult{Error: api.ErrAgentGone, Detail: "the agent's connection closed while the command ran"})
	}
	for _, c := range queued {
		h.finish(c, api.CommandResult{Error: api.ErrUnreachable, Detail: "the agent's connection closed before it took the command"})
	}
}

// connectedLocked reports whether m's agent can take a command now.
func (h *Hub) connectedLocked(m *machine) bool {
	if m == nil {
		return false
	}
	return len(m.polls) > 0 || (!m.cut && !m.lastAnswered.IsZero() && time.Since(m.lastAnswered) < h.cfg.Recent)
}

// Connected reports whether machine's agent polls now (or did a moment ago).
func (h *Hub) Connected(machine string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connectedLocked(h.machines[machine])
}

// Batch is one run or copy on a set of nodes.
type Batch struct {
	h       *Hub
	spec    Spec
	nodes   []string
	next    int
	fanout  int
	active  int
	left    int
	done    bool
	results chan api.RunLine
	cmds    map[string]*command
}

// Start runs spec on nodes, at most fanout at once (0: all). Results come
// on Results, one per node, in the order nodes finish; nodes whose agent
// is not connected are reported unreachable at once.
func (h *Hub) Start(nodes []string, spec Spec, fanout int) *Batch {
	if fanout <= 0 || fanout > len(nodes) {
		fanout = len(nodes)
	}
	b := &Batch{h: h, spec: spec, nodes: nodes, fanout: fanout, left: len(nodes),
		results: make(chan api.RunLine, len(nodes)), cmds: map[string]*command{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(nodes) == 0 {
		b.done = true
		close(b.results)
		return b
	}
	h.launchLocked(b)
	return b
}

// Results gives each node's result as it comes; it is closed after the
// last one, or when the batch is cancelled.
func (b *Batch) Results() <-chan api.RunLine { return b.results }

// launchLocked starts nodes until the fanout is reached.
func (h *Hub) launchLocked(b *Batch) {
	for !b.done && b.active < b.fanout && b.next < len(b.nodes) {
		name := b.nodes[b.next]
		b.next++
		m := h.machines[name]
		switch {
		case !h.connectedLocked(m):
			b.resultLocked(api.RunLine{Type: api.RunLineResult, Node: name, Error: api.ErrUnreachable, Detail: "its agent is not connected"})
			continue
		case !m.accepts:
			b.resultLocked(api.RunLine{Type: api.RunLineResult, Node: name, Error: api.ErrFailed, Detail: "its agent does not run commands (upgrade drover on the machine)"})
			continue
		}
		h.seq++
		c := &command{id: h.prefix + "-" + strconv.FormatUint(h.seq, 10), machine: m, batch: b, queued: time.Now()}
		c.timer = time.AfterFunc(h.cfg.Pickup, func() {
			h.expire(c, false, api.CommandResult{Error: api.ErrUnreachable, Detail: fmt.Sprintf("its agent did not take the command within %s", h.cfg.Pickup)})
		})
		h.cmds[c.id] = c
		b.cmds[c.id] = c
		b.active++
		m.queue = append(m.queue, c)
		wakeLocked(m)
	}
}

func (b *Batch) resultLocked(l api.RunLine) {
	if b.done {
		return
	}
	b.results <- l
	b.left--
	if b.left == 0 {
		b.done = true
		close(b.results)
	}
}

// finish records a command's result, unless it already has one.
func (h *Hub) finish(c *command, res api.CommandResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.finishLocked(c, res)
}

// expire is a timer's finish: it applies only if the command is still in
// the state the timer was set for (a timer that fired while the command
// was being handed out must not fail it).
func (h *Hub) expire(c *command, started bool, res api.CommandResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.started == started {
		h.finishLocked(c, res)
	}
}

func (h *Hub) finishLocked(c *command, res api.CommandResult) bool {
	if h.cmds[c.id] != c {
		return false
	}
	delete(h.cmds, c.id)
	c.timer.Stop()
	m, b := c.machine, c.batch
	delete(b.cmds, c.id)
	delete(m.running, c.id)
	if i := slices.Index(m.queue, c); i >= 0 {
		m.queue = slices.Delete(m.queue, i, i+1)
	}
	l := api.RunLine{Type: api.RunLineResult, Node: m.name, Exit: res.Exit, Stdout: res.Stdout, Stderr: res.Stderr,
		StdoutDropped: res.StdoutDropped, StderrDropped: res.StderrDropped, Error: res.Error, Detail: res.Detail}
	if c.started {
		l.Millis = time.Since(c.sent).Milliseconds()
	}
	b.active--
	b.resultLocked(l)
	h.launchLocked(b)
	return true
}

// Complete records the result an agent reports for one of its commands.
func (h *Hub) Complete(machine, id string, res api.CommandResult) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.cmds[id]
	if c == nil {
		return ErrUnknownCommand
	}
	if c.machine.name != machine {
		return ErrNotYours
	}
	h.finishLocked(c, res)
	return nil
}

// Archive returns the archive file of a copy command handed to machine.
func (h *Hub) Archive(machine, id string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.cmds[id]
	if c == nil {
		return "", ErrUnknownCommand
	}
	if c.machine.name != machine {
		return "", ErrNotYours
	}
	if c.batch.spec.Archive == "" {
		return "", fmt.Errorf("command %s is not a copy", id)
	}
	return c.batch.spec.Archive, nil
}

// Cancel stops the batch: nodes not started are dropped, commands not yet
// handed out are withdrawn, and agents running one are told to kill it.
// Results closes.
func (b *Batch) Cancel() {
	h := b.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	for id, c := range b.cmds {
		delete(h.cmds, id)
		c.timer.Stop()
		m := c.machine
		if i := slices.Index(m.queue, c); i >= 0 {
			m.queue = slices.Delete(m.queue, i, i+1)
		}
		if _, ok := m.running[id]; ok {
			delete(m.running, id)
			m.cancels = append(m.cancels, id)
			wakeLocked(m)
		}
	}
	clear(b.cmds)
	close(b.results)
}

// Stats counts what the hub holds, for metrics and tests.
type Stats struct {
	Queued, Running, Connected int
}

// Stats reports the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s Stats
	for _, m := range h.machines {
		s.Queued += len(m.queue)
		s.Running += len(m.running)
		if h.connectedLocked(m) {
			s.Connected++
		}
	}
	return s
}
