// Package agent is the node side of drover: it registers its machine with a
// hardware inventory, heartbeats, pulls jobs over HTTPS, runs them and
// streams their logs back.
package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/inventory"
)

// Config configures an agent.
type Config struct {
	Endpoint  string
	CAPEM     []byte
	JoinToken string
	StateDir  string
	// Name is the machine name; default the host name.
	Name string
	// Executor runs jobs; default runs the script with its shell.
	Executor Executor
	// Inventory collects the hardware inventory; default inventory.Collect.
	Inventory func(ctx context.Context) (api.Inventory, error)
	// HTTP, when set, is shared (many simulated agents in one process).
	HTTP   *http.Client
	Logger *slog.Logger
	// PollWait is how long a job poll is held by the server.
	PollWait time.Duration
	// Commands runs ad-hoc commands (drover run); default executes them.
	Commands CommandRunner
}

// state is what the agent keeps in its state dir.
type state struct {
	AgentID  string `json:"agentID"`
	Machine  string `json:"machine,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Token    string `json:"token,omitempty"`
}

// Agent is one machine's agent.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	client *api.Client
	st     state

	mu        sync.Mutex
	heartbeat time.Duration
	// running is the job this agent runs and has not yet reported;
	// jobDone is closed when the last job started ends.
	running string
	jobDone chan struct{}
	// commands are the ad-hoc commands running, by ID (command.go);
	// while collecting, results of those that end go to ready, for the
	// next poll to carry.
	commands   map[string]context.CancelCauseFunc
	collecting bool
	ready      []api.CommandReport
}

// New checks the configuration and loads the agent's state.
func New(cfg Config) (*Agent, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("--endpoint is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("--state-dir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Executor == nil {
		cfg.Executor = ShellExecutor{}
	}
	if cfg.Commands == nil {
		cfg.Commands = ExecCommand
	}
	if cfg.Inventory == nil {
		cfg.Inventory = inventory.Collect
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = 30 * time.Second
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "pending"), 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	c, err := api.NewClient(cfg.Endpoint, cfg.CAPEM, "")
	if err != nil {
		return nil, err
	}
	if cfg.HTTP != nil {
		c.HTTP = cfg.HTTP
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, client: c, heartbeat: 10 * time.Second}
	if err := a.loadState(); err != nil {
		return nil, err
	}
	if len(cfg.CAPEM) > 0 {
		// Tasks that call the API (drover agent boot-env) trust it too.
		if err := writeFileAtomic(filepath.Join(cfg.StateDir, caFile), cfg.CAPEM, 0o644); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	if cfg.Name == "" {
		if a.st.Machine != "" {
			cfg.Name = a.st.Machine
		} else if h, err := os.Hostname(); err == nil {
			cfg.Name = strings.ToLower(strings.SplitN(h, ".", 2)[0])
		}
		a.cfg.Name = cfg.Name
	}
	a.log = a.log.With("machine", a.cfg.Name)
	return a, nil
}

func (a *Agent) statePath() string { return filepath.Join(a.cfg.StateDir, "agent.json") }

func (a *Agent) loadState() error {
	b, err := os.ReadFile(a.statePath())
	if errors.Is(err, os.ErrNotExist) {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		a.st = state{AgentID: hex.EncodeToString(id)}
		return a.saveState()
	}
	if err != nil {
		return fmt.Errorf("agent state: %w", err)
	}
	if err := json.Unmarshal(b, &a.st); err != nil || a.st.AgentID == "" {
		return fmt.Errorf("agent state %s is corrupt (%v); remove it to register again", a.statePath(), err)
	}
	if a.st.Endpoint != "" && a.st.Endpoint != a.cfg.Endpoint {
		// A credential is only good for the endpoint that issued it.
		a.st.Token, a.st.Machine = "", ""
	}
	return nil
}

func (a *Agent) saveState() error {
	b, _ := json.MarshalIndent(a.st, "", "  ")
	return writeFileAtomic(a.statePath(), b, 0o600)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Machine is the machine name the agent is registered as.
func (a *Agent) Machine() string { return a.st.Machine }

// errFatal marks errors retrying cannot fix.
type errFatal struct{ error }

func (e errFatal) Unwrap() error { return e.error }

// Run registers if needed, then heartbeats and runs jobs until ctx ends.
func (a *Agent) Run(parent context.Context) error {
	if err := a.ensureRegistered(parent); err != nil {
		return err
	}
	// A fatal error seen by the heartbeat (the credential is gone and there
	// is no join token) ends the whole agent at once, not at the next poll.
	ctx, fail := context.WithCancelCause(parent)
	defer fail(nil)
	var wg sync.WaitGroup
	// Stop the heartbeat before waiting for it: on a fatal error Run must
	// return, not wait for a loop nobody stopped.
	defer func() {
		fail(nil)
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.heartbeatLoop(ctx, fail)
	}()
	fatal := func() error {
		var fe errFatal
		if cause := context.Cause(ctx); errors.As(cause, &fe) {
			return cause
		}
		return nil
	}
	if err := a.recover(ctx); err != nil {
		if f := fatal(); f != nil {
			return f
		}
		return err
	}
	// Jobs and commands run in their own goroutines while the poll goes
	// on: a command must not wait for a long job, and the poll is how
	// commands arrive. Run returns once they have all stopped.
	var work sync.WaitGroup
	defer func() {
		// On a fatal error too: stop them, then wait.
		fail(nil)
		work.Wait()
	}()
	backoff := newBackoff()
	commands := true
	for ctx.Err() == nil {
		var resp api.NextJobResponse
		req := api.NextJobRequest{Wait: a.cfg.PollWait.String(), Running: a.runningJob(), Commands: commands, Results: a.takeResults()}
		err := a.do(ctx, http.MethodPost, "/api/v1/agent/jobs/next", req, &resp)
		if err != nil {
			// The results may not have arrived: they go on their own.
			a.reportAll(ctx, &work, req.Results)
			if ctx.Err() != nil {
				break
			}
			var fe errFatal
			if errors.As(err, &fe) {
				return err
			}
			if commands && api.IsStatus(err, http.StatusBadRequest) && strings.Contains(err.Error(), `unknown field "commands"`) {
				a.log.Warn("the server is older and does not run ad-hoc commands (drover run, drover cp); polling for jobs only")
				commands = false
				continue
			}
			a.log.Warn("polling for jobs failed; retrying", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		for _, id := range resp.CancelCommands {
			a.cancelCommand(id)
		}
		if resp.Job != nil {
			a.startJob(ctx, &work, resp.Job)
		}
		a.startCommands(ctx, &work, resp.Commands)
	}
	return fatal()
}

// startJob runs a job in the background. Jobs run one after the other: the
// server hands out the next job of a machine only once the previous one
// ended, but one it timed out may still be running here, so a new job
// waits for it. Until a job's result is delivered, polls name it as
// running (else the server would hand it out again).
func (a *Agent) startJob(ctx context.Context, work *sync.WaitGroup, job *api.JobSpec) {
	a.mu.Lock()
	a.running = job.Name
	prev := a.jobDone
	done := make(chan struct{})
	a.jobDone = done
	a.mu.Unlock()
	work.Add(1)
	go func() {
		defer work.Done()
		defer close(done)
		if prev != nil {
			<-prev
		}
		a.runJob(ctx, job)
		a.mu.Lock()
		if a.running == job.Name {
			a.running = ""
		}
		a.mu.Unlock()
	}()
}

func (a *Agent) runningJob() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running
}

// do calls the API with the agent's credential; on 401 it registers again
// (when it has a join token) and retries once.
func (a *Agent) do(ctx context.Context, method, path string, in, out any) error {
	err := a.client.WithToken(a.token()).Do(ctx, method, path, in, out)
	if api.IsStatus(err, http.StatusUnauthorized) {
		if a.cfg.JoinToken == "" {
			return errFatal{fmt.Errorf("the server no longer accepts this agent's credential and there is no join token to register again: %w", err)}
		}
		a.log.Warn("credential refused; registering again", "err", err)
		a.mu.Lock()
		a.st.Token = ""
		a.mu.Unlock()
		if err := a.ensureRegistered(ctx); err != nil {
			return err
		}
		return a.client.WithToken(a.token()).Do(ctx, method, path, in, out)
	}
	return err
}

func (a *Agent) token() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Token
}

func (a *Agent) ensureRegistered(ctx context.Context) error {
	if a.token() != "" {
		return nil
	}
	if a.cfg.JoinToken == "" {
		return errFatal{errors.New("this agent is not registered: pass --join-token (drover join-token create)")}
	}
	inv, err := a.cfg.Inventory(ctx)
	if err != nil {
		a.log.Warn("hardware inventory incomplete", "err", err)
	}
	req := api.RegisterRequest{Name: a.cfg.Name, AgentID: a.st.AgentID, Inventory: inv}
	backoff := newBackoff()
	for {
		var resp api.RegisterResponse
		err := a.client.WithToken(a.cfg.JoinToken).Do(ctx, http.MethodPost, "/api/v1/agent/register", req, &resp)
		if err == nil {
			a.mu.Lock()
			a.st.Token = resp.Token
			a.st.Machine = resp.Machine
			a.st.Endpoint = a.cfg.Endpoint
			if d, err := time.ParseDuration(resp.HeartbeatInterval); err == nil && d > 0 {
				a.heartbeat = d
			}
			err := a.saveState()
			a.mu.Unlock()
			if err != nil {
				return err
			}
			a.log.Info("registered")
			return nil
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return errFatal{fmt.Errorf("registration refused: %w", err)}
		}
		// An untrusted certificate does not fix itself by retrying.
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return errFatal{fmt.Errorf("cannot register: %w", err)}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Warn("registration failed; retrying", "err", err)
		backoff.wait(ctx)
	}
}

func (a *Agent) heartbeatLoop(ctx context.Context, fail context.CancelCauseFunc) {
	// The first heartbeat goes at once: it tells the agent the interval the
	// server wants (a restarted agent does not know it).
	for first := true; ; first = false {
		a.mu.Lock()
		d := jitter(a.heartbeat)
		a.mu.Unlock()
		if first {
			d = 0
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		var resp api.HeartbeatResponse
		if err := a.do(ctx, http.MethodPost, "/api/v1/agent/heartbeat", struct{}{}, &resp); err != nil {
			var fe errFatal
			if errors.As(err, &fe) {
				fail(err)
				return
			}
			if ctx.Err() == nil {
				a.log.Debug("heartbeat failed", "err", err)
			}
			continue
		}
		if d, err := time.ParseDuration(resp.HeartbeatInterval); err == nil && d > 0 {
			a.mu.Lock()
			a.heartbeat = d
			a.mu.Unlock()
		}
	}
}

// jitter spreads heartbeats of many agents over ±10%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Second
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(d)/5+1))
	return d - d/10 + time.Duration(n.Int64())
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 200 * time.Millisecond} }

func (b *backoff) reset() { b.d = 200 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(jitter(b.d))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.d *= 2
	if b.d > 5*time.Second {
		b.d = 5 * time.Second
	}
}

// pendingResult is a job result not yet acknowledged by the server.
type pendingResult struct {
	Job    string        `json:"job"`
	Result api.JobResult `json:"result"`
}

func (a *Agent) pendingPath(job string) string {
	return filepath.Join(a.cfg.StateDir, "pending", job+".json")
}

func (a *Agent) currentPath() string { return filepath.Join(a.cfg.StateDir, "current-job") }

// recover settles what a previous run of the agent left: results it could
// not deliver, and a job it was running when it died (its outcome is
// unknown, so it is reported failed and the task's retries decide).
func (a *Agent) recover(ctx context.Context) error {
	if b, err := os.ReadFile(a.currentPath()); err == nil {
		job := strings.TrimSpace(string(b))
		if job != "" {
			if _, err := os.Stat(a.pendingPath(job)); errors.Is(err, os.ErrNotExist) {
				a.log.Warn("the agent stopped while a job ran; reporting it failed", "job", job)
				_ = a.savePending(pendingResult{Job: job, Result: api.JobResult{ExitCode: -1, Message: "the agent stopped while the job ran; its outcome is unknown"}})
			}
		}
		_ = os.Remove(a.currentPath())
	}
	entries, err := os.ReadDir(filepath.Join(a.cfg.StateDir, "pending"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, "pending", e.Name()))
		if err != nil {
			continue
		}
		var p pendingResult
		if json.Unmarshal(b, &p) != nil || p.Job == "" {
			_ = os.Remove(filepath.Join(a.cfg.StateDir, "pending", e.Name()))
			continue
		}
		if err := a.deliver(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) savePending(p pendingResult) error {
	b, _ := json.Marshal(p)
	return writeFileAtomic(a.pendingPath(p.Job), b, 0o600)
}

// deliver reports a result until the server has it. A result the server
// refuses (the job was cancelled or timed out meanwhile) is dropped.
func (a *Agent) deliver(ctx context.Context, p pendingResult) error {
	backoff := newBackoff()
	for {
		err := a.do(ctx, http.MethodPost, "/api/v1/agent/jobs/"+p.Job+"/complete", p.Result, nil)
		if err == nil || api.IsStatus(err, http.StatusConflict) || api.IsStatus(err, http.StatusNotFound) || api.IsStatus(err, http.StatusForbidden) {
			if err != nil {
				a.log.Warn("server refused job result; dropping it", "job", p.Job, "err", err)
			}
			_ = os.Remove(a.pendingPath(p.Job))
			return nil
		}
		var fe errFatal
		if errors.As(err, &fe) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Warn("reporting job result failed; retrying", "job", p.Job, "err", err)
		backoff.wait(ctx)
	}
}

// runJob runs one job, streams its output and reports its result.
func (a *Agent) runJob(ctx context.Context, job *api.JobSpec) {
	log := a.log.With("job", job.Name, "task", job.Task)
	log.Info("job started")
	_ = writeFileAtomic(a.currentPath(), []byte(job.Name), 0o600)
	timeout, err := time.ParseDuration(job.Timeout)
	if err != nil || timeout <= 0 {
		timeout = 30 * time.Minute
	}
	stream := newLogStream(ctx, a, job.Name)
	jobCtx, cancel := context.WithTimeout(ctx, timeout)
	workDir := filepath.Join(a.cfg.StateDir, "jobs", job.Name)
	env := a.env("DROVER_JOB="+job.Name, "DROVER_TASK="+job.Task, "DROVER_RUN="+job.Run)
	exit, runErr := a.cfg.Executor.Execute(jobCtx, ExecRequest{Job: job, WorkDir: workDir, Env: env, Output: stream})
	timedOut := errors.Is(jobCtx.Err(), context.DeadlineExceeded)
	cancel()
	if ctx.Err() != nil && !timedOut {
		// The agent is stopping: leave current-job so the next start
		// reports the job as interrupted.
		stream.close()
		return
	}
	res := api.JobResult{ExitCode: exit}
	switch {
	case timedOut:
		res.ExitCode = -1
		res.Message = fmt.Sprintf("timed out after %s", timeout)
		fmt.Fprintf(stream, "\ndrover-agent: %s; the task was killed\n", res.Message)
	case runErr != nil:
		if res.ExitCode == 0 {
			res.ExitCode = -1
		}
		res.Message = runErr.Error()
		fmt.Fprintf(stream, "\ndrover-agent: %s\n", runErr)
	}
	// The result is on disk before the last of the output is sent, so an
	// agent stopped while the server is away still reports what happened.
	p := pendingResult{Job: job.Name, Result: res}
	if err := a.savePending(p); err != nil {
		log.Error("saving job result", "err", err)
	}
	stream.close()
	_ = os.Remove(a.currentPath())
	_ = os.RemoveAll(workDir)
	if err := a.deliver(ctx, p); err != nil {
		log.Error("reporting job result", "err", err)
	}
	log.Info("job finished", "exit", res.ExitCode)
}

// env is what the agent adds to the environment of what it runs.
func (a *Agent) env(extra ...string) []string {
	env := append(extra,
		"DROVER_MACHINE="+a.st.Machine,
		"DROVER_ENDPOINT="+a.cfg.Endpoint,
		"DROVER_STATE_DIR="+a.cfg.StateDir,
	)
	if len(a.cfg.CAPEM) > 0 {
		env = append(env, "DROVER_CA_CERT="+filepath.Join(a.cfg.StateDir, caFile))
	}
	return env
}

// logStream batches job output and posts it in order, retrying while the
// server is away, so a slow link does not slow the task.
type logStream struct {
	a    *Agent
	job  string
	mu   sync.Mutex
	buf  bytes.Buffer
	kick chan struct{}
	done chan struct{}
	stop chan struct{}
	// ctx bounds the last flush: it retries until the agent stops.
	ctx context.Context
	// dropped counts bytes discarded because the server was away too long.
	dropped int
}

const logBufferMax = 4 << 20

func newLogStream(ctx context.Context, a *Agent, job string) *logStream {
	s := &logStream{a: a, job: job, ctx: ctx, kick: make(chan struct{}, 1), done: make(chan struct{}), stop: make(chan struct{})}
	go s.loop()
	return s
}

func (s *logStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.buf.Len()+len(p) > logBufferMax {
		s.dropped += len(p)
	} else {
		s.buf.Write(p)
	}
	full := s.buf.Len() >= 64<<10
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (s *logStream) loop() {
	defer close(s.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			s.flush(s.ctx, true)
			return
		case <-t.C:
		case <-s.kick:
		}
		s.flush(s.ctx, false)
	}
}

// flush posts what is buffered; final keeps trying, with backoff, until the
// output is sent or the agent stops (the server closes a job's log once
// the job is reported, so the output must go first).
func (s *logStream) flush(ctx context.Context, final bool) {
	backoff := newBackoff()
	for {
		s.mu.Lock()
		if s.dropped > 0 {
			fmt.Fprintf(&s.buf, "\ndrover-agent: %d bytes of output were dropped while the server was unreachable\n", s.dropped)
			s.dropped = 0
		}
		data := append([]byte(nil), s.buf.Bytes()...)
		s.mu.Unlock()
		if len(data) == 0 {
			return
		}
		err := s.a.do(ctx, http.MethodPost, "/api/v1/agent/jobs/"+s.job+"/log", data, nil)
		if err == nil || api.IsStatus(err, http.StatusConflict) || api.IsStatus(err, http.StatusNotFound) {
			s.mu.Lock()
			s.buf.Next(len(data))
			s.mu.Unlock()
			if err == nil {
				continue
			}
			return
		}
		var fe errFatal
		if !final || errors.As(err, &fe) || ctx.Err() != nil {
			return
		}
		backoff.wait(ctx)
	}
}

func (s *logStream) close() {
	close(s.stop)
	<-s.done
}
