// Package simsite runs a drover server process and many simulated
// machines for the benchmarks: each machine is the real agent code, in
// this process, with its own HTTPS connection, whose jobs and commands
// are Go functions.
package simsite

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/agent"
	"github.com/drover-project/drover/internal/inventory"
)

// Site is a drover server process with an admin client.
type Site struct {
	Dir, Endpoint, CAFile string
	CA                    []byte
	Client                *api.Client
	server                *exec.Cmd
	stopAgents            context.CancelFunc
	agents                sync.WaitGroup
}

const password = "bench-admin-password"

// Start runs `bin server` with a data dir under dir and extra flags, and
// logs in as admin.
func Start(bin, dir string, extra ...string) (*Site, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"server", "--data-dir", filepath.Join(dir, "server"), "--listen", addr, "--log-level", "warn"}, extra...)
	srv := exec.Command(bin, args...)
	srv.Env = append(os.Environ(), "DROVER_ADMIN_PASSWORD="+password)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		return nil, err
	}
	s := &Site{Dir: dir, Endpoint: "https://" + addr, CAFile: filepath.Join(dir, "server", "tls", "ca.crt"), server: srv}
	for i := 0; ; i++ {
		if s.CA, err = os.ReadFile(s.CAFile); err == nil {
			if s.Client, err = api.NewClient(s.Endpoint, s.CA, ""); err == nil {
				var l *api.LoginResponse
				if l, err = s.Client.Login(context.Background(), "admin", password, ""); err == nil {
					s.Client.Token = l.Token
					return s, nil
				}
			}
		}
		if i > 300 {
			s.Stop()
			return nil, fmt.Errorf("server did not start (see %s/server.log): %v", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Pid is the server's process id.
func (s *Site) Pid() int { return s.server.Process.Pid }

// Stop stops the agents, then the server.
func (s *Site) Stop() {
	if s.stopAgents != nil {
		s.stopAgents()
		s.agents.Wait()
	}
	_ = s.server.Process.Signal(syscall.SIGTERM)
	_ = s.server.Wait()
}

// StartAgents registers and runs n simulated machines named prefix00000...
func (s *Site) StartAgents(n int, prefix string, jobs agent.Executor, commands agent.CommandRunner) error {
	jt, err := s.Client.CreateJoinToken(context.Background(), "2h", nil)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stopAgents = stop
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s%05d", prefix, i)
		seed := i
		a, err := agent.New(agent.Config{
			Endpoint: s.Endpoint, CAPEM: s.CA, JoinToken: jt.Token,
			StateDir: filepath.Join(s.Dir, "agents", name), Name: name,
			Executor: jobs, Commands: commands,
			Inventory: func(context.Context) (api.Inventory, error) { return inventory.Simulated(name, seed), nil },
			Logger:    quiet,
		})
		if err != nil {
			return err
		}
		s.agents.Add(1)
		go func() {
			defer s.agents.Done()
			if err := a.Run(ctx); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "agent %s stopped: %v\n", name, err)
			}
		}()
	}
	return nil
}

// WaitMachines waits until the site lists n machines.
func (s *Site) WaitMachines(n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		l, err := s.Client.ListView(context.Background(), "machines", "", api.ViewSummary)
		if err == nil && len(l.Items) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d machines after %s, want %d", len(l.Items), limit, n)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// StatusKB reads a field of the server's /proc status (VmRSS, VmHWM...).
func (s *Site) StatusKB(field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Pid()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// Metrics reads some lines of the server's /metrics.
func (s *Site) Metrics(names ...string) string {
	body, err := s.Client.Stream(context.Background(), "/metrics")
	if err != nil {
		return err.Error()
	}
	defer body.Close()
	b, _ := io.ReadAll(body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, n := range names {
			if strings.HasPrefix(line, n+" ") {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, ", ")
}
