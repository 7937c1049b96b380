package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/drover-project/drover/internal/lab"
	"github.com/spf13/cobra"
)

func newLabCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A multi-site drover on this machine: a manager, sites and their machines (drover lab up)",
		Long: `drover lab builds a manager and several site endpoints on this machine, as
separate drover server processes, each site with its own machines (agents),
registers the sites with the manager and commissions every machine. Toxiproxy
adds latency between the manager and the sites; as root each site runs in its
own network namespace. See docs/lab.md.

The lab lives in a directory (--dir, default $DROVER_LAB_DIR or
TMPDIR/drover-lab-UID) that records every process, namespace and link it made.`,
	}
	cmd.PersistentFlags().String("dir", "", "the lab's directory (default $DROVER_LAB_DIR, else "+lab.DefaultDir()+")")
	cmd.AddCommand(newLabUpCmd(), newLabDownCmd(), newLabStatusCmd(), newLabEnvCmd(), newLabAgentsCmd(), newLabProxyCmd())
	return cmd
}

func labDir(cmd *cobra.Command) string {
	if d, _ := cmd.Flags().GetString("dir"); d != "" {
		return d
	}
	return lab.DefaultDir()
}

// selfName is how printed commands name this binary: as it was run when
// that was a path (bin/drover), else drover.
func selfName() string {
	if strings.Contains(os.Args[0], "/") {
		return os.Args[0]
	}
	return "drover"
}

func newLabUpCmd() *cobra.Command {
	var o lab.Options
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab: a manager, N sites with M machines each, registered and commissioned",
		Long: `Build the lab: a manager and --sites site endpoints (drover server processes with
their own data dirs and admin passwords), each site with --machines machines run
by one drover lab agents process (the real agent code with simulated hardware;
jobs and drover run commands really run), the sites registered with the
manager through the sites API, and every machine commissioned from the manager.

Between the manager and each site a Toxiproxy proxy adds --latency in each
direction (a round trip takes twice as long). As root each site runs in a
network namespace of its own behind a veth pair; otherwise (or with
--no-netns) everything listens on loopback ports.

The processes keep running after up returns, in sessions of their own, with
their logs in DIR/logs. Ctrl-C during up removes what was built.`,
		Example: `  drover lab up
  drover lab up --sites 2 --machines 5 --latency 20ms
  eval "$(drover lab env)" && drover get machines`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Dir = labDir(cmd)
			o.Self = selfName()
			_, err := lab.Up(cmd.Context(), o, cmd.OutOrStdout())
			var broken *lab.BrokenError
			switch {
			case errors.Is(err, lab.ErrInterrupted):
				return exitError{code: 130, msg: err.Error()}
			case errors.As(err, &broken):
				return exitError{code: 1, msg: err.Error()}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Sites, "sites", 4, "how many site endpoints")
	f.IntVar(&o.Machines, "machines", 25, "machines per site")
	f.DurationVar(&o.Latency, "latency", 50*time.Millisecond, "latency added each way between the manager and each site (whole milliseconds)")
	f.BoolVar(&o.NoNetns, "no-netns", false, "as root too, keep every site on loopback instead of its own network namespace")
	f.BoolVar(&o.Force, "force", false, "remove the lab that exists in the directory first")
	return cmd
}

func newLabDownCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop every process of the lab, remove its namespaces, links and directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(labDir(cmd), cmd.OutOrStdout())
		},
	}
}

func newLabStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each process of the lab (alive or not), its namespace and addresses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Status(labDir(cmd), cmd.OutOrStdout())
		},
	}
}

func newLabEnvCmd() *cobra.Command {
	var site, ttl string
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Print the shell lines that point the CLI at the lab's manager (or a site): eval \"$(drover lab env)\"",
		Long: `Print DROVER_ENDPOINT, DROVER_CA_CERT and DROVER_TOKEN for the lab's manager, or
with --site for that site directly (not through the latency proxy). The token
is a new admin session (valid --ttl), never a password.`,
		Example: `  eval "$(drover lab env)"
  eval "$(drover lab env --site east)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := time.ParseDuration(ttl); err != nil {
				return fmt.Errorf("--ttl %q: give a duration such as 24h", ttl)
			}
			s, err := lab.Env(cmd.Context(), labDir(cmd), site, ttl)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), s)
			return nil
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "point at this site instead of the manager")
	cmd.Flags().StringVar(&ttl, "ttl", "24h", "how long the session token lasts")
	return cmd
}

func newLabAgentsCmd() *cobra.Command {
	var o lab.AgentsOptions
	var caFile string
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "Run a site's machines in one process (started by lab up): real agent code, simulated hardware",
		Long: `Run --machines agents in this process, each with its own state dir under
--state-dir, credential and HTTPS connection. Jobs run their scripts with the
shell and drover run / drover cp really run here; only the hardware inventory
is simulated. Machines without a credential register with $DROVER_JOIN_TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("--ca-cert: %w", err)
			}
			o.CAPEM = ca
			o.JoinToken = os.Getenv("DROVER_JOIN_TOKEN")
			o.Logger = logger(cmd)
			return lab.RunAgents(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Endpoint, "endpoint", "", "the site's API URL")
	f.StringVar(&caFile, "ca-cert", "", "the site's CA certificate")
	f.StringVar(&o.StateDir, "state-dir", "", "directory of the machines' state dirs")
	f.IntVar(&o.Machines, "machines", 25, "how many machines")
	f.StringVar(&o.Prefix, "prefix", "n", "machine names: PREFIX1, PREFIX2...")
	f.IntVar(&o.Seed, "seed", 0, "first seed of the simulated inventories")
	for _, n := range []string{"endpoint", "ca-cert", "state-dir"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func newLabProxyCmd() *cobra.Command {
	var o lab.ProxyOptions
	var sites []string
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run Toxiproxy links with latency between the manager and the sites (started by lab up)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(sites) == 0 {
				return errors.New("give at least one --site NAME=HOST:PORT")
			}
			for _, s := range sites {
				l, err := lab.ParseLink(s)
				if err != nil {
					return err
				}
				o.Links = append(o.Links, l)
			}
			o.Logger = logger(cmd)
			return lab.RunProxy(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Latency, "latency", 50*time.Millisecond, "latency added each way (whole milliseconds)")
	f.StringArrayVar(&sites, "site", nil, "NAME=HOST:PORT of a site's API (repeatable); its link listens on 127.0.0.1")
	f.StringVar(&o.ReadyFile, "ready-file", "", "write the links' listen addresses here (JSON) once they listen")
	return cmd
}
