package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/tables"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// rolloutFlags are the batch settings of a lifecycle verb; giving any of
// them makes the verb a rollout.
type rolloutFlags struct {
	batchSize, maxUnavailable, maxFailures int
	pauseBetween                           time.Duration
}

var rolloutFlagNames = []string{"batch-size", "max-unavailable", "max-failures", "pause-between"}

func addRolloutFlags(cmd *cobra.Command, f *rolloutFlags) {
	cmd.Flags().IntVar(&f.batchSize, "batch-size", 0, "rolling: machines per batch, in node range order; a batch starts when the one before ended (0: one batch)")
	cmd.Flags().IntVar(&f.maxUnavailable, "max-unavailable", 0, "rolling: at most this many machines running at once (0: the batch size)")
	cmd.Flags().IntVar(&f.maxFailures, "max-failures", 1, "rolling: stop starting machines after this many failed (0: never stop)")
	cmd.Flags().DurationVar(&f.pauseBetween, "pause-between", 0, "rolling: wait this long after a batch before the next")
	cmd.Long += `

With --batch-size, --max-unavailable, --max-failures or --pause-between the
action is a rollout: machines go a batch at a time, and the rollout stops
after --max-failures failed machines (see drover rollouts --help).`
}

// given reports whether any batch flag was set.
func (f *rolloutFlags) given(cmd *cobra.Command) bool {
	for _, n := range rolloutFlagNames {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// startRollout runs a lifecycle verb as a rollout and, with wait, follows
// it to its end.
func startRollout(cmd *cobra.Command, action, nodes, workflow string, f rolloutFlags, wait bool, timeout time.Duration) error {
	c, err := client(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	req := api.RolloutRequest{
		Action: action, Nodes: nodes, Workflow: workflow,
		BatchSize: f.batchSize, MaxUnavailable: f.maxUnavailable, MaxFailures: f.maxFailures,
	}
	if f.pauseBetween > 0 {
		req.PauseBetween = f.pauseBetween.String()
	}
	r, err := c.StartRollout(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "rollout %s started: %s of %s\n", r.Name, action, describeRollout(r))
	if !wait {
		fmt.Fprintf(cmd.OutOrStdout(), "follow it with: drover rollouts show %s\n", r.Name)
		return nil
	}
	return followRollout(ctx, cmd, c, r, timeout)
}

// describeRollout says in words what a rollout's settings mean.
func describeRollout(r *api.Rollout) string {
	n := len(r.Machines)
	batch := n
	if r.BatchSize > 0 {
		batch = min(r.BatchSize, n)
	}
	s := fmt.Sprintf("%d machines in batches of %d", n, batch)
	if r.MaxUnavailable > 0 && r.MaxUnavailable < batch {
		s += fmt.Sprintf(", at most %d at once", r.MaxUnavailable)
	}
	if r.PauseBetween != "" {
		s += ", pausing " + r.PauseBetween + " between batches"
	}
	if r.MaxFailures > 0 {
		s += fmt.Sprintf(", stopping after %d failed", r.MaxFailures)
	} else {
		s += ", never stopping for failures"
	}
	return s
}

// followRollout shows a rollout's progress until nothing of it runs any
// more and it is not running: done, paused (after failures) or cancelled.
func followRollout(ctx context.Context, cmd *cobra.Command, c *api.Client, r *api.Rollout, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	tty := false
	if f, ok := errw.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	start := time.Now()
	last := ""
	progress := func(final bool) {
		line := progressLine(r)
		took := " " + time.Since(start).Round(time.Second).String()
		switch {
		case tty:
			fmt.Fprintf(errw, "\r\033[K%s%s", line, took)
			if final {
				fmt.Fprintln(errw)
			}
		case line != last:
			fmt.Fprintln(errw, line+took)
		}
		last = line
	}
	ended := func() bool { return r.Status.State != api.RolloutRunning && r.Status.Running == 0 }
	from := r.Revision
	// The current state first: it may have moved on already.
	if err := c.Get(ctx, "rollouts", r.Name, r); err != nil {
		return err
	}
	progress(false)
	for !ended() {
		var err error
		from, err = c.Watch(ctx, from, []string{api.KindRollout}, func(ev api.Event) error {
			if ev.Name != r.Name {
				return nil
			}
			if ev.Type == "delete" {
				return fmt.Errorf("rollout %s was deleted", r.Name)
			}
			var cur api.Rollout
			if err := json.Unmarshal(ev.Object, &cur); err != nil {
				return err
			}
			*r = cur
			progress(false)
			if ended() {
				return errDone
			}
			return nil
		})
		switch {
		case errors.Is(err, errDone):
		case errors.Is(err, api.ErrResume):
			continue
		case api.IsStatus(err, 410):
			if err := c.Get(ctx, "rollouts", r.Name, r); err != nil {
				return err
			}
			from = r.Revision
			continue
		case err != nil:
			progress(true)
			if ctx.Err() != nil {
				return fmt.Errorf("stopped waiting (%v); the rollout goes on: drover rollouts show %s", ctx.Err(), r.Name)
			}
			return err
		}
	}
	progress(true)
	for _, m := range r.Status.Machines {
		if m.State == api.RolloutMachineFailed {
			fmt.Fprintf(errw, "%s: %s failed: %s\n", m.Name, r.Action, m.Message)
		}
	}
	fmt.Fprintf(out, "rollout %s %s in %s: %s\n", r.Name, r.Status.State, time.Since(start).Round(100*time.Millisecond), r.Status.Message)
	if r.Status.State != api.RolloutDone || r.Status.Failed > 0 {
		return exitError{code: 1}
	}
	return nil
}

// progressLine is one line of a rollout's progress: batches, machines per
// state, failures.
func progressLine(r *api.Rollout) string {
	s := r.Status
	done := s.Succeeded + s.Failed
	line := fmt.Sprintf("%s %s: batch %d/%d, %d/%d done (%d ok, %d failed), %d running, %d pending",
		r.Name, s.State, max(s.Batch, s.BatchesDone), s.Batches, done, len(s.Machines), s.Succeeded, s.Failed, s.Running, s.Pending)
	if s.NextBatchAt != nil && s.State == api.RolloutRunning && s.Running == 0 {
		line += fmt.Sprintf(", next batch in %s", tables.Human(time.Until(*s.NextBatchAt)))
	}
	if f := failedMachines(r); len(f) > 0 {
		line += " [failed: " + strings.Join(f, ",") + "]"
	}
	return line
}

func failedMachines(r *api.Rollout) []string {
	var out []string
	for _, m := range r.Status.Machines {
		if m.State == api.RolloutMachineFailed {
			out = append(out, m.Name)
		}
	}
	return out
}

func newRolloutsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollouts",
		Short: "List, show, resume and cancel rolling operations",
		Long: `A rollout runs commission, deploy, upgrade or decommission on many machines a
batch at a time: drover upgrade NODES --batch-size N --max-unavailable M
--max-failures F [--pause-between D] starts one, and so do auto-upgrade
policies.

Batches take the machines in node range order; a batch starts once every
machine of the previous one ended and the pause passed. At most M machines
of the rollout run at once. After F failed machines nothing new starts and
the rollout is paused, naming them; resume goes on with the machines not yet
started (--retry-failed starts the failed ones again), cancel ends it.
Running machines always finish.`,
	}
	var timeout time.Duration
	list := &cobra.Command{
		Use:   "list",
		Short: "List rollouts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			l, err := c.List(cmd.Context(), "rollouts", "")
			if err != nil {
				return err
			}
			if len(l.Items) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no rollouts")
				return nil
			}
			return printRollouts(cmd.OutOrStdout(), l.Items, false)
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a rollout: settings, progress and each machine",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var r api.Rollout
			if err := c.Get(cmd.Context(), "rollouts", args[0], &r); err != nil {
				return err
			}
			return showRollout(cmd.OutOrStdout(), &r)
		},
	}
	var retryFailed, wait bool
	resume := &cobra.Command{
		Use:   "resume NAME",
		Short: "Let a paused rollout go on with the machines not yet started",
		Long: `Let a paused rollout go on with the machines not yet started. The failed
machines stay failed (the rollout stops again after --max-failures new
failures), unless --retry-failed: then they are started again, in the next
batches. A machine an upgrade left broken must be commissioned (and deployed)
again before an upgrade can succeed on it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			r, err := c.ResumeRollout(cmd.Context(), args[0], retryFailed)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rollout %s resumed: %d machines to go\n", r.Name, r.Status.Pending)
			if wait {
				return followRollout(cmd.Context(), cmd, c, r, timeout)
			}
			return nil
		},
	}
	resume.Flags().BoolVar(&retryFailed, "retry-failed", false, "start the failed machines again")
	resume.Flags().BoolVar(&wait, "wait", false, "follow the rollout to its end, showing progress")
	resume.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up waiting after this long")
	cancel := &cobra.Command{
		Use:   "cancel NAME",
		Short: "Start no more machines; those running finish",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			r, err := c.CancelRollout(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rollout %s cancelled: %d running finish, %d not started\n", r.Name, r.Status.Running, r.Status.Pending)
			return nil
		},
	}
	for _, sub := range []*cobra.Command{list, show, resume, cancel} {
		addClientFlags(sub)
		cmd.AddCommand(sub)
	}
	return cmd
}

func printRollouts(w io.Writer, items []json.RawMessage, _ bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NAME\tACTION\tSTATE\tBATCH\tMACHINES\tOK\tFAILED\tRUNNING\tPENDING\tSTARTED\tBY\tMESSAGE")
	for _, raw := range items {
		var r api.Rollout
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		s := r.Status
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Name, r.Action, s.State, max(s.Batch, s.BatchesDone), s.Batches,
			len(s.Machines), s.Succeeded, s.Failed, s.Running, s.Pending, age(&s.StartedAt), tables.Dash(r.User), tables.Dash(s.Message))
	}
	return nil
}

func showRollout(w io.Writer, r *api.Rollout) error {
	s := r.Status
	fmt.Fprintf(w, "Rollout:   %s (%s by %s)\n", r.Name, r.Action, tables.Dash(r.User))
	if r.Workflow != "" {
		fmt.Fprintf(w, "Workflow:  %s\n", r.Workflow)
	}
	if r.Nodes != "" {
		fmt.Fprintf(w, "Nodes:     %s\n", r.Nodes)
	}
	fmt.Fprintf(w, "Settings:  %s\n", describeRollout(r))
	fmt.Fprintf(w, "State:     %s\n", s.State)
	if s.Message != "" {
		fmt.Fprintf(w, "Message:   %s\n", s.Message)
	}
	fmt.Fprintf(w, "Progress:  %s\n", strings.TrimPrefix(progressLine(r), r.Name+" "+s.State+": "))
	fmt.Fprintf(w, "Started:   %s", s.StartedAt.Local().Format(time.RFC3339))
	if s.FinishedAt != nil {
		fmt.Fprintf(w, ", finished %s (%s)", s.FinishedAt.Local().Format(time.RFC3339), s.FinishedAt.Sub(s.StartedAt).Round(time.Second))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "MACHINE\tBATCH\tSTATE\tRUN\tDURATION\tMESSAGE")
	for _, m := range s.Machines {
		batch, dur := "-", "-"
		if m.Batch > 0 {
			batch = fmt.Sprint(m.Batch)
		}
		if m.StartedAt != nil {
			end := time.Now()
			if m.FinishedAt != nil {
				end = *m.FinishedAt
			}
			dur = end.Sub(*m.StartedAt).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, batch, m.State, tables.Dash(m.Run), dur, tables.Dash(m.Message))
	}
	return nil
}

func printPolicies(w io.Writer, items []json.RawMessage, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprint(tw, "NAME\tTYPE\tENABLED\tSELECTOR\tROLLOUT\tSKIPPED\tMESSAGE")
	if wide {
		fmt.Fprint(tw, "\tSETTINGS")
	}
	fmt.Fprintln(tw)
	for _, raw := range items {
		var p api.Policy
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		var skipped []string
		for _, s := range p.Status.Skipped {
			skipped = append(skipped, s.Machine)
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s", p.Name, p.Type, p.IsEnabled(), tables.Dash(p.Selector), tables.Dash(p.Status.Rollout), tables.Dash(strings.Join(skipped, ",")), tables.Dash(p.Status.Message))
		if wide {
			mf := "default"
			if p.MaxFailures != nil {
				mf = fmt.Sprint(*p.MaxFailures)
			}
			fmt.Fprintf(tw, "\tbatchSize=%d maxUnavailable=%d maxFailures=%s pauseBetween=%s workflow=%s", p.BatchSize, p.MaxUnavailable, mf, tables.Dash(p.PauseBetween), tables.Dash(p.Workflow))
		}
		fmt.Fprintln(tw)
	}
	return nil
}

func init() {
	tableFormats[api.KindRollout] = printRollouts
	tableFormats[api.KindPolicy] = printPolicies
}
