package cli

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/drover-project/drover/internal/agent"
	"github.com/drover-project/drover/internal/server"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newServerCmd() *cobra.Command {
	var cfg server.Config
	var hb, reach, maxCopy string
	var gcPercent int
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a site endpoint (API, store, engine)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Engine.HeartbeatInterval, err = time.ParseDuration(hb); err != nil {
				return fmt.Errorf("--heartbeat-interval: %w", err)
			}
			if cfg.Engine.ReachableTimeout, err = time.ParseDuration(reach); err != nil {
				return fmt.Errorf("--reachable-timeout: %w", err)
			}
			if cfg.Engine.ReachableTimeout <= cfg.Engine.HeartbeatInterval {
				return fmt.Errorf("--reachable-timeout (%s) must be longer than --heartbeat-interval (%s)", reach, hb)
			}
			if cfg.MaxCopyBytes, err = parseSize(maxCopy); err != nil {
				return fmt.Errorf("--max-copy-size: %w", err)
			}
			// Every agent holds a connection and a long poll, so at 10,000
			// machines most of the heap is small, long-lived connection
			// state; Go's default (GOGC=100) lets the heap grow to twice
			// that before collecting. GOGC in the environment wins.
			if os.Getenv("GOGC") == "" {
				if gcPercent <= 0 {
					return fmt.Errorf("--gc-percent %d: use a positive percentage (or GOGC=off in the environment)", gcPercent)
				}
				debug.SetGCPercent(gcPercent)
			}
			cfg.AdminPassword = os.Getenv("DROVER_ADMIN_PASSWORD")
			cfg.Logger = logger(cmd)
			cfg.Version = Version
			srv, err := server.New(cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			if err := srv.Listen(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if srv.InitialAdminPassword != "" {
				fmt.Fprintf(out, "Initial admin password (shown once; also in %s):\n\n    %s\n\n",
					filepath.Join(cfg.DataDir, "initial-admin-password"), srv.InitialAdminPassword)
			}
			ca := srv.CAPath()
			if ca == "" {
				ca = "your own, from --tls-cert"
			}
			fmt.Fprintf(out, "drover server listening on https://%s (CA: %s)\n", srv.Addr(), ca)
			if a := srv.BootAddr(); a != "" {
				fmt.Fprintf(out, "boot server listening on http://%s (machines use %s)\n", a, srv.BootURL())
			}
			if a := srv.TFTPAddr(); a != "" {
				fmt.Fprintf(out, "tftp server listening on %s\n", a)
			}
			return srv.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/drover", "where the store, TLS material and keys live")
	f.StringVar(&cfg.Listen, "listen", ":8443", "API address (HTTPS)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "serve this certificate instead of the generated one")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "key of --tls-cert")
	f.StringSliceVar(&cfg.TLSSANs, "tls-san", nil, "extra DNS names or IPs for the generated certificate")
	f.IntVar(&cfg.Engine.MaxConcurrentJobs, "max-concurrent-jobs", 10, "jobs running at once across all machines")
	f.StringVar(&hb, "heartbeat-interval", "10s", "how often agents heartbeat")
	f.StringVar(&reach, "reachable-timeout", "30s", "mark a machine unreachable after this long without a heartbeat")
	f.IntVar(&cfg.RetainEvents, "retain-events", 100000, "revisions of history kept for watchers (UI, managers) to resume from; older ones must re-list")
	f.BoolVar(&cfg.NoDefaultContent, "no-default-content", false, "do not install (or upgrade) the content pack built into drover at start")
	f.StringSliceVar(&cfg.DHCPInterfaces, "dhcp-interface", nil, "serve DHCPv4 on this interface (repeatable); Subnet objects say what to hand out")
	f.BoolVar(&cfg.DHCPOnlyKnown, "dhcp-only-known", false, "DHCP answers only machines in the inventory (by NIC MAC) and reservations")
	f.StringVar(&cfg.BootAddress, "boot-address", "", "IPv4 address machines reach this server at (DHCP next-server, boot URLs)")
	f.StringVar(&cfg.BootURL, "boot-url", "", "base URL of the HTTP boot server as machines reach it (default http://<boot-address>:<port of --boot-listen>)")
	f.StringVar(&cfg.BootListen, "boot-listen", "", "serve iPXE scripts, kernels and rendered installer files over plain HTTP on HOST:PORT (firmware cannot trust our CA)")
	f.StringVar(&cfg.BootFilesDir, "boot-files-dir", "", "directory of kernels and initrds the boot server serves under /files/")
	f.StringVar(&cfg.DiscoveryDir, "discovery-dir", "", "directory of the discovery image (vmlinuz, initrd.img from make discovery-image) served as /files/discovery/ (default <boot-files-dir>/discovery)")
	f.StringVar(&cfg.TFTPListen, "tftp-listen", "", "serve the iPXE binaries over read-only TFTP on HOST:PORT (:69)")
	f.StringVar(&cfg.TFTPDir, "tftp-dir", "", "directory of the iPXE binaries (default /usr/lib/ipxe, from Debian's ipxe package)")
	f.StringVar(&maxCopy, "max-copy-size", "64MiB", "largest archive drover cp may send to this site (KiB, MiB, GiB)")
	f.IntVar(&gcPercent, "gc-percent", 50, "heap growth allowed between garbage collections, in percent: lower uses less memory and more CPU (GOGC in the environment wins)")
	return cmd
}

func newAgentCmd() *cobra.Command {
	var cfg agent.Config
	var caFile string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the machine agent: register, heartbeat, run jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Endpoint == "" {
				cfg.Endpoint = os.Getenv("DROVER_ENDPOINT")
			}
			if caFile == "" {
				caFile = os.Getenv("DROVER_CA_CERT")
			}
			if cfg.JoinToken == "" {
				cfg.JoinToken = os.Getenv("DROVER_JOIN_TOKEN")
			}
			if caFile != "" {
				b, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca-cert: %w", err)
				}
				cfg.CAPEM = b
			}
			cfg.Logger = logger(cmd)
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Endpoint, "endpoint", "", "endpoint URL (or $DROVER_ENDPOINT)")
	f.StringVar(&caFile, "ca-cert", "", "CA certificate of the endpoint (or $DROVER_CA_CERT)")
	f.StringVar(&cfg.JoinToken, "join-token", "", "join token for the first registration (or $DROVER_JOIN_TOKEN)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/drover-agent", "where the agent keeps its identity and credential")
	f.StringVar(&cfg.Name, "name", "", "machine name (default: the host name)")
	cmd.AddCommand(newAgentBootEnvCmd())
	return cmd
}

// newAgentBootEnvCmd is for tasks: set this machine's boot environment
// with the agent's credential, before a reboot.
func newAgentBootEnvCmd() *cobra.Command {
	var endpoint, caFile, stateDir string
	cmd := &cobra.Command{
		Use:   "boot-env ENV",
		Short: "Set this machine's boot environment with the agent's credential (for tasks, before a reboot)",
		Long: "Set the boot environment of the machine this agent runs on (a task before it reboots the machine:\n" +
			"drover agent boot-env local && reboot). It returns once the boot server serves the new environment.\n" +
			"Tasks get --endpoint, --ca-cert and --state-dir from the agent as DROVER_ENDPOINT, DROVER_CA_CERT and DROVER_STATE_DIR.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" {
				endpoint = os.Getenv("DROVER_ENDPOINT")
			}
			if caFile == "" {
				caFile = os.Getenv("DROVER_CA_CERT")
			}
			if stateDir == "" {
				stateDir = os.Getenv("DROVER_STATE_DIR")
			}
			var caPEM []byte
			if caFile != "" {
				b, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca-cert: %w", err)
				}
				caPEM = b
			}
			resp, err := agent.SetBootEnv(cmd.Context(), endpoint, caPEM, stateDir, args[0])
			if err != nil {
				return err
			}
			served := ""
			if resp.Served != "" {
				served = "; the boot server serves it now"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine %s: boot environment %s (revision %d)%s\n", resp.Machine, resp.BootEnv, resp.Revision, served)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoint, "endpoint", "", "endpoint URL (default $DROVER_ENDPOINT, else the one the agent registered with)")
	f.StringVar(&caFile, "ca-cert", "", "CA certificate of the endpoint (default $DROVER_CA_CERT, else the agent's)")
	f.StringVar(&stateDir, "state-dir", "", "the agent's state dir (default $DROVER_STATE_DIR)")
	return cmd
}

func newLoginCmd() *cobra.Command {
	var username, ttl string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in and save the endpoint and token for later commands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			endpoint, ca := endpointFlags(cmd)
			if endpoint == "" {
				return fmt.Errorf("--endpoint is required (or DROVER_ENDPOINT)")
			}
			if username == "" {
				username = os.Getenv("DROVER_USERNAME")
			}
			if username == "" {
				username = "admin"
			}
			password := os.Getenv("DROVER_PASSWORD")
			switch {
			case passwordStdin:
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("reading password from stdin: %w", err)
				}
				password = strings.TrimRight(line, "\r\n")
			case password == "":
				if f, ok := cmd.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					fmt.Fprintf(cmd.ErrOrStderr(), "Password for %s: ", username)
					b, err := term.ReadPassword(int(f.Fd()))
					fmt.Fprintln(cmd.ErrOrStderr())
					if err != nil {
						return err
					}
					password = string(b)
				} else {
					return fmt.Errorf("no password: use --password-stdin or DROVER_PASSWORD")
				}
			}
			if ca != "" {
				if abs, err := filepath.Abs(ca); err == nil {
					ca = abs
				}
			}
			c, err := newPlainClient(endpoint, ca)
			if err != nil {
				return err
			}
			resp, err := c.Login(cmd.Context(), username, password, ttl)
			if err != nil {
				return err
			}
			if err := saveConfig(clientConfig{Endpoint: endpoint, CACert: ca, Token: resp.Token, User: resp.User}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s as %s (%s) until %s; saved in %s\n",
				endpoint, resp.User, resp.Role, resp.ExpiresAt.Local().Format(time.RFC1123), configPath())
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVarP(&username, "username", "u", "", "user name (default admin, or $DROVER_USERNAME)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	cmd.Flags().StringVar(&ttl, "ttl", "24h", "how long the session lasts")
	return cmd
}

func newJoinTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "join-token", Short: "Manage the tokens agents register with"}
	var ttl string
	var lbls map[string]string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			resp, err := c.CreateJoinToken(cmd.Context(), ttl, lbls)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "join token %s valid until %s\n", resp.Name, resp.ExpiresAt.Local().Format(time.RFC1123))
			return nil
		},
	}
	addClientFlags(create)
	create.Flags().StringVar(&ttl, "ttl", "1h", "how long agents may register with it")
	create.Flags().StringToStringVar(&lbls, "label", nil, "labels given to machines that register with it (k=v)")
	cmd.AddCommand(create)
	return cmd
}
