package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/tables"
	"github.com/spf13/cobra"
)

func newSitesSyncCmd() *cobra.Command {
	var versionSet, output string
	var enable, disable, clearSet bool
	cmd := &cobra.Command{
		Use:   "sync NAME [--version-set VS] [--enable | --disable | --clear]",
		Short: "Keep a site's content packs at a version set, or show how it compares",
		Long: `Keep a site at a version set: the content packs it names, at exactly those
versions, pushed from this manager's pack library (see docs/sites.md).

Without flags, show how the site compares with its set: in-sync, drifted
(something differs and is not fixed yet, sync is disabled, or the site runs
another drover version: packs can be pushed, binaries cannot), failed (the
site refused a push, or this manager does not hold a pack version the set
names) or unknown (the site is not connected), with what differs.

Sync is off until enabled: --version-set alone only compares. With
--enable the manager pushes what is missing or different, and does so again
whenever the set, its library or the site's packs change, and when the site
comes back after a disconnect. Packs on the site that the set does not name
are reported and left alone.`,
		Example: `  drover sites sync east --version-set prod --enable
  drover sites sync east
  drover sites sync east --disable
  drover sites sync east --clear`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" && output != "yaml" {
				return fmt.Errorf("-o %q: use json or yaml (default: a readable summary)", output)
			}
			n := 0
			for _, b := range []bool{enable, disable, clearSet} {
				if b {
					n++
				}
			}
			if n > 1 {
				return errors.New("--enable, --disable and --clear go one at a time")
			}
			if clearSet && cmd.Flags().Changed("version-set") {
				return errors.New("--clear forgets the version set: it does not go with --version-set")
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var site *api.Site
			req := api.SiteSyncRequest{Clear: clearSet}
			if cmd.Flags().Changed("version-set") {
				req.VersionSet = &versionSet
			}
			if enable || disable {
				req.Enabled = &enable
			}
			if req.VersionSet != nil || req.Enabled != nil || req.Clear {
				site, err = c.SiteSync(ctxOf(cmd), args[0], req)
			} else {
				site = &api.Site{}
				err = c.Get(ctxOf(cmd), "sites", args[0], site)
			}
			if err != nil {
				return err
			}
			if output != "" {
				return printDoc(cmd.OutOrStdout(), output, site)
			}
			printSiteSync(cmd.OutOrStdout(), site)
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVar(&versionSet, "version-set", "", "the version set to keep the site at")
	cmd.Flags().BoolVar(&enable, "enable", false, "push what differs from the set, now and whenever it differs again")
	cmd.Flags().BoolVar(&disable, "disable", false, "stop pushing (what differs is still reported)")
	cmd.Flags().BoolVar(&clearSet, "clear", false, "forget the site's version set (and stop pushing)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml: the site with its sync status")
	return cmd
}

// printSiteSync prints how a site compares with its version set.
func printSiteSync(w io.Writer, site *api.Site) {
	st := site.Status.Sync
	fmt.Fprintf(w, "Site:         %s\n", site.Name)
	if site.Sync == nil || site.Sync.VersionSet == "" {
		fmt.Fprintf(w, "Version set:  none (drover sites sync %s --version-set NAME --enable)\n", site.Name)
		return
	}
	onOff := "disabled"
	if site.Sync.Enabled {
		onOff = "enabled"
	}
	fmt.Fprintf(w, "Version set:  %s (sync %s)\n", site.Sync.VersionSet, onOff)
	if st == nil {
		return
	}
	fmt.Fprintf(w, "State:        %s\n", st.State)
	if st.Message != "" {
		fmt.Fprintf(w, "Message:      %s\n", strings.ReplaceAll(st.Message, "\n", "\n              "))
	}
	fmt.Fprintf(w, "Site runs:    drover %s\n", dashIfEmpty(site.Status.Version, "(version unknown)"))
	fmt.Fprintf(w, "Checked:      %s\n", age(st.CheckedAt))
	if st.LastPush != "" {
		fmt.Fprintf(w, "Last push:    %s, %s\n", st.LastPush, age(st.LastPushAt))
	}
	if len(st.Differences) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DIFFERENCE\tACTION")
		for _, d := range st.Differences {
			fmt.Fprintf(tw, "%s\t%s\n", d, tables.Dash(d.Action))
		}
		tw.Flush()
		for _, d := range st.Differences {
			// The message holds the errors that make the site failed.
			if d.Error != "" && !strings.Contains(st.Message, d.Error) {
				what := "drover"
				if d.Pack != "" {
					what = "pack " + d.Pack
				}
				fmt.Fprintf(w, "%s: %s\n", what, strings.ReplaceAll(d.Error, "\n", "\n    "))
			}
		}
	}
	if len(st.Unmanaged) > 0 {
		fmt.Fprintf(w, "\nNot in the set (left alone): %s\n", strings.Join(st.Unmanaged, ", "))
	}
}

func dashIfEmpty(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

// siteSyncColumns are the VERSION SET and SYNC cells of a site, and what
// differs (wide).
func siteSyncColumns(s *api.Site) (set, state, differs string) {
	if s.Sync == nil || s.Sync.VersionSet == "" {
		return "-", "-", "-"
	}
	set, state = s.Sync.VersionSet, "-"
	if st := s.Status.Sync; st != nil {
		state = st.State
		var ds []string
		for _, d := range st.Differences {
			ds = append(ds, d.String())
		}
		differs = strings.Join(ds, "; ")
	}
	if !s.Sync.Enabled {
		state += " (sync off)"
	}
	return set, state, tables.Dash(differs)
}

func printVersionSets(w io.Writer, items []json.RawMessage, _ bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NAME\tPACKS\tDROVER\tLABELS")
	for _, raw := range items {
		var vs api.VersionSet
		if err := json.Unmarshal(raw, &vs); err != nil {
			return err
		}
		packs := make([]string, 0, len(vs.Packs))
		for _, p := range vs.Packs {
			packs = append(packs, p.Name+" "+p.Version)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", vs.Name, tables.Dash(strings.Join(packs, ", ")), tables.Dash(vs.Drover), tables.Labels(vs.Labels))
	}
	return nil
}

func printPackVersions(w io.Writer, items []json.RawMessage, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprint(tw, "PACK\tVERSION\tDIGEST\tKEPT\tBY")
	if wide {
		fmt.Fprint(tw, "\tNAME")
	}
	fmt.Fprintln(tw)
	for _, raw := range items {
		var pv api.PackVersion
		if err := json.Unmarshal(raw, &pv); err != nil {
			return err
		}
		digest := pv.Digest
		if !wide && len(digest) > len("sha256:")+12 {
			digest = digest[:len("sha256:")+12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", pv.Pack, pv.Version, digest, age(&pv.KeptAt), tables.Dash(pv.KeptBy))
		if wide {
			fmt.Fprintf(tw, "\t%s", pv.Name)
		}
		fmt.Fprintln(tw)
	}
	return nil
}

func init() {
	tableFormats[api.KindVersionSet] = printVersionSets
	tableFormats[api.KindPackVersion] = printPackVersions
}
