package agent

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-project/drover/api"
)

// CommandRunner runs an ad-hoc command (drover run) and returns its exit
// code; an error means it could not run (or was killed), with the reason.
type CommandRunner func(ctx context.Context, req CommandRequest) (int, error)

// CommandRequest is one ad-hoc command to run.
type CommandRequest struct {
	Argv           []string
	Env            []string
	Stdout, Stderr io.Writer
}

// errCancelled is why a command the server cancelled ends.
var errCancelled = errors.New("cancelled by the server")

// quickResults is how long the poll loop waits for commands it just
// started before it polls again: results of those that ended by then ride
// on that poll, which saves a request per command (a command on 10,000
// machines is 10,000 requests fewer). Commands, cancels and jobs for this
// machine wait that long at most.
const quickResults = 100 * time.Millisecond

// maxRiding is the most output a result may have to ride on a poll.
const maxRiding = 256 << 10

// startCommands starts commands and waits up to quickResults for them.
func (a *Agent) startCommands(ctx context.Context, work *sync.WaitGroup, cmds []api.AgentCommand) {
	if len(cmds) == 0 {
		return
	}
	a.mu.Lock()
	a.collecting = true
	a.mu.Unlock()
	var ended sync.WaitGroup
	for _, c := range cmds {
		a.startCommand(ctx, work, &ended, c)
	}
	done := make(chan struct{})
	go func() {
		ended.Wait()
		close(done)
	}()
	t := time.NewTimer(quickResults)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// takeResults ends collecting and returns the results collected.
func (a *Agent) takeResults() []api.CommandReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.ready
	a.ready, a.collecting = nil, false
	return r
}

// reportAll posts results a poll could not carry, each on its own.
func (a *Agent) reportAll(ctx context.Context, work *sync.WaitGroup, results []api.CommandReport) {
	for _, r := range results {
		work.Add(1)
		go func() {
			defer work.Done()
			a.reportCommand(ctx, r.ID, r.CommandResult)
		}()
	}
}

// startCommand runs an ad-hoc command in the background, beside any job,
// and reports its result: with the next poll while the poll loop collects
// them, else in a request of its own.
func (a *Agent) startCommand(ctx context.Context, work, ended *sync.WaitGroup, c api.AgentCommand) {
	timeout, err := time.ParseDuration(c.Timeout)
	if err != nil || timeout <= 0 {
		timeout = 10 * time.Minute
	}
	cctx, cancel := context.WithCancelCause(ctx)
	a.mu.Lock()
	if a.commands == nil {
		a.commands = map[string]context.CancelCauseFunc{}
	}
	if _, dup := a.commands[c.ID]; dup {
		a.mu.Unlock()
		cancel(nil)
		return
	}
	a.commands[c.ID] = cancel
	a.mu.Unlock()
	work.Add(1)
	ended.Add(1)
	go func() {
		defer work.Done()
		defer ended.Done()
		defer func() {
			a.mu.Lock()
			delete(a.commands, c.ID)
			a.mu.Unlock()
			cancel(nil)
		}()
		tctx, stop := context.WithTimeout(cctx, timeout)
		var res api.CommandResult
		if c.Copy != nil {
			res = a.runCopy(tctx, c.ID, c.Copy)
		} else {
			res = a.runCommand(tctx, c)
		}
		timedOut := errors.Is(tctx.Err(), context.DeadlineExceeded)
		stop()
		switch {
		case errors.Is(context.Cause(cctx), errCancelled):
			a.log.Info("command cancelled", "command", c.ID)
			return
		case ctx.Err() != nil:
			return // the agent is stopping
		case timedOut:
			res.Exit = nil
			res.Error = api.ErrTimeout
			res.Detail = fmt.Sprintf("killed after %s", timeout)
		}
		a.mu.Lock()
		if a.collecting && len(res.Stdout)+len(res.Stderr) <= maxRiding {
			a.ready = append(a.ready, api.CommandReport{ID: c.ID, CommandResult: res})
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		a.reportCommand(ctx, c.ID, res)
	}()
}

func (a *Agent) cancelCommand(id string) {
	a.mu.Lock()
	cancel := a.commands[id]
	a.mu.Unlock()
	if cancel != nil {
		cancel(errCancelled)
	}
}

// reportCommand posts a command's result, retrying while the server is
// away for as long as it still waits for the result.
func (a *Agent) reportCommand(ctx context.Context, id string, res api.CommandResult) {
	deadline := time.Now().Add(15 * time.Second)
	backoff := newBackoff()
	for {
		err := a.do(ctx, http.MethodPost, "/api/v1/agent/commands/"+url.PathEscape(id)+"/result", res, nil)
		if err == nil {
			return
		}
		var ae *api.Error
		if errors.As(err, &ae) || ctx.Err() != nil || time.Now().After(deadline) {
			a.log.Warn("reporting a command's result failed; dropping it", "command", id, "err", err)
			return
		}
		backoff.wait(ctx)
	}
}

func (a *Agent) runCommand(ctx context.Context, c api.AgentCommand) api.CommandResult {
	stdout, stderr := &cappedBuffer{}, &cappedBuffer{}
	exit, err := a.cfg.Commands(ctx, CommandRequest{Argv: c.Argv, Env: a.env("DROVER_COMMAND=" + c.ID), Stdout: stdout, Stderr: stderr})
	res := api.CommandResult{Stdout: stdout.String(), Stderr: stderr.String(), StdoutDropped: stdout.dropped, StderrDropped: stderr.dropped}
	if err != nil {
		res.Error, res.Detail = api.ErrFailed, err.Error()
		if len(c.Argv) == 1 && strings.ContainsAny(c.Argv[0], " |;&<>$") && errors.Is(err, exec.ErrNotFound) {
			res.Detail += fmt.Sprintf(" (the command is one word %q: to run a shell command line write: sh -c '...')", c.Argv[0])
		}
		return res
	}
	res.Exit = &exit
	return res
}

// ExecCommand runs argv as a process (no shell), from /, with stdin from
// /dev/null, in its own process group: a timeout or a cancel ends the
// whole group. A process killed by a signal exits 128+signal, as in a
// shell.
func ExecCommand(ctx context.Context, req CommandRequest) (int, error) {
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), req.Env...)
	cmd.Stdout, cmd.Stderr = req.Stdout, req.Stderr
	// A command that leaves a background process holding its output ends
	// when its own process does, give or take this.
	cmd.WaitDelay = 2 * time.Second
	if err := startGroup(cmd); err != nil {
		return -1, err
	}
	err := waitGroup(ctx, cmd, 2*time.Second)
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		return cmd.ProcessState.ExitCode(), nil
	}
	return -1, err
}

