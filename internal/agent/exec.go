package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/drover-project/drover/api"
)

// ExecRequest is one job to execute.
type ExecRequest struct {
	Job     *api.JobSpec
	WorkDir string
	Env     []string
	Output  io.Writer
}

// Executor runs a job and returns its exit code.
type Executor interface {
	Execute(ctx context.Context, req ExecRequest) (int, error)
}

// ShellExecutor writes the script to the job's work dir and runs it with
// the task's shell, in its own process group so a timeout kills all of it.
type ShellExecutor struct{}

// Execute runs the script.
func (ShellExecutor) Execute(ctx context.Context, req ExecRequest) (int, error) {
	if err := os.MkdirAll(req.WorkDir, 0o700); err != nil {
		return -1, err
	}
	script := filepath.Join(req.WorkDir, "script")
	if err := os.WriteFile(script, []byte(req.Job.Script), 0o700); err != nil {
		return -1, err
	}
	cmd := exec.Command(req.Job.Shell, script)
	cmd.Dir = req.WorkDir
	cmd.Env = append(os.Environ(), req.Env...)
	cmd.Stdout = req.Output
	cmd.Stderr = req.Output
	if err := startGroup(cmd); err != nil {
		return -1, fmt.Errorf("start %s: %w", req.Job.Shell, err)
	}
	err := waitGroup(ctx, cmd, 5*time.Second)
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() >= 0 {
			return ee.ExitCode(), nil
		}
		return -1, fmt.Errorf("killed: %v", ee)
	}
	return -1, err
}

// startGroup starts cmd in its own process group, so that ending it ends
// whatever it started too.
func startGroup(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd.Start()
}

// waitGroup waits for cmd; when ctx ends first it sends the process group
// SIGTERM, then SIGKILL after grace.
func waitGroup(ctx context.Context, cmd *exec.Cmd, grace time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return <-done
	}
}

// FuncExecutor runs jobs with a Go function (simulated machines).
type FuncExecutor func(ctx context.Context, req ExecRequest) (int, error)

// Execute calls f.
func (f FuncExecutor) Execute(ctx context.Context, req ExecRequest) (int, error) { return f(ctx, req) }
