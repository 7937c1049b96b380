package cli

import (
	"github.com/drover-project/drover/internal/demo"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var opts demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a one-site demo on this machine: a server and agents on loopback, commission and deploy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if v, _ := cmd.Flags().GetString("log-level"); v == "debug" {
				opts.Log = logger(cmd)
			}
			return demo.Run(cmd.Context(), opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&opts.Machines, "machines", 5, "how many machines (agents) to run")
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "where to keep the demo's data (default: a temporary directory)")
	cmd.Flags().BoolVar(&opts.Keep, "keep", false, "keep running after the demo so you can use the CLI against it")
	return cmd
}
