// Package demo runs a one-site drover on this machine: a real server and
// real agents over HTTPS on loopback, with embedded content, commissioning
// and deploying every machine.
package demo

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/agent"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/server"
)

//go:embed content.yaml
var content []byte

// Content returns the demo's content documents.
func Content() ([]json.RawMessage, error) { return model.YAMLDocuments(content) }

// Options tune the demo.
type Options struct {
	Machines int
	Dir      string
	// Keep leaves everything running until ctx ends.
	Keep bool
	// Wait is called before shutting down when Keep is set.
	Log *slog.Logger
}

// Run builds the demo and reports to out.
func Run(ctx context.Context, opts Options, out io.Writer) error {
	if opts.Machines <= 0 {
		opts.Machines = 5
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "drover-demo-")
		if err != nil {
			return err
		}
		dir = d
		if !opts.Keep {
			defer os.RemoveAll(dir)
		}
	}
	password, err := auth.RandomPassword()
	if err != nil {
		return err
	}
	step := func(format string, args ...any) {
		fmt.Fprintf(out, "==> "+format+"\n", args...)
	}
	step("starting a site endpoint in %s", dir)
	srv, err := server.New(server.Config{
		DataDir:       filepath.Join(dir, "server"),
		Listen:        "127.0.0.1:0",
		AdminPassword: password,
		Logger:        opts.Log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.Listen(); err != nil {
		return err
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(srvCtx) }()
	defer func() {
		stopSrv()
		<-srvDone
	}()
	endpoint := "https://" + srv.Addr()
	c, err := api.NewClient(endpoint, srv.CACertPEM(), "")
	if err != nil {
		return err
	}
	login, err := c.Login(ctx, "admin", password, "")
	if err != nil {
		return err
	}
	c.Token = login.Token

	docs, err := Content()
	if err != nil {
		return err
	}
	if _, err := c.Apply(ctx, docs); err != nil {
		return fmt.Errorf("applying demo content: %w", err)
	}
	step("applied %d objects of demo content (params, profiles, tasks, workflows)", len(docs))

	jt, err := c.CreateJoinToken(ctx, "1h", map[string]string{"role": "compute"})
	if err != nil {
		return err
	}
	step("starting %d agents (real agents over HTTPS, each with its own state dir)", opts.Machines)
	agentCtx, stopAgents := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stopAgents()
		wg.Wait()
	}()
	for i := 1; i <= opts.Machines; i++ {
		a, err := agent.New(agent.Config{
			Endpoint:  endpoint,
			CAPEM:     srv.CACertPEM(),
			JoinToken: jt.Token,
			StateDir:  filepath.Join(dir, "agents", fmt.Sprintf("n%d", i)),
			Name:      fmt.Sprintf("n%d", i),
			Logger:    opts.Log,
		})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(agentCtx); err != nil {
				opts.Log.Error("agent stopped", "err", err)
			}
		}()
	}
	if err := waitFor(ctx, 30*time.Second, func() (bool, error) {
		l, err := c.List(ctx, "machines", "")
		return err == nil && len(l.Items) == opts.Machines, err
	}); err != nil {
		return fmt.Errorf("waiting for agents to register: %w", err)
	}
	nodes := fmt.Sprintf("n[1-%d]", opts.Machines)
	if opts.Machines == 1 {
		nodes = "n1"
	}
	step("%d machines discovered; commissioning %s", opts.Machines, nodes)
	if err := actionAndWait(ctx, c, api.ActionCommission, nodes, out); err != nil {
		return err
	}
	step("deploying %s", nodes)
	if err := actionAndWait(ctx, c, api.ActionDeploy, nodes, out); err != nil {
		return err
	}
	l, err := c.List(ctx, "machines", "")
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	if err := PrintMachines(out, l.Items); err != nil {
		return err
	}
	jobs, err := c.List(ctx, "jobs", "machine=n1")
	if err == nil && len(jobs.Items) > 0 {
		var j api.Job
		_ = json.Unmarshal(jobs.Items[len(jobs.Items)-1], &j)
		for _, raw := range jobs.Items {
			var jj api.Job
			if json.Unmarshal(raw, &jj) == nil && jj.Task == "configure" {
				j = jj
			}
		}
		fmt.Fprintf(out, "\nlog of job %s (task %s on n1):\n", j.Name, j.Task)
		_, _ = c.JobLog(ctx, j.Name, 0, false, prefixWriter{out, "    "})
	}
	fmt.Fprintln(out)
	if opts.Keep {
		ca := filepath.Join(dir, "server", "tls", "ca.crt")
		fmt.Fprintf(out, "The demo keeps running. In another shell:\n\n")
		fmt.Fprintf(out, "    export DROVER_ENDPOINT=%s DROVER_CA_CERT=%s DROVER_TOKEN=%s\n", endpoint, ca, login.Token)
		fmt.Fprintf(out, "    drover get machines\n    drover get jobs\n    drover get machine n1 --effective\n    drover verify 'n[1-2]' --wait\n    drover machines watch\n\nPress Ctrl-C to stop.\n")
		<-ctx.Done()
		return nil
	}
	fmt.Fprintf(out, "demo done: %d machines commissioned and deployed. Run `drover demo --keep` to explore it with the CLI.\n", opts.Machines)
	return nil
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if _, err := fmt.Fprintf(p.w, "%s%s", p.prefix, line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func waitFor(ctx context.Context, limit time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if last != nil {
		return last
	}
	return fmt.Errorf("not done after %s", limit)
}

// actionAndWait starts an action and waits for all its runs, printing a
// line per finished machine.
func actionAndWait(ctx context.Context, c *api.Client, action, nodes string, out io.Writer) error {
	before, err := c.List(ctx, "runs", "machine=none.none")
	if err != nil {
		return err
	}
	resp, err := c.Action(ctx, action, nodes, "")
	if err != nil {
		return err
	}
	pending := map[string]string{}
	for _, r := range resp.Results {
		if r.Error != "" {
			return fmt.Errorf("%s: %s", r.Machine, r.Error)
		}
		pending[r.Run] = r.Machine
	}
	start := time.Now()
	failed := 0
	from := before.Revision
	for len(pending) > 0 {
		from, err = c.Watch(ctx, from, []string{api.KindRun}, func(ev api.Event) error {
			m, ok := pending[ev.Name]
			if !ok {
				return nil
			}
			var r api.Run
			if err := json.Unmarshal(ev.Object, &r); err != nil {
				return err
			}
			if r.State == api.RunRunning {
				return nil
			}
			delete(pending, ev.Name)
			if r.State != api.RunSucceeded {
				failed++
				fmt.Fprintf(out, "    %-4s %s %s: %s\n", m, action, r.State, r.Message)
			} else {
				tasks := "tasks"
				if len(r.Tasks) == 1 {
					tasks = "task"
				}
				fmt.Fprintf(out, "    %-4s %s done (%d %s) after %s\n", m, action, len(r.Tasks), tasks, time.Since(start).Round(10*time.Millisecond))
			}
			if len(pending) == 0 {
				return io.EOF
			}
			return nil
		})
		if err == io.EOF {
			break
		}
		if err != nil && err != api.ErrResume {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s failed on %d machines", action, failed)
	}
	return nil
}

// PrintMachines prints a short machine table.
func PrintMachines(out io.Writer, items []json.RawMessage) error {
	fmt.Fprintf(out, "%-6s %-10s %-9s %-5s %-10s %s\n", "NAME", "STATE", "REACHABLE", "CPUS", "MEMORY", "LAST RUN")
	for _, raw := range items {
		var m api.Machine
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		cpus, mem := 0, uint64(0)
		if m.Status.Inventory != nil {
			cpus, mem = m.Status.Inventory.CPUs, m.Status.Inventory.MemoryBytes
		}
		fmt.Fprintf(out, "%-6s %-10s %-9v %-5d %-10s %s\n", m.Name, m.Status.State, m.Status.Reachable, cpus, fmt.Sprintf("%.1fGiB", float64(mem)/(1<<30)), m.Status.LastRun+" "+m.Status.LastRunResult)
	}
	return nil
}
