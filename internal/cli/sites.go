package cli

import (
	"bufio"
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

func newSitesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sites",
		Short: "Register, list and remove the sites this endpoint manages",
		Long: `Any endpoint can be a manager: register site endpoints with it, and it mirrors
their objects (drover get machines then lists every site's machines, with a
SITE column; -l site=NAME selects one site). See docs/sites.md.`,
	}
	cmd.AddCommand(newSitesAddCmd(), newSitesRemoveCmd(), newSitesListCmd(), newSitesSyncCmd())
	return cmd
}

// managerClient is the client of the endpoint the command talks to, from
// the environment and the saved login only: on `sites add`, --ca-cert is
// the site's CA.
func managerClient(cmd *cobra.Command) (*api.Client, error) {
	tmp := &cobra.Command{}
	addClientFlags(tmp)
	if v, _ := cmd.Flags().GetString("endpoint"); v != "" {
		_ = tmp.Flags().Set("endpoint", v)
	}
	tmp.SetContext(ctxOf(cmd))
	return client(tmp)
}

// readPassword reads a password: the first line of stdin with fromStdin,
// else env if set, else a prompt when stdin is a terminal.
func readPassword(cmd *cobra.Command, fromStdin bool, env, prompt string) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("reading password from stdin: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	if f, ok := cmd.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		return string(b), err
	}
	return "", fmt.Errorf("no password: use --password-stdin or %s", env)
}

func newSitesAddCmd() *cobra.Command {
	var siteURL, caFile, username string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "add NAME --url URL --ca-cert FILE --username ADMIN --password-stdin",
		Short: "Register a site: this endpoint creates its own admin user there and mirrors the site",
		Long: `Register a site endpoint with this one, which becomes its manager.

The site admin's username and password are used once: the manager logs in
with them, creates a user of its own on the site (manager-ID, ID being this
endpoint's id) with a random secret, and keeps only that credential,
encrypted with its secret key. The admin password is not stored.

--ca-cert is the site's CA certificate (its DATA_DIR/tls/ca.crt); the
endpoint this command talks to comes from DROVER_ENDPOINT, DROVER_CA_CERT and
the saved login (--endpoint overrides the endpoint).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if siteURL == "" || caFile == "" || username == "" {
				return errors.New("--url, --ca-cert and --username are required")
			}
			ca, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("--ca-cert: %w", err)
			}
			password, err := readPassword(cmd, passwordStdin, "DROVER_SITE_PASSWORD", fmt.Sprintf("Password of %s on site %s: ", username, args[0]))
			if err != nil {
				return err
			}
			c, err := managerClient(cmd)
			if err != nil {
				return err
			}
			site, err := c.AddSite(ctxOf(cmd), api.SiteAddRequest{Name: args[0], URL: siteURL, CACert: string(ca), Username: username, Password: password})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "site/%s added: %s, managed as user %s (the admin password was not kept)\n", site.Name, site.URL, site.ManagementUser)
			return nil
		},
	}
	cmd.Flags().String("endpoint", "", "manager endpoint URL (default $DROVER_ENDPOINT or the saved login)")
	cmd.Flags().StringVar(&siteURL, "url", "", "the site's API URL (https://HOST:PORT)")
	cmd.Flags().StringVar(&caFile, "ca-cert", "", "the site's CA certificate (its DATA_DIR/tls/ca.crt)")
	cmd.Flags().StringVarP(&username, "username", "u", "", "an admin of the site (used once, not kept)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the admin's password from stdin (else $DROVER_SITE_PASSWORD or a prompt)")
	return cmd
}

func newSitesRemoveCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Delete this manager's user on a site, then the site and its mirror",
		Long: `Delete this manager's user on the site, then forget the site and its mirror.

If the site cannot be reached nothing is removed, unless --force: then the
site is removed from this manager only, and its management user stays on the
site (delete it there with drover delete user manager-ID).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			resp, err := c.RemoveSite(ctxOf(cmd), args[0], force)
			if err != nil {
				return err
			}
			if resp.Warning != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", resp.Warning)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "site/%s removed\n", resp.Name)
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "remove the site here even if it cannot be reached (its management user stays there)")
	return cmd
}

func newSitesListCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Show the sites: connected, last contact, the site's revision, the mirror's cursor and lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "wide" && output != "json" && output != "yaml" {
				return fmt.Errorf("-o %q: use table, wide, json or yaml", output)
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			list, err := c.List(ctxOf(cmd), "sites", "")
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json", "yaml":
				return printDoc(out, output, list)
			}
			if len(list.Items) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no sites")
				return nil
			}
			return printSites(out, list.Items, output == "wide")
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, wide, json or yaml")
	return cmd
}