// cappedBuffer keeps the first api.MaxCommandOutput bytes written and
// counts the rest.
type cappedBuffer struct {
	buf     []byte
	dropped int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := api.MaxCommandOutput - len(b.buf)
	if room >= len(p) {
		b.buf = append(b.buf, p...)
	} else {
		if room > 0 {
			b.buf = append(b.buf, p[:room]...)
		}
		b.dropped += int64(len(p) - max(room, 0))
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string { return string(b.buf) }

// runCopy fetches a copy's archive into the state dir, then writes it at
// its destination.
func (a *Agent) runCopy(ctx context.Context, id string, cp *api.AgentCopy) api.CommandResult {
	fail := func(err error) api.CommandResult {
		return api.CommandResult{Error: api.ErrFailed, Detail: err.Error()}
	}
	dir := filepath.Join(a.cfg.StateDir, "cp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	archive := filepath.Join(dir, id+".tar")
	defer os.Remove(archive)
	if err := a.fetchArchive(ctx, id, archive, cp.Size); err != nil {
		return fail(fmt.Errorf("fetching the archive: %w", err))
	}
	if err := extractCopy(ctx, archive, cp); err != nil {
		return fail(err)
	}
	zero := 0
	return api.CommandResult{Exit: &zero}
}

func (a *Agent) fetchArchive(ctx context.Context, id, file string, size int64) error {
	body, err := a.client.WithToken(a.token()).Stream(ctx, "/api/v1/agent/commands/"+url.PathEscape(id)+"/archive")
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(body, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("got %d bytes, expected %d", n, size)
	}
	return err
}

// extractCopy writes the archive's entries under the copy's target: Dest
// itself, or Dest/NAME when Dest is a directory (or ends in /). Each file
// is written to a temporary name in its directory and renamed into place,
// so nothing ever sees half a file; directories get their modes last, so a
// read-only one can still be filled.
func extractCopy(ctx context.Context, archive string, cp *api.AgentCopy) error {
	target := filepath.Clean(cp.Dest)
	if fi, err := os.Stat(cp.Dest); strings.HasSuffix(cp.Dest, "/") || (err == nil && fi.IsDir()) {
		target = filepath.Join(cp.Dest, cp.Name)
	}
	if parent := filepath.Dir(target); parent != target {
		if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
			return fmt.Errorf("directory %s does not exist", parent)
		}
	}
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	type dirMode struct {
		path  string
		mode  os.FileMode
		mtime time.Time
	}
	var dirs []dirMode
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		rel, ok := strings.CutPrefix(name, cp.Name)
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) || strings.Contains("/"+rel+"/", "/../") {
			return fmt.Errorf("archive entry %q is outside %q", h.Name, cp.Name)
		}
		p := target + rel
		mode := h.FileInfo().Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
		switch h.Typeflag {
		case tar.TypeDir:
			fi, err := os.Lstat(p)
			switch {
			case errors.Is(err, os.ErrNotExist):
				// Another writer may make it at the same moment.
				if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
					return err
				}
			case err != nil:
				return err
			case !fi.IsDir():
				return fmt.Errorf("%s exists and is not a directory", p)
			}
			dirs = append(dirs, dirMode{p, mode, h.ModTime})
		case tar.TypeReg:
			if err := writeAtomic(p, tr, mode, h.ModTime); err != nil {
				return err
			}
		case tar.TypeSymlink:
			tmp := tempName(p)
			if err := os.Symlink(h.Linkname, tmp); err != nil {
				return err
			}
			if err := os.Rename(tmp, p); err != nil {
				os.Remove(tmp)
				return err
			}
		default:
			return fmt.Errorf("archive entry %q: cannot copy this kind of file", h.Name)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
		_ = os.Chtimes(d.path, d.mtime, d.mtime)
	}
	return nil
}

func tempName(p string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return filepath.Join(filepath.Dir(p), ".drover-cp-"+hex.EncodeToString(b)+"-"+filepath.Base(p))
}

// writeAtomic writes r to p through a temporary file in p's directory.
func writeAtomic(p string, r io.Reader, mode os.FileMode, mtime time.Time) error {
	tmp := tempName(p)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_ = os.Chtimes(tmp, mtime, mtime)
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
