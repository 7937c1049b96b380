package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/tables"
	"github.com/spf13/cobra"
	sigsyaml "sigs.k8s.io/yaml"
)

func newPlainClient(endpoint, ca string) (*api.Client, error) {
	return api.NewClientFromFile(endpoint, ca, "")
}

func newApplyCmd() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or update objects from YAML or JSON (all or nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("give -f FILE (or -f - for stdin)")
			}
			var docs []json.RawMessage
			// Where each document came from, to put the server's errors
			// ("document 7") back in the user's terms.
			var origins []docOrigin
			for _, f := range files {
				var r io.Reader
				if f == "-" {
					r = cmd.InOrStdin()
				} else {
					fh, err := os.Open(f)
					if err != nil {
						return err
					}
					defer fh.Close()
					r = fh
				}
				parsed, err := model.SplitYAML(r)
				if err != nil {
					return fmt.Errorf("%s: %w (nothing was applied)", f, err)
				}
				// Check each document here first, for errors with line
				// numbers; the server checks again.
				for _, d := range parsed {
					obj, err := model.ParseDocument(d)
					if err == nil {
						if verr := model.Validate(obj); verr != nil {
							m := obj.GetMeta()
							de := &model.DocError{Index: d.Index, Line: d.Line, Kind: m.Kind, Name: m.Name, Err: verr}
							var fe *model.FieldError
							if errors.As(verr, &fe) {
								de.Field, de.Err = fe.Field, fe.Err
								if l, ok := d.Lines[fe.Field]; ok {
									de.Line = l
								}
							}
							err = de
						}
					}
					if err != nil {
						return fmt.Errorf("%s: %w (nothing was applied)", f, err)
					}
					docs = append(docs, d.JSON)
					origins = append(origins, docOrigin{file: f, index: d.Index, line: d.Line})
				}
			}
			if len(docs) == 0 {
				return fmt.Errorf("no documents in %s", strings.Join(files, ", "))
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			resp, err := c.Apply(cmd.Context(), docs)
			if err != nil {
				return fmt.Errorf("%s (nothing was applied)", locateDocument(explain(err), origins))
			}
			for _, r := range resp.Results {
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(r.Kind), r.Name, r.Action)
				for _, w := range r.Warnings {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s/%s: %s\n", strings.ToLower(r.Kind), r.Name, w)
				}
			}
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file to apply (- for stdin); repeatable")
	return cmd
}

type docOrigin struct {
	file        string
	index, line int
}

var serverDocRef = regexp.MustCompile(`^document (\d+)(?: \(line \d+\))?`)

// locateDocument rewrites the server's "document N" (N counting across
// every file sent) as the file, document and line it came from.
func locateDocument(msg string, origins []docOrigin) string {
	m := serverDocRef.FindStringSubmatchIndex(msg)
	if m == nil {
		return msg
	}
	n, err := strconv.Atoi(msg[m[2]:m[3]])
	if err != nil || n < 1 || n > len(origins) {
		return msg
	}
	o := origins[n-1]
	name := o.file
	if name == "-" {
		name = "stdin"
	}
	where := fmt.Sprintf("%s: document %d", name, o.index)
	if o.line > 0 {
		where += fmt.Sprintf(" (line %d)", o.line)
	}
	return where + msg[m[1]:]
}

