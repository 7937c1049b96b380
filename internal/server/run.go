package server

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/adhoc"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/store"
)

const (
	// defaultCommandTimeout bounds a command or copy on each node when the
	// request gives no timeout.
	defaultCommandTimeout = 10 * time.Minute
	maxCommandTimeout     = 24 * time.Hour
	// maxArgvBytes bounds a command line (Linux's own limit is larger, but
	// a command line is not a way to ship data: use drover cp).
	maxArgvBytes = 128 << 10
	// DefaultMaxCopyBytes is the default limit of a drover cp archive.
	DefaultMaxCopyBytes = 64 << 20
	maxArchiveEntries   = 100000
)

func parseCommandTimeout(s string) (time.Duration, error) {
	if s == "" {
		return defaultCommandTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > maxCommandTimeout {
		return 0, badRequest("timeout %q: give a duration such as 30s or 10m (at most 24h)", s)
	}
	return d, nil
}

func requireNodes(nodes string) error {
	if nodes == "" {
		return badRequest("nodes is required (a node range such as n[1-5] or @role=compute)")
	}
	return nil
}

func checkFanout(n int) error {
	if n < 0 {
		return badRequest("fanout %d: give a positive number of nodes at once, or 0 for all", n)
	}
	return nil
}

func checkArgv(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return badRequest("argv is required: the command and its arguments, such as [\"uptime\"]")
	}
	size := 0
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return badRequest("argv[%d] holds a NUL byte, which no command line can carry", i)
		}
		size += len(a) + 1
	}
	if size > maxArgvBytes {
		return badRequest("the command line has %d bytes, over the limit of %d: send data with drover cp", size, maxArgvBytes)
	}
	return nil
}

