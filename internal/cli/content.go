package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/Masterminds/semver/v3"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/content"
	"github.com/drover-project/drover/internal/tables"
	"github.com/spf13/cobra"
)

func newContentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "content",
		Short: "Install, list, show and remove content packs",
		Long: `Content packs are versioned bundles of tasks, templates, workflows, profiles
and params (see docs/content.md). A pack's objects are read-only: apply your
own object of the same kind and name to override one; delete your override to
get the pack's back.`,
	}
	cmd.AddCommand(newContentPushCmd(), newContentListCmd(), newContentShowCmd(), newContentRemoveCmd())
	return cmd
}

func newContentPushCmd() *cobra.Command {
	var libraryOnly bool
	cmd := &cobra.Command{
		Use:   "push DIR|FILE",
		Short: "Check a content pack and install it (or upgrade the installed version), all or nothing",
		Long: `Check a content pack and install it (or upgrade the installed version), all
or nothing. Every version installed is also kept in the endpoint's pack
library, from which a manager pushes packs to the sites it keeps at a version
set (drover sites sync); --library-only keeps it there without installing it
(a version for some sites that the manager itself should not run).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Load here first: a pack that does not parse is reported with
			// its files and lines before anything is sent.
			pack, err := content.Load(args[0])
			if err != nil {
				return err
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			path := "/api/v1/content"
			if libraryOnly {
				path += "?library=1"
			}
			var resp api.ContentPushResponse
			if err := c.Do(ctxOf(cmd), http.MethodPost, path, pack, &resp); err != nil {
				return err
			}
			printPush(cmd.OutOrStdout(), &resp)
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().BoolVar(&libraryOnly, "library-only", false, "keep the pack in the pack library for version sets without installing it here")
	return cmd
}

func printPush(w io.Writer, r *api.ContentPushResponse) {
	if r.LibraryOnly {
		switch r.Kept {
		case "":
			fmt.Fprintf(w, "content pack %s %s is already in the library (no change; not installed here)\n", r.Pack, r.Version)
		case "replaced":
			fmt.Fprintf(w, "content pack %s %s replaced in the library: it held this version with other content (sites kept at it get this content); not installed here\n", r.Pack, r.Version)
		default:
			fmt.Fprintf(w, "content pack %s %s kept in the library (not installed here)\n", r.Pack, r.Version)
		}
		return
	}
	defer func() {
		if r.Kept == "replaced" {
			fmt.Fprintf(w, "  library: %s %s held other content under this version; it now holds this one (sites kept at it get this content)\n", r.Pack, r.Version)
		}
	}()
	switch {
	case r.Unchanged:
		fmt.Fprintf(w, "content pack %s %s is already installed (no change)\n", r.Pack, r.Version)
	case r.PreviousVersion != "":
		verb := "upgraded"
		if older(r.Version, r.PreviousVersion) {
			verb = "downgraded"
		}
		fmt.Fprintf(w, "content pack %s %s %s -> %s\n", r.Pack, verb, r.PreviousVersion, r.Version)
	default:
		fmt.Fprintf(w, "content pack %s %s installed\n", r.Pack, r.Version)
	}
	for _, l := range []struct {
		what string
		refs []string
	}{{"added", r.Changes.Added}, {"changed", r.Changes.Changed}, {"removed", r.Changes.Removed}, {"overridden by your own object (kept)", r.Overridden}} {
		if len(l.refs) > 0 { // an unchanged push has no changes, only overrides
			fmt.Fprintf(w, "  %s: %s\n", l.what, strings.Join(l.refs, ", "))
		}
	}
}

func listPacks(ctx context.Context, c *api.Client) ([]api.ContentPack, error) {
	var list struct {
		Items []api.ContentPack `json:"items"`
	}
	if err := c.Do(ctx, http.MethodGet, "/api/v1/objects/contentpacks", nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

func newContentListCmd() *cobra.Command {
	var library bool
	var site string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List installed content packs (--library: every version kept in the pack library)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if library {
				l, err := c.List(ctxOf(cmd), "packversions", "")
				if err != nil {
					return err
				}
				if len(l.Items) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "the pack library is empty")
					return nil
				}
				return printPackVersions(cmd.OutOrStdout(), l.Items, false)
			}
			packs, err := listPacks(ctxOf(cmd), c)
			if err != nil {
				return err
			}
			if len(packs) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no content packs installed")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			// On a manager the list holds its sites' packs too (mirrored).
			sites := slices.ContainsFunc(packs, func(p api.ContentPack) bool { return p.Site != "" })
			if sites {
				fmt.Fprint(tw, "SITE\t")
			}
			fmt.Fprintln(tw, "NAME\tVERSION\tOBJECTS\tOVERRIDDEN\tINSTALLED\tBY\tDESCRIPTION")
			for _, p := range packs {
				if site != "" && p.Site != site {
					continue
				}
				if sites {
					fmt.Fprintf(tw, "%s\t", tables.Dash(p.Site))
				}
				desc := p.Description
				if len(desc) > 60 {
					desc = desc[:57] + "..."
				}
				by := p.Status.InstalledBy
				if p.Status.Builtin {
					by += " (built in)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Name, p.Version, len(p.Objects), len(p.Status.Overridden), age(p.Status.InstalledAt), tables.Dash(by), tables.Dash(desc))
			}
			return tw.Flush()
		},
	}
	addClientFlags(cmd)
	cmd.Flags().BoolVar(&library, "library", false, "list the pack library: every version kept, installed here or not")
	cmd.Flags().StringVar(&site, "site", "", "on a manager: the packs installed on this site (as mirrored)")
	return cmd
}

func newContentShowCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an installed pack: its objects, which are overridden, and its last change",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var p api.ContentPack
			if err := c.Get(ctxOf(cmd), "contentpacks", args[0], &p); err != nil {
				return err
			}
			if output != "" {
				return printDoc(cmd.OutOrStdout(), output, p)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Name:        %s\nVersion:     %s\nDigest:      %s\n", p.Name, p.Version, p.Digest)
			if p.Description != "" {
				fmt.Fprintf(w, "Description: %s\n", p.Description)
			}
			for _, r := range p.Requires {
				fmt.Fprintf(w, "Requires:    %s %s\n", r.Name, r.Version)
			}
			by := p.Status.InstalledBy
			if p.Status.Builtin {
				by += " (built in)"
			}
			fmt.Fprintf(w, "Installed:   %s by %s", age(p.Status.InstalledAt), tables.Dash(by))
			if p.Status.PreviousVersion != "" {
				fmt.Fprintf(w, " (upgraded from %s)", p.Status.PreviousVersion)
			}
			fmt.Fprintln(w)
			ch := p.Status.Changes
			if n := len(ch.Added) + len(ch.Changed) + len(ch.Removed); n > 0 && p.Status.PreviousVersion != "" {
				fmt.Fprintf(w, "Last change: %d added, %d changed, %d removed\n", len(ch.Added), len(ch.Changed), len(ch.Removed))
				for _, l := range []struct {
					sign string
					refs []string
				}{{"+", ch.Added}, {"~", ch.Changed}, {"-", ch.Removed}} {
					for _, r := range l.refs {
						fmt.Fprintf(w, "  %s %s\n", l.sign, r)
					}
				}
			}
			over := map[string]bool{}
			for _, o := range p.Status.Overridden {
				over[o] = true
			}
			objs := append([]api.PackObject(nil), p.Objects...)
			sort.Slice(objs, func(i, j int) bool {
				if objs[i].Kind != objs[j].Kind {
					return objs[i].Kind < objs[j].Kind
				}
				return objs[i].Name < objs[j].Name
			})
			fmt.Fprintln(w)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tNAME\tFILE\tIN USE")
			for _, o := range objs {
				use := "pack"
				if over[o.Kind+"/"+o.Name] {
					use = "your override"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s:%d\t%s\n", o.Kind, o.Name, o.File, o.Line, use)
			}
			return tw.Flush()
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml (default: a readable summary)")
	return cmd
}

func newContentRemoveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a pack and its objects (refused while anything depends on them)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if err := c.Do(ctxOf(cmd), http.MethodDelete, "/api/v1/content/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "content pack %s removed\n", args[0])
			return nil
		},
	}
	addClientFlags(cmd)
	return cmd
}

// older reports whether version a is older than b (semantic versions).
func older(a, b string) bool {
	va, errA := semver.NewVersion(a)
	vb, errB := semver.NewVersion(b)
	return errA == nil && errB == nil && va.LessThan(vb)
}