func newGetCmd() *cobra.Command {
	var selector, output, site string
	var effective bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show objects",
		Long:  "Show objects. Kinds: machines, profiles, params, templates, tasks, workflows, runs, jobs, users, jointokens, tokens, audit, rollouts, policies.",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := model.Lookup(args[0])
			if err != nil {
				return err
			}
			if output != "table" && output != "json" && output != "yaml" && output != "wide" {
				return fmt.Errorf("-o %q: use table, wide, json or yaml", output)
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if site != "" && len(args) == 1 {
				selector = withSiteSelector(selector, site)
			}
			if len(args) == 2 {
				if effective {
					if site != "" {
						return fmt.Errorf("--effective is not available for a site's machine: ask the site itself")
					}
					if k.Kind != api.KindMachine {
						return fmt.Errorf("--effective is for machines")
					}
					var eff struct {
						Machine string `json:"machine"`
						Params  map[string]struct {
							Value  json.RawMessage `json:"value"`
							Source string          `json:"source"`
						} `json:"params"`
					}
					if err := c.Do(cmd.Context(), "GET", "/api/v1/objects/machines/"+args[1]+"?effective=1", nil, &eff); err != nil {
						return err
					}
					if output == "json" || output == "yaml" {
						return printDoc(out, output, eff)
					}
					tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "PARAM\tVALUE\tFROM")
					for _, n := range model.SortedKeys(eff.Params) {
						v := eff.Params[n]
						fmt.Fprintf(tw, "%s\t%s\t%s\n", n, string(v.Value), v.Source)
					}
					return tw.Flush()
				}
				var raw json.RawMessage
				if err := c.GetAt(cmd.Context(), site, k.Plural, args[1], &raw); err != nil {
					return err
				}
				if output == "table" || output == "wide" {
					return printTable(out, k.Kind, []json.RawMessage{raw}, output == "wide")
				}
				return printDoc(out, output, raw)
			}
			if k.Kind == api.KindMachine && (output == "table" || output == "wide") {
				// The server makes the rows: a fifth of the bytes of the
				// summaries for a big fleet.
				t, err := c.Table(cmd.Context(), k.Plural, selector)
				if err != nil {
					return err
				}
				if len(t.Rows) == 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "no %s\n", k.Plural)
					return nil
				}
				return printServerTable(out, t, output == "wide")
			}
			view := api.ViewFull
			if output == "table" || output == "wide" {
				// Tables need no inventories: the summary view is a third
				// of the bytes for a big fleet.
				view = api.ViewSummary
			}
			list, err := c.ListView(cmd.Context(), k.Plural, selector, view)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return printDoc(out, "json", list)
			case "yaml":
				for i, it := range list.Items {
					if i > 0 {
						fmt.Fprintln(out, "---")
					}
					if err := printDoc(out, "yaml", it); err != nil {
						return err
					}
				}
				return nil
			}
			if len(list.Items) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no %s\n", k.Plural)
				return nil
			}
			return printTableBySite(out, k.Kind, list.Items, output == "wide")
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVar(&site, "site", "", "on a manager: the object of this site (its mirror); with a list, the same as -l site=NAME")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector (role=compute,env!=prod)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, wide, json or yaml")
	cmd.Flags().BoolVar(&effective, "effective", false, "for a machine: every param it sees and where it comes from")
	return cmd
}

