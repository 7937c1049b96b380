package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/noderange"
	"github.com/drover-project/drover/internal/server"
	"github.com/spf13/cobra"
)

// commandFlags are the flags run and cp share.
type commandFlags struct {
	timeout time.Duration
	collate bool
	fanout  int
}

func (f *commandFlags) add(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&f.timeout, "timeout", 10*time.Minute, "kill the command on a node after this long (at most 24h)")
	cmd.Flags().BoolVarP(&f.collate, "collate", "b", false, "gather identical output (and exit code) under one node set at the end, like clush -b")
	cmd.Flags().IntVar(&f.fanout, "fanout", 0, "at most this many nodes of a site at once (0: all)")
	addClientFlags(cmd)
}

func newRunCmd() *cobra.Command {
	var f commandFlags
	cmd := &cobra.Command{
		Use:   "run NODES [flags] -- CMD [ARGS...]",
		Short: "Run a command on machines through their agents and print its output per node",
		Long: `Run a command on every machine of a node range, through the machines' agents,
and print each output line prefixed with its node ("n1: ..."; "east%n1: ..." on a
manager) as the nodes finish.

The command runs as it is given, without a shell: for pipes, redirections or
variables expanded on the node, run a shell: -- sh -c 'df -h | grep /data'.
It runs beside any job the machine runs, as the agent's user, from /, with
stdin from /dev/null; each of stdout and stderr is kept up to 1 MiB.

Machines whose agent is not connected are reported unreachable at once. The
exit status is 0 when the command exited 0 on every node, 130 after Ctrl-C
(which stops the command where it still runs and prints what came), else 1,
with a summary of the nodes that failed, timed out or were unreachable.`,
		Example: `  drover run 'n[1-5]' -- uptime
  drover run @role=compute --collate -- cat /etc/os-release
  drover run all --timeout 30s --fanout 50 -- sh -c 'apt-get -qq update && echo ok'`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if len(args) < 2 || dash > 1 {
				return errors.New("give a node range and then the command after --, as in: drover run 'n[1-5]' -- uptime")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			req := api.RunRequest{Nodes: args[0], Argv: args[1:], Timeout: f.timeout.String(), Fanout: f.fanout}
			g := newGatherer(cmd, f.collate, false)
			err = c.Run(cmd.Context(), req, g.line)
			return g.finish(cmd.Context(), "run", err)
		},
	}
	f.add(cmd)
	return cmd
}

