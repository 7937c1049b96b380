// Package cli is the drover command line: one binary for the server, the
// agent and the client verbs.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/drover-project/drover/api"
	"github.com/spf13/cobra"
)

// Version is set at build time.
var Version = "dev"

// Main runs the CLI and returns the exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(stderr, "error:", ee.msg)
			}
			return ee.code
		}
		fmt.Fprintln(stderr, "error:", explain(err))
		return 1
	}
	return 0
}

// exitError ends the command with a status (and optional message).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// explain gives the message for a failed command: an API error's own text
// when it is the whole error, else the full chain, which carries the
// context (an agent's "no join token to register again: ...").
func explain(err error) string {
	if ae, ok := err.(*api.Error); ok {
		return ae.Message
	}
	return err.Error()
}

// NewRoot builds the command tree.
func NewRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "drover",
		Short:         "Bare-metal provisioning and cluster lifecycle manager",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		newServerCmd(),
		newAgentCmd(),
		newLoginCmd(),
		newApplyCmd(),
		newGetCmd(),
		newDeleteCmd(),
		newLogsCmd(),
		newMachinesCmd(),
		newJoinTokenCmd(),
		newDemoCmd(),
		newRolloutsCmd(),
		newContentCmd(),
		newRunCmd(),
		newCopyCmd(),
		newSitesCmd(),
		newLabCmd(),
	)
	for _, a := range []string{api.ActionCommission, api.ActionDeploy, api.ActionUpgrade, api.ActionDecommission, api.ActionVerify} {
		root.AddCommand(newActionCmd(a))
	}
	return root
}

func logger(cmd *cobra.Command) *slog.Logger {
	lvl := slog.LevelInfo
	if v, _ := cmd.Flags().GetString("log-level"); v != "" {
		switch strings.ToLower(v) {
		case "debug":
			lvl = slog.LevelDebug
		case "warn", "warning":
			lvl = slog.LevelWarn
		case "error":
			lvl = slog.LevelError
		}
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
}
