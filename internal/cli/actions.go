package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/tables"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

var actionHelp = map[string]string{
	api.ActionCommission:   "Commission machines: inventory, burn-in, configuration (discovered → commissioning → ready)",
	api.ActionDeploy:       "Deploy machines (ready → deploying → deployed)",
	api.ActionUpgrade:      "Upgrade deployed machines (deployed → upgrading → deployed)",
	api.ActionDecommission: "Decommission machines and clean them up (→ decommissioning → decommissioned)",
	api.ActionVerify:       "Run the verify workflow on machines and report each in-sync or drifted (state unchanged)",
}

func newActionCmd(action string) *cobra.Command {
	var workflow string
	var wait bool
	var timeout time.Duration
	var rolling rolloutFlags
	cmd := &cobra.Command{
		Use:   action + " NODES",
		Short: actionHelp[action],
		Long: actionHelp[action] + `.

NODES is a node range: n1, n[1-5,7], n1-n5, @role=compute, all, comma lists,
and exclusions with ! (n[1-10],!n3). The workflow is --workflow, else the
param ` + action + `/workflow of each machine.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rolling.given(cmd) {
				return startRollout(cmd, action, args[0], workflow, rolling, wait, timeout)
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var before *api.List
			if wait {
				// The revision before the action: watching from it cannot
				// miss a run that ends quickly.
				if before, err = c.List(ctx, "runs", "machine=none.none"); err != nil {
					return err
				}
			}
			resp, err := c.Action(ctx, action, args[0], workflow)
			if resp == nil {
				return err
			}
			out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
			runs := map[string]string{}
			runSites := map[string]string{} // runs a manager started on its sites
			refused := 0
			for _, r := range resp.Results {
				node := r.Machine
				if r.Site != "" {
					node = r.Site + "%" + r.Machine
				}
				if r.Error != "" {
					refused++
					fmt.Fprintf(errw, "%s: %s\n", node, r.Error)
					continue
				}
				runs[r.Run] = node
				if r.Site != "" {
					runSites[r.Run] = r.Site
				}
				if !wait {
					fmt.Fprintf(out, "%s: %s started (run %s)\n", node, action, r.Run)
				}
			}
			if len(runs) == 0 {
				return exitError{code: 1, msg: fmt.Sprintf("%s started on no machine", action)}
			}
			if !wait {
				if refused > 0 {
					return exitError{code: 1, msg: fmt.Sprintf("%s started on %d machines, refused on %d", action, len(runs), refused)}
				}
				return nil
			}
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			var failed int
			if len(runSites) > 0 {
				failed, err = waitAcrossSites(ctx, c, action, runs, runSites, out, errw)
			} else {
				failed, err = waitRuns(ctx, c, action, before.Revision, runs, out, errw)
			}
			if err != nil {
				return err
			}
			if action == api.ActionVerify && (failed > 0 || refused > 0) {
				return exitError{code: 1, msg: fmt.Sprintf("verify: %d machines not in sync, refused on %d", failed, refused)}
			}
			if failed > 0 || refused > 0 {
				return exitError{code: 1, msg: fmt.Sprintf("%s failed on %d machines, refused on %d", action, failed, refused)}
			}
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVar(&workflow, "workflow", "", "workflow to run (default: param "+action+"/workflow)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for every machine to finish, showing progress")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up waiting after this long")
	if action != api.ActionVerify {
		addRolloutFlags(cmd, &rolling)
	}
	return cmd
}

// waitRuns follows run events until every run ended; it prints progress
// and a summary, and returns how many runs failed.
func waitRuns(ctx context.Context, c *api.Client, action string, from int64, runs map[string]string, out, errw io.Writer) (int, error) {
	state := map[string]*api.Run{}
	tty := false
	if f, ok := errw.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	start := time.Now()
	lastLine := ""
	progress := func(final bool) {
		done, ok, bad := 0, 0, 0
		steps := map[string]int{}
		for _, r := range state {
			switch r.State {
			case api.RunSucceeded:
				done++
				ok++
			case api.RunFailed, api.RunCancelled:
				done++
				bad++
			default:
				if r.Step < len(r.Tasks) {
					steps[r.Tasks[r.Step]]++
				}
			}
		}
		var parts []string
		for _, t := range sortedKeys(steps) {
			parts = append(parts, fmt.Sprintf("%s:%d", t, steps[t]))
		}
		line := fmt.Sprintf("%s: %d/%d done (%d ok, %d failed), %d running", action, done, len(runs), ok, bad, len(runs)-done)
		if len(parts) > 0 {
			line += " [" + strings.Join(parts, " ") + "]"
		}
		line += fmt.Sprintf(" %s", time.Since(start).Round(time.Second))
		if tty {
			fmt.Fprintf(errw, "\r\033[K%s", line)
			if final {
				fmt.Fprintln(errw)
			}
		} else {
			// Without a terminal, print a line only when the counts change.
			key := strings.TrimSuffix(line, fmt.Sprintf(" %s", time.Since(start).Round(time.Second)))
			if key != lastLine {
				fmt.Fprintln(errw, line)
				lastLine = key
			}
		}
	}
	ended := func() bool {
		n := 0
		for _, r := range state {
			if r.State != api.RunRunning {
				n++
			}
		}
		return n == len(runs)
	}
	// Current states first: runs may have ended already.
	for name := range runs {
		var r api.Run
		if err := c.Get(ctx, "runs", name, &r); err == nil {
			state[name] = &r
		}
	}
	progress(false)
	last := from
	for !ended() {
		var err error
		last, err = c.Watch(ctx, last, []string{api.KindRun}, func(ev api.Event) error {
			if _, ours := runs[ev.Name]; !ours || ev.Type != "put" {
				return nil
			}
			var r api.Run
			if err := json.Unmarshal(ev.Object, &r); err != nil {
				return err
			}
			state[ev.Name] = &r
			progress(false)
			if ended() {
				return errDone
			}
			return nil
		})
		if errors.Is(err, errDone) {
			break
		}
		if errors.Is(err, api.ErrResume) {
			continue
		}
		if err != nil {
			progress(true)
			if ctx.Err() != nil {
				return 0, fmt.Errorf("stopped waiting (%v); the runs go on: drover get runs", ctx.Err())
			}
			return 0, err
		}
	}
	progress(true)
	if action == api.ActionVerify {
		return printVerdicts(ctx, c, runs, state, out, time.Since(start)), nil
	}
	failed := 0
	names := sortedKeys(runs)
	for _, name := range names {
		r := state[name]
		if r != nil && r.State != api.RunSucceeded {
			failed++
			fmt.Fprintf(errw, "%s: %s %s: %s\n", r.Machine, action, r.State, r.Message)
		}
	}
	fmt.Fprintf(out, "%s: %d succeeded, %d failed in %s\n", action, len(runs)-failed, failed, time.Since(start).Round(100*time.Millisecond))
	return failed, nil
}

var errDone = errors.New("done")

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func newMachinesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "machines", Short: "Machine commands"}
	watch := &cobra.Command{
		Use:   "watch",
		Short: "Show machines, then every change to them as it happens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			list, err := c.List(ctx, "machines", "")
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if err := printTable(out, api.KindMachine, list.Items, false); err != nil {
				return err
			}
			fmt.Fprintln(out)
			last := list.Revision
			for {
				last, err = c.Watch(ctx, last, []string{api.KindMachine}, func(ev api.Event) error {
					ts := time.Now().Format("15:04:05")
					if ev.Type == "delete" {
						fmt.Fprintf(out, "%s  %-20s deleted\n", ts, ev.Name)
						return nil
					}
					var m api.Machine
					if err := json.Unmarshal(ev.Object, &m); err != nil {
						return err
					}
					reach := "unreachable"
					if m.Status.Reachable {
						reach = "reachable"
					}
					run := ""
					if m.Status.Run != "" {
						run = " run " + m.Status.Run
					}
					if d := tables.Drift(&m.Status); d != "-" && d != "no" {
						run += " drift " + d
					}
					fmt.Fprintf(out, "%s  %-20s %-16s %s%s\n", ts, m.Name, m.Status.State, reach, run)
					return nil
				})
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, api.ErrResume) {
					continue
				}
				if api.IsStatus(err, 410) {
					fmt.Fprintln(cmd.ErrOrStderr(), "history compacted; listing again")
					if list, err = c.List(ctx, "machines", ""); err != nil {
						return err
					}
					last = list.Revision
					continue
				}
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "watch interrupted (%v); reconnecting\n", explain(err))
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(time.Second):
					}
				}
			}
		},
	}
	addClientFlags(watch)
	cmd.AddCommand(watch)
	return cmd
}