func newCopyCmd() *cobra.Command {
	var f commandFlags
	cmd := &cobra.Command{
		Use:   "cp NODES SRC DEST",
		Short: "Copy a file or a directory to machines through their agents",
		Long: `Copy a local file or directory (with its files, subdirectories and symbolic
links, and their permission bits) to every machine of a node range.

DEST is an absolute path on the nodes. When it is an existing directory there,
or ends in /, the copy goes inside it under its own name (like cp); otherwise
the copy is written as DEST, whose parent directory must exist. Each file is
written to a temporary name next to it and renamed into place, so no program
on the node ever reads half a file. Files belong to the agent's user.

The copy is sent to the site once, as a tar stream of at most 64 MiB (the
site's drover server --max-copy-size), and each agent fetches it from there.
Output and exit status are those of drover run.`,
		Example: `  drover cp 'n[1-5]' ./ntp.conf /etc/ntp.conf
  drover cp @role=web ./site/ /srv/`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			archive, size, summary, err := packCopy(args[1])
			if err != nil {
				return err
			}
			defer os.Remove(archive.Name())
			defer archive.Close()
			c, err := client(cmd)
			if err != nil {
				return err
			}
			req := api.CopyRequest{Nodes: args[0], Dest: args[2], Size: size, Timeout: f.timeout.String(), Fanout: f.fanout}
			g := newGatherer(cmd, f.collate, true)
			start := time.Now()
			err = c.Copy(cmd.Context(), req, archive, g.line)
			if ferr := g.finish(cmd.Context(), "cp", err); ferr != nil {
				return ferr
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "copied %s (%s) to %s on %d nodes in %s\n", args[1], summary, args[2], len(g.results), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// packCopy writes src as a tar stream to a temporary file: one top-level
// entry named after src, then what is below it. Ownership is left out (the
// files will belong to the agent's user).
func packCopy(src string) (*os.File, int64, string, error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return nil, 0, "", err
	}
	top := filepath.Base(abs)
	if top == "/" || top == "." {
		return nil, 0, "", fmt.Errorf("cannot copy %s: name a file or a directory below /", src)
	}
	root, err := os.Stat(abs)
	if err != nil {
		return nil, 0, "", err
	}
	f, err := os.CreateTemp("", "drover-cp-*.tar")
	if err != nil {
		return nil, 0, "", err
	}
	fail := func(err error) (*os.File, int64, string, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, "", err
	}
	tw := tar.NewWriter(f)
	files, bytes := 0, int64(0)
	add := func(path, name string, fi fs.FileInfo) error {
		link := ""
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is a %s: drover cp copies regular files, directories and symbolic links", path, fi.Mode().Type())
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = name, 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		n, err := io.Copy(tw, in)
		files++
		bytes += n
		return err
	}
	if !root.IsDir() {
		err = add(abs, top, root)
	} else {
		err = filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if path == abs {
				fi, err = root, nil
			}
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(abs, path)
			name := top
			if rel != "." {
				name = top + "/" + filepath.ToSlash(rel)
			}
			return add(path, name, fi)
		})
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return fail(err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fail(err)
	}
	what := fmt.Sprintf("%d files", files)
	if files == 1 {
		what = "1 file"
	}
	return f, size, what + ", " + server.FormatSize(bytes), nil
}

// parseSize reads a size such as 64MiB, 512KiB, 1GiB or a number of bytes.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil || n <= 0 || n > (1<<40)/u.mult {
			break
		}
		return n * u.mult, nil
	}
	return 0, fmt.Errorf("size %q: give a number of bytes or KiB, MiB, GiB, such as 64MiB", s)
}

// gatherer prints a run's results as they come (or collated at the end)
// and sums them up.
type gatherer struct {
	out, errw io.Writer
	collate   bool
	copying   bool
	// expected are the nodes the start lines named, by site.
	expected map[string][]string
	counted  int
	results  []api.RunLine
	ended    bool
}

func newGatherer(cmd *cobra.Command, collate, copying bool) *gatherer {
	return &gatherer{out: cmd.OutOrStdout(), errw: cmd.ErrOrStderr(), collate: collate, copying: copying, expected: map[string][]string{}}
}

func nodeLabel(site, node string) string { return noderange.Node{Site: site, Name: node}.String() }

func (g *gatherer) line(l api.RunLine) error {
	switch l.Type {
	case api.RunLineStart:
		g.counted += l.Count
		if names, err := noderange.Expand(l.Nodes); err == nil {
			g.expected[l.Site] = append(g.expected[l.Site], names...)
		}
	case api.RunLineResult:
		g.results = append(g.results, l)
		if !g.collate {
			g.print(nodeLabel(l.Site, l.Node), l)
		}
	case api.RunLineEnd:
		g.ended = true
	}
	return nil
}

// print writes one node's (or one collated group's) output and status.
func (g *gatherer) print(label string, l api.RunLine) {
	for _, line := range outputLines(l.Stdout) {
		fmt.Fprintf(g.out, "%s: %s\n", label, line)
	}
	for _, line := range outputLines(l.Stderr) {
		fmt.Fprintf(g.errw, "%s: %s\n", label, line)
	}
	if l.StdoutDropped > 0 {
		fmt.Fprintf(g.errw, "%s: [stdout cut at 1 MiB: %d more bytes not shown]\n", label, l.StdoutDropped)
	}
	if l.StderrDropped > 0 {
		fmt.Fprintf(g.errw, "%s: [stderr cut at 1 MiB: %d more bytes not shown]\n", label, l.StderrDropped)
	}
	if !l.OK() {
		fmt.Fprintf(g.errw, "%s: %s\n", label, describe(l))
	}
}

func outputLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// describe says how a node's command ended, when not with exit code 0.
func describe(l api.RunLine) string {
	switch {
	case l.Error == "" && l.Exit != nil:
		return fmt.Sprintf("exited with exit code %d", *l.Exit)
	case l.Detail != "":
		return l.Error + ": " + l.Detail
	}
	return l.Error
}

// category is what the summary groups a failed node under.
func category(l api.RunLine) string {
	if l.Error == "" && l.Exit != nil {
		return fmt.Sprintf("exit code %d", *l.Exit)
	}
	return l.Error
}

// finish prints the collated output, the summary of failures, and gives
// the command's outcome.
func (g *gatherer) finish(ctx context.Context, verb string, err error) error {
	interrupted := ctx.Err() != nil
	cut := !interrupted && errors.Is(err, io.ErrUnexpectedEOF)
	if err != nil && !interrupted && !cut {
		return err
	}
	if g.collate {
		g.printCollated()
	}
	failed := map[string]*noderange.NodeSet{}
	done := map[noderange.Node]bool{}
	bad := 0
	for _, l := range g.results {
		n := noderange.Node{Site: l.Site, Name: l.Node}
		done[n] = true
		if l.OK() {
			continue
		}
		bad++
		c := category(l)
		if failed[c] == nil {
			failed[c] = noderange.NewNodeSet()
		}
		failed[c].Add(n)
	}
	missing := noderange.NewNodeSet()
	for site, names := range g.expected {
		for _, name := range names {
			if n := (noderange.Node{Site: site, Name: name}); !done[n] {
				missing.Add(n)
			}
		}
	}
	total := max(g.counted, len(g.results))
	var parts []string
	cats := make([]string, 0, len(failed))
	for c := range failed {
		cats = append(cats, c)
	}
	slices.Sort(cats)
	for _, c := range cats {
		parts = append(parts, c+": "+failed[c].Fold())
	}
	noResult := total - len(g.results)
	if noResult > 0 {
		what := fmt.Sprintf("%d nodes", noResult)
		if missing.Len() == noResult {
			what = missing.Fold()
		}
		parts = append(parts, "no result: "+what)
	}
	summary := strings.Join(parts, "; ")
	switch {
	case interrupted:
		return exitError{code: 130, msg: fmt.Sprintf("%s interrupted: %d of %d nodes did not succeed: %s", verb, bad+noResult, total, summary)}
	case cut:
		return exitError{code: 1, msg: fmt.Sprintf("%s: the server's answer was cut: %d of %d nodes did not succeed: %s", verb, bad+noResult, total, summary)}
	case bad > 0:
		return exitError{code: 1, msg: fmt.Sprintf("%s: %d of %d nodes did not succeed: %s", verb, bad, total, summary)}
	}
	return nil
}

// printCollated prints each distinct outcome once, under the folded set of
// its nodes, in the order of each group's first node.
func (g *gatherer) printCollated() {
	type group struct {
		nodes *noderange.NodeSet
		first noderange.Node
		line  api.RunLine
	}
	groups := map[string]*group{}
	for _, l := range g.results {
		exit := "-"
		if l.Exit != nil {
			exit = fmt.Sprint(*l.Exit)
		}
		key := strings.Join([]string{exit, l.Error, l.Detail, fmt.Sprint(l.StdoutDropped, l.StderrDropped), l.Stdout, l.Stderr}, "\x00")
		n := noderange.Node{Site: l.Site, Name: l.Node}
		gr := groups[key]
		if gr == nil {
			gr = &group{nodes: noderange.NewNodeSet(), first: n, line: l}
			groups[key] = gr
		}
		gr.nodes.Add(n)
		if noderange.Compare(n, gr.first) < 0 {
			gr.first = n
		}
	}
	list := make([]*group, 0, len(groups))
	for _, gr := range groups {
		list = append(list, gr)
	}
	slices.SortFunc(list, func(a, b *group) int { return noderange.Compare(a.first, b.first) })
	for _, gr := range list {
		g.print(gr.nodes.Fold(), gr.line)
	}
}
