package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
)

// verifyLogLines is how much of a failed verify job's log the verdict
// shows: the end of it, where verify tasks say what differs.
const verifyLogLines = 10

// printVerdicts prints one verdict per machine of a finished verify —
// in-sync, drifted (with the end of the failed task's output) or error
// (with the run's message) — and a summary. It returns how many machines
// are not in sync.
func printVerdicts(ctx context.Context, c *api.Client, runs map[string]string, state map[string]*api.Run, out io.Writer, took time.Duration) int {
	width := 0
	for _, m := range runs {
		width = max(width, len(m))
	}
	counts := map[string]int{}
	notInSync := 0
	for _, name := range runsByMachine(runs) {
		r := state[name]
		verdict := verifyVerdict(r)
		counts[verdict]++
		fmt.Fprintf(out, "%-*s  %s\n", width, runs[name], verdict)
		if verdict == api.VerifyInSync {
			continue
		}
		notInSync++
		if r == nil {
			continue
		}
		if verdict == api.VerifyDrifted && r.FailedJob != "" {
			var log bytes.Buffer
			if _, err := c.JobLog(ctx, r.FailedJob, 0, false, &log); err != nil {
				fmt.Fprintf(out, "    (cannot read the log of %s: %v)\n", r.FailedJob, explain(err))
				continue
			}
			for _, line := range tailLines(log.String(), verifyLogLines) {
				fmt.Fprintf(out, "    %s\n", line)
			}
			fmt.Fprintf(out, "    (drover logs %s)\n", r.FailedJob)
			continue
		}
		if r.Message != "" {
			fmt.Fprintf(out, "    %s\n", r.Message)
		}
	}
	var parts []string
	for _, v := range []string{api.VerifyInSync, api.VerifyDrifted, api.VerifyError} {
		if counts[v] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[v], v))
		}
	}
	for _, v := range sortedKeys(counts) {
		if v != api.VerifyInSync && v != api.VerifyDrifted && v != api.VerifyError {
			parts = append(parts, fmt.Sprintf("%d %s", counts[v], v))
		}
	}
	fmt.Fprintf(out, "verify: %s in %s\n", strings.Join(parts, ", "), took.Round(100*time.Millisecond))
	return notInSync
}

// verifyVerdict is a finished verify run's verdict; servers that do not
// record one get it from the run's state.
func verifyVerdict(r *api.Run) string {
	switch {
	case r == nil:
		return "unknown"
	case r.Result != "":
		return r.Result
	case r.State == api.RunSucceeded:
		return api.VerifyInSync
	}
	return r.State
}

// tailLines returns the last n non-empty-at-the-end lines of s.
func tailLines(s string, n int) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return lines
}

// runsByMachine lists the runs (keys of runs, whose values are machine
// names) in the order of their machines.
func runsByMachine(runs map[string]string) []string {
	names := sortedKeys(runs)
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(runs[a], runs[b]) })
	return names
}