// handleRun runs a command on the machines of a node range and streams
// their results (RunLine NDJSON).
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request, p *principal) {
	if !auth.CanAct(p.Role) {
		writeError(w, forbidden(p, "run commands on machines"))
		return
	}
	var req api.RunRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	timeout, err := parseCommandTimeout(req.Timeout)
	if err == nil {
		err = requireNodes(req.Nodes)
	}
	if err == nil {
		err = checkArgv(req.Argv)
	}
	if err == nil {
		err = checkFanout(req.Fanout)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	parts, count, err := s.planRun(r.Context(), req.Nodes)
	if err != nil {
		writeError(w, err)
		return
	}
	s.auditCommand(r, p, "run", req.Nodes, count, strings.Join(req.Argv, " "))
	remote := func(ctx context.Context, c *api.Client, nodes string, fn func(api.RunLine) error) error {
		return c.Run(ctx, api.RunRequest{Nodes: nodes, Argv: req.Argv, Timeout: req.Timeout, Fanout: req.Fanout}, fn)
	}
	s.streamRun(w, r, parts, adhoc.Spec{Argv: req.Argv, Timeout: timeout}, req.Fanout, remote)
}

// auditCommand records who ran what where: one store write per request,
// not per node.
func (s *Server) auditCommand(r *http.Request, p *principal, action, nodes string, count int, detail string) {
	if len(detail) > 1024 {
		detail = detail[:1024] + "..."
	}
	now := time.Now().UTC()
	on := fmt.Sprintf("%d machines", count)
	if count == 0 {
		on = "a nested manager's machines"
	}
	op := s.auditOp(p, action, "machines/"+nodes, on+": "+detail, now, 0)
	if _, _, err := s.st.Txn(r.Context(), []store.Op{op}); err != nil {
		s.log.Warn("audit of a command failed", "action", action, "err", err)
	}
}

// handleCopy pushes an archive to the machines of a node range: the
// request's parts are spooled to a file under the data dir, checked, and
// each agent fetches it.
func (s *Server) handleCopy(w http.ResponseWriter, r *http.Request, p *principal) {
	if !auth.CanAct(p.Role) {
		writeError(w, forbidden(p, "copy files to machines"))
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, badRequest("send multipart/form-data with a part \"request\" (JSON) and a part \"archive\" (tar): %v", err))
		return
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "request" {
		writeError(w, badRequest("the first part must be \"request\", the JSON copy request"))
		return
	}
	var req api.CopyRequest
	dec := json.NewDecoder(io.LimitReader(part, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, badRequest("bad copy request: %s", strings.TrimPrefix(err.Error(), "json: ")))
		return
	}
	timeout, err := parseCommandTimeout(req.Timeout)
	if err == nil {
		err = checkFanout(req.Fanout)
	}
	if err == nil {
		err = checkDest(req.Dest)
	}
	if err == nil {
		err = requireNodes(req.Nodes)
	}
	if err == nil && req.Size <= 0 {
		err = badRequest("size must be the archive's length in bytes")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if limit := s.maxCopyBytes(); req.Size > limit {
		writeError(w, apiError(http.StatusRequestEntityTooLarge, "too_large",
			"the copy is %s, over this site's limit of %s (drover server --max-copy-size)", FormatSize(req.Size), FormatSize(limit)))
		return
	}
	parts, count, err := s.planRun(r.Context(), req.Nodes)
	if err != nil {
		writeError(w, err)
		return
	}
	part, err = mr.NextPart()
	if err != nil || part.FormName() != "archive" {
		writeError(w, badRequest("the second part must be \"archive\", the tar stream"))
		return
	}
	file, err := s.spoolArchive(part, req.Size)
	if err != nil {
		writeError(w, err)
		return
	}
	defer os.Remove(file)
	if _, err := mr.NextPart(); !errors.Is(err, io.EOF) {
		writeError(w, badRequest("nothing may follow the archive part"))
		return
	}
	top, err := checkArchive(file)
	if err != nil {
		writeError(w, badRequest("archive: %v", err))
		return
	}
	s.auditCommand(r, p, "cp", req.Nodes, count, fmt.Sprintf("%s (%s) to %s", top, FormatSize(req.Size), req.Dest))
	// Each site gets the archive from this endpoint's spool file.
	remote := func(ctx context.Context, c *api.Client, nodes string, fn func(api.RunLine) error) error {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		return c.Copy(ctx, api.CopyRequest{Nodes: nodes, Dest: req.Dest, Size: req.Size, Timeout: req.Timeout, Fanout: req.Fanout}, f, fn)
	}
	s.streamRun(w, r, parts, adhoc.Spec{Timeout: timeout, Archive: file,
		Copy: &api.AgentCopy{Dest: req.Dest, Name: top, Size: req.Size}}, req.Fanout, remote)
}

func (s *Server) maxCopyBytes() int64 {
	if s.cfg.MaxCopyBytes > 0 {
		return s.cfg.MaxCopyBytes
	}
	return DefaultMaxCopyBytes
}

// FormatSize writes a byte count as people read it (3.2 MiB).
func FormatSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func checkDest(dest string) error {
	if !path.IsAbs(dest) {
		return badRequest("dest %q: give an absolute path on the nodes, such as /etc/app/app.conf or /opt/", dest)
	}
	if strings.IndexByte(dest, 0) >= 0 {
		return badRequest("dest holds a NUL byte")
	}
	if trimmed := strings.TrimSuffix(dest, "/"); trimmed != "" && path.Clean(trimmed) != trimmed {
		return badRequest("dest %q: write it without . or .. or doubled slashes (%s)", dest, path.Clean(dest))
	}
	return nil
}

// spoolArchive writes exactly size bytes of r to a file under the data
// dir.
func (s *Server) spoolArchive(r io.Reader, size int64) (string, error) {
	dir := s.spoolDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "cp-*.tar")
	if err != nil {
		return "", err
	}
	n, err := io.Copy(f, io.LimitReader(r, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = badRequest("the archive part has %d bytes, not the %d the request announced", n, size)
	}
	if err != nil {
		os.Remove(f.Name())
		var ae *api.Error
		if errors.As(err, &ae) {
			return "", err
		}
		return "", badRequest("reading the archive: %v", err)
	}
	return f.Name(), nil
}

// checkArchive reads an archive's headers: entries are regular files,
// directories and symbolic links, all under one top-level name, with
// relative paths that do not climb out or pass through a link of the
// archive. It returns the top-level name.
func checkArchive(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	top := ""
	topIsDir := false
	links := map[string]bool{}
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("not a valid tar stream: %v", err)
		}
		if n >= maxArchiveEntries {
			return "", fmt.Errorf("more than %d entries", maxArchiveEntries)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") || strings.IndexByte(name, 0) >= 0 {
			return "", fmt.Errorf("entry %q: paths must be relative, clean, and stay inside the copy", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
		default:
			return "", fmt.Errorf("entry %q: only regular files, directories and symbolic links can be copied", h.Name)
		}
		first, _, _ := strings.Cut(name, "/")
		if n == 0 {
			if first != name {
				return "", fmt.Errorf("entry %q: the first entry must be the copied file or directory itself", h.Name)
			}
			top, topIsDir = name, h.Typeflag == tar.TypeDir
		} else if !topIsDir {
			return "", fmt.Errorf("entry %q follows the file %q: a copy of one file has one entry", h.Name, top)
		} else if first != top || name == top {
			return "", fmt.Errorf("entry %q is not inside %q: a copy has one top-level name", h.Name, top)
		}
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if links[dir] {
				return "", fmt.Errorf("entry %q is inside %q, a symbolic link of the archive", h.Name, dir)
			}
		}
		if h.Typeflag == tar.TypeSymlink {
			links[name] = true
		}
	}
	if top == "" {
		return "", errors.New("it has no entry")
	}
	return top, nil
}