// printSites prints the sites table (drover sites list, drover get sites).
func printSites(w io.Writer, items []json.RawMessage, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprint(tw, "NAME\tURL\tCONNECTED\tLAST CONTACT\tSITE REV\tCURSOR\tLAG\tVERSION SET\tSYNC")
	if wide {
		fmt.Fprint(tw, "\tUSER\tOBJECTS\tRELISTS\tVERSION\tERROR\tWHAT DIFFERS")
	}
	fmt.Fprintln(tw)
	for _, raw := range items {
		var s api.Site
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		st := s.Status
		connected := "no"
		if st.Connected {
			connected = "yes"
		}
		lag := fmt.Sprintf("%d rev %s", st.LagRevisions, (time.Duration(st.LagSeconds * float64(time.Second))).Round(100*time.Millisecond))
		set, syncState, differs := siteSyncColumns(&s)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s", s.Name, s.URL, connected, age(st.LastContact), st.SiteRevision, st.Cursor, lag, set, syncState)
		if wide {
			errText := st.Error
			if errText == "" {
				errText = "-"
			}
			fmt.Fprintf(tw, "\t%s\t%d\t%d\t%s\t%s\t%s", s.ManagementUser, st.Objects, st.Relists, tables.Dash(st.Version), errText, differs)
		}
		fmt.Fprintln(tw)
	}
	return nil
}

func init() {
	tableFormats[api.KindSite] = printSites
}

// withSiteSelector adds site=NAME to a label selector.
func withSiteSelector(selector, site string) string {
	if selector == "" {
		return api.SiteLabel + "=" + site
	}
	return selector + "," + api.SiteLabel + "=" + site
}

// printTableBySite prints a list as printTable does; on a manager, whose
// lists hold objects of several sites, kinds without a SITE column get a
// table per site, each under its site's name.
func printTableBySite(w io.Writer, kind string, items []json.RawMessage, wide bool) error {
	if kind == api.KindMachine {
		return printTable(w, kind, items, wide)
	}
	var order []string
	groups := map[string][]json.RawMessage{}
	for _, raw := range items {
		var head struct {
			Site string `json:"site"`
		}
		_ = json.Unmarshal(raw, &head)
		if _, seen := groups[head.Site]; !seen {
			order = append(order, head.Site)
		}
		groups[head.Site] = append(groups[head.Site], raw)
	}
	if len(order) == 1 && order[0] == "" {
		return printTable(w, kind, items, wide)
	}
	for i, site := range order {
		if i > 0 {
			fmt.Fprintln(w)
		}
		title := "SITE " + site
		if site == "" {
			title = "LOCAL"
		}
		fmt.Fprintf(w, "%s:\n", title)
		if err := printTable(w, kind, groups[site], wide); err != nil {
			return err
		}
	}
	return nil
}

// waitAcrossSites waits for runs a manager started on itself and on its
// sites (runSites: run to site): a site's runs come back through the
// manager's mirror of the site, not its event stream, so they are polled.
// It prints each run as it ends and returns how many did not succeed (for
// verify: were not in sync).
func waitAcrossSites(ctx context.Context, c *api.Client, action string, runs, runSites map[string]string, out, errw io.Writer) (int, error) {
	start := time.Now()
	pending := map[string]bool{}
	for name := range runs {
		pending[name] = true
	}
	failed := 0
	for len(pending) > 0 {
		for _, name := range sortedKeys(pending) {
			var r api.Run
			if err := c.GetAt(ctx, runSites[name], "runs", name, &r); err != nil {
				if api.IsStatus(err, 404) {
					continue // not mirrored yet
				}
				if ctx.Err() != nil {
					return 0, fmt.Errorf("stopped waiting (%v); the runs go on: drover get runs", ctx.Err())
				}
				return 0, err
			}
			if r.State == api.RunRunning {
				continue
			}
			delete(pending, name)
			ok := r.State == api.RunSucceeded
			verdict := r.State
			if action == api.ActionVerify {
				verdict = verifyVerdict(&r)
				ok = verdict == api.VerifyInSync
			}
			if ok {
				fmt.Fprintf(out, "%s: %s %s\n", runs[name], action, verdict)
			} else {
				failed++
				fmt.Fprintf(errw, "%s: %s %s: %s\n", runs[name], action, verdict, r.Message)
			}
		}
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("stopped waiting (%v) for %d runs; they go on: drover get runs", ctx.Err(), len(pending))
		case <-time.After(500 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "%s: %d succeeded, %d failed in %s\n", action, len(runs)-failed, failed, time.Since(start).Round(100*time.Millisecond))
	return failed, nil
}