func printDoc(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		y, err := sigsyaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func age(t *time.Time) string { return tables.Age(tables.Time(t), time.Now()) }

// printServerTable prints a table the server made (api.Table).
func printServerTable(w io.Writer, t *api.Table, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	now := time.Now()
	var show []int
	for i, c := range t.Columns {
		if c.Wide && !wide || c.HideEmpty && !slices.ContainsFunc(t.Rows, func(r []string) bool { return i < len(r) && r[i] != "" }) {
			continue
		}
		show = append(show, i)
	}
	for j, i := range show {
		if j > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, t.Columns[i].Name)
	}
	fmt.Fprintln(tw)
	for _, r := range t.Rows {
		for j, i := range show {
			if j > 0 {
				fmt.Fprint(tw, "\t")
			}
			cell := ""
			if i < len(r) {
				cell = r[i]
			}
			if t.Columns[i].Type == api.TableColumnTime {
				cell = tables.Age(cell, now)
			}
			fmt.Fprint(tw, tables.Dash(cell))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// sourceString says where an object comes from: "user" for objects users
// wrote, the pack and version otherwise.
func sourceString(src string) string {
	if src == "" {
		return "user"
	}
	return strings.TrimPrefix(src, "pack:")
}

// tableFormats print the tables of kinds whose code lives in their own
// file (rollouts.go).
var tableFormats = map[string]func(w io.Writer, items []json.RawMessage, wide bool) error{}

// printTable prints objects as an aligned table with columns per kind.
func printTable(w io.Writer, kind string, items []json.RawMessage, wide bool) error {
	if f := tableFormats[kind]; f != nil {
		return f(w, items, wide)
	}
	if kind == api.KindMachine {
		t := &api.Table{Columns: tables.MachineColumns}
		for _, raw := range items {
			var m api.Machine
			if err := json.Unmarshal(raw, &m); err != nil {
				return err
			}
			t.Rows = append(t.Rows, tables.MachineRow(&m))
		}
		return printServerTable(w, t, wide)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	k, err := model.Lookup(kind)
	if err != nil {
		return err
	}
	decode := func(raw json.RawMessage) (api.Object, error) {
		obj := k.New()
		return obj, json.Unmarshal(raw, obj)
	}
	switch kind {
	case api.KindJob:
		fmt.Fprintln(tw, "NAME\tMACHINE\tTASK\tSTATE\tEXIT\tSTARTED\tDURATION")
	case api.KindRun:
		fmt.Fprintln(tw, "NAME\tMACHINE\tACTION\tWORKFLOW\tSTEP\tSTATE\tSTARTED\tMESSAGE")
	case api.KindTask:
		fmt.Fprintln(tw, "NAME\tTIMEOUT\tRETRIES\tLABELS\tSOURCE")
	case api.KindWorkflow:
		fmt.Fprintln(tw, "NAME\tTASKS\tLABELS\tSOURCE")
	case api.KindProfile:
		fmt.Fprintln(tw, "NAME\tSELECTOR\tPARAMS\tLABELS\tSOURCE")
	case api.KindParam:
		fmt.Fprintln(tw, "NAME\tTYPE\tSECURE\tDEFAULT\tSOURCE")
	case api.KindUser:
		fmt.Fprintln(tw, "NAME\tROLE\tDISABLED")
	case api.KindToken:
		fmt.Fprintln(tw, "ID\tUSER\tMACHINE\tROLE\tEXPIRES")
	case api.KindJoinToken:
		fmt.Fprintln(tw, "ID\tEXPIRES\tCREATED BY")
	case api.KindAudit:
		fmt.Fprintln(tw, "TIME\tUSER\tACTION\tTARGET\tDETAIL")
	case api.KindTemplate:
		fmt.Fprintln(tw, "NAME\tLABELS\tREVISION\tSOURCE")
	case api.KindBootEnv:
		fmt.Fprintln(tw, "NAME\tKERNEL\tFILES\tREQUIRES\tSOURCE")
	default:
		fmt.Fprintln(tw, "NAME\tLABELS\tREVISION")
	}
	for _, raw := range items {
		obj, err := decode(raw)
		if err != nil {
			return err
		}
		switch o := obj.(type) {
		case *api.Job:
			exit := "-"
			if o.ExitCode != nil {
				exit = fmt.Sprint(*o.ExitCode)
			}
			dur := "-"
			if o.StartedAt != nil {
				end := time.Now()
				if o.FinishedAt != nil {
					end = *o.FinishedAt
				}
				dur = end.Sub(*o.StartedAt).Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Name, o.Machine, o.Task, o.State, exit, age(o.StartedAt), dur)
		case *api.Run:
			step := fmt.Sprintf("%d/%d", min(o.Step+1, len(o.Tasks)), len(o.Tasks))
			if o.State == api.RunSucceeded {
				step = fmt.Sprintf("%d/%d", len(o.Tasks), len(o.Tasks))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Name, o.Machine, o.Action, o.Workflow, step, o.State, age(&o.StartedAt), tables.Dash(o.Message))
		case *api.Task:
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", o.Name, tables.Dash(o.Timeout), o.Retries, tables.Labels(o.Labels), sourceString(o.Source))
		case *api.Workflow:
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.Name, strings.Join(o.Tasks, ","), tables.Labels(o.Labels), sourceString(o.Source))
		case *api.Profile:
			keys := model.SortedKeys(o.Params)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Name, tables.Dash(o.Selector), tables.Dash(strings.Join(keys, ",")), tables.Labels(o.Labels), sourceString(o.Source))
		case *api.Param:
			def := "-"
			if len(o.Default) > 0 {
				def = string(o.Default)
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", o.Name, tables.Dash(o.Type), o.Secure, def, sourceString(o.Source))
		case *api.BootEnv:
			kernel := o.Kernel
			if kernel == "" {
				kernel = "(iPXE script)"
			}
			var files []string
			for _, t := range o.Templates {
				files = append(files, t.Path)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Name, kernel, tables.Dash(strings.Join(files, ",")), tables.Dash(strings.Join(o.RequiredParams, ",")), sourceString(o.Source))
		case *api.User:
			fmt.Fprintf(tw, "%s\t%s\t%v\n", o.Name, o.Role, o.Disabled)
		case *api.Token:
			exp := "never"
			if o.ExpiresAt != nil {
				exp = o.ExpiresAt.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Name, tables.Dash(o.User), tables.Dash(o.Machine), o.Role, exp)
		case *api.JoinToken:
			fmt.Fprintf(tw, "%s\t%s\t%s\n", o.Name, o.ExpiresAt.Local().Format(time.RFC3339), o.CreatedBy)
		case *api.Audit:
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Time.Local().Format(time.RFC3339), o.User, o.Action, o.Target, tables.Dash(o.Detail))
		default:
			m := obj.GetMeta()
			if kind == api.KindTemplate {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", m.Name, tables.Labels(m.Labels), m.Revision, sourceString(m.Source))
			} else {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", m.Name, tables.Labels(m.Labels), m.Revision)
			}
		}
	}
	return nil
}

func newDeleteCmd() *cobra.Command {
	var site string
	cmd := &cobra.Command{
		Use:   "delete KIND NAME...",
		Short: "Delete objects",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := model.Lookup(args[0])
			if err != nil {
				return err
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			for _, name := range args[1:] {
				if err := c.DeleteAt(cmd.Context(), site, k.Plural, name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s deleted\n", strings.ToLower(k.Kind), name)
			}
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVar(&site, "site", "", "on a manager: delete the object on this site (the manager forwards it)")
	return cmd
}

func newLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs JOB",
		Short: "Print a job's output (-f to follow it live)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			_, err = c.JobLog(cmd.Context(), args[0], 0, follow, cmd.OutOrStdout())
			return err
		},
	}
	addClientFlags(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the job ends")
	return cmd
}