// handleCommandResult takes an agent's result for one of its commands.
func (s *Server) handleCommandResult(w http.ResponseWriter, r *http.Request, p *principal) {
	var res api.CommandResult
	if err := decodeBody(r, &res); err != nil {
		writeError(w, err)
		return
	}
	if err := s.cmds.Complete(p.Machine, r.PathValue("id"), capResult(res)); err != nil {
		writeError(w, commandError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// completeCommands takes the results an agent's poll brings. Those of
// commands the hub no longer holds (cancelled, or already answered by an
// earlier try) are dropped.
func (s *Server) completeCommands(machine string, results []api.CommandReport) {
	for _, r := range results {
		_ = s.cmds.Complete(machine, r.ID, capResult(r.CommandResult))
	}
}

func capResult(res api.CommandResult) api.CommandResult {
	res.Stdout, res.StdoutDropped = capOutput(res.Stdout, res.StdoutDropped)
	res.Stderr, res.StderrDropped = capOutput(res.Stderr, res.StderrDropped)
	if len(res.Detail) > 4096 {
		res.Detail = res.Detail[:4096]
	}
	if len(res.Error) > 256 {
		res.Error = res.Error[:256]
	}
	return res
}

func capOutput(out string, dropped int64) (string, int64) {
	if len(out) > api.MaxCommandOutput {
		dropped += int64(len(out) - api.MaxCommandOutput)
		out = out[:api.MaxCommandOutput]
	}
	return out, dropped
}

func commandError(err error) error {
	switch {
	case errors.Is(err, adhoc.ErrUnknownCommand):
		return apiError(http.StatusNotFound, "not_found", "%v", err)
	case errors.Is(err, adhoc.ErrNotYours):
		return apiError(http.StatusForbidden, "forbidden", "%v", err)
	}
	return err
}

// handleCommandArchive serves a copy's archive to the agent that runs it.
func (s *Server) handleCommandArchive(w http.ResponseWriter, r *http.Request, p *principal) {
	file, err := s.cmds.Archive(p.Machine, r.PathValue("id"))
	if err != nil {
		writeError(w, commandError(err))
		return
	}
	f, err := os.Open(file)
	if err != nil {
		// The copy ended meanwhile and took its spool file with it.
		writeError(w, apiError(http.StatusNotFound, "not_found", "the archive of command %s is gone (the copy ended)", r.PathValue("id")))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// spoolDir holds the archives of copies while they run.
func (s *Server) spoolDir() string { return filepath.Join(s.cfg.DataDir, "cp-spool") }

// initCommands makes the command hub and removes the archives a previous
// run of the server left behind (its copies ended with it).
func (s *Server) initCommands() {
	s.cmds = adhoc.New(adhoc.Config{})
	_ = os.RemoveAll(s.spoolDir())
}
