package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// summary prints how to use the lab once it is up.
func (b *builder) summary(out io.Writer, broken []string) {
	st, self, dir := b.st, b.o.Self, b.st.dirFlag()
	password, _ := adminPassword(st.Manager)
	total := len(st.Sites) * st.Machines
	fmt.Fprintf(out, "\nThe lab is up (built in %.1fs): a manager and %d sites with %d machines each, %d commissioned.\n\n",
		st.BuildSeconds, len(st.Sites), st.Machines, total-len(broken))
	fmt.Fprintf(out, "Manager:  %s\n          user admin, password %s (in %s)\n          CA %s\n",
		st.Manager.URL, password, filepath.Join(st.Manager.DataDir, "initial-admin-password"), st.Manager.CAFile)
	width := 0
	for _, s := range st.Sites {
		width = max(width, len(s.Name))
	}
	for _, s := range st.Sites {
		ns := ""
		if s.Netns != "" {
			ns = ", namespace " + s.Netns
		}
		fmt.Fprintf(out, "Site %-*s  %s (the manager reaches it through %s%s)\n", width, s.Name, s.URL, strings.TrimPrefix(s.ProxyURL, "https://"), ns)
	}
	first := st.Sites[0].Name
	nodes := fmt.Sprintf("%s%%n[1-%d]", first, min(st.Machines, 3))
	if st.Machines == 1 {
		nodes = first + "%n1"
	}
	// Every fifth machine is a storage node; smaller labs have none.
	role := "storage"
	if st.Machines < 5 {
		role = "compute"
	}
	fmt.Fprintf(out, `
Point the CLI at the manager (a session token, valid 24h) and try:

    eval "$(%[1]s lab env%[2]s)"
    %[1]s get sites
    %[1]s get machines
    %[1]s get machines -l site=%[3]s,role=%[5]s
    %[1]s run 'all%%all' -- uptime
    %[1]s run 'all%%@role=%[5]s' --collate -- uname -r
    %[1]s verify '%[4]s' --wait

One site directly:  eval "$(%[1]s lab env --site %[3]s%[2]s)"
Inspect or remove:  %[1]s lab status%[2]s    %[1]s lab down%[2]s
`, self, dir, first, nodes, role)
}

// Down stops every process of the lab in dir, removes its namespaces and
// links, and its directory, then checks that nothing is left.
func Down(dir string, out io.Writer) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := Load(abs)
	if err != nil {
		if !errors.Is(err, ErrNoLab) {
			return err
		}
		// No record: still end what a crashed up may have left.
		st = &State{Dir: abs, ID: labID(abs)}
		if len(strays(abs)) == 0 && len(labNamespaces(st.ID)) == 0 && len(labLinks(st.ID)) == 0 {
			return err
		}
	}
	var errs []error
	n, err := stopProcs(st.Procs, abs, 10*time.Second)
	if err != nil {
		errs = append(errs, err)
	}
	var recorded []string
	for _, s := range st.Sites {
		recorded = append(recorded, s.Netns)
	}
	var removed []string
	if len(labNamespaces(st.ID)) > 0 || len(labLinks(st.ID)) > 0 {
		if os.Geteuid() != 0 {
			errs = append(errs, fmt.Errorf("the lab's namespaces and links (%s) can only be removed as root", strings.Join(append(labNamespaces(st.ID), labLinks(st.ID)...), ", ")))
		} else {
			removed, err = removeNetworks(st.ID, recorded)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		// Keep the record and the logs: down can be run again.
		return fmt.Errorf("the lab in %s was not removed entirely: %w", abs, errors.Join(errs...))
	}
	what := fmt.Sprintf("stopped %d processes", n)
	if len(removed) > 0 {
		what += ", removed " + strings.Join(removed, ", ")
	}
	switch {
	case st.path == "":
		// Without a record, nothing on disk is known to be the lab's.
	case st.CreatedDir:
		err = os.RemoveAll(abs)
		what += ", removed " + abs
	default:
		err = removeContents(abs)
		what += ", emptied " + abs
	}
	if err != nil {
		return fmt.Errorf("removing %s: %w", abs, err)
	}
	fmt.Fprintf(out, "lab down: %s\n", what)
	return nil
}

func removeContents(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// Status prints each process of the lab (alive or not), its namespace
// and address, and the links. It returns an error when a process is not
// running.
func Status(dir string, out io.Writer) error {
	st, err := Load(dir)
	if err != nil {
		return err
	}
	mode := "loopback"
	if st.Netns {
		mode = "network namespaces"
	}
	built := ""
	if st.BuildSeconds > 0 {
		built = fmt.Sprintf(", built in %.1fs", st.BuildSeconds)
	}
	fmt.Fprintf(out, "lab in %s: %s, %d sites × %d machines, %s latency each way, %s, up %s%s\n\n",
		st.Dir, st.Phase, len(st.Sites), st.Machines, st.Latency, mode, time.Since(st.Started).Round(time.Second), built)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tPID\tSTATE\tRSS\tNETNS\tADDRESS\tLOG")
	dead := 0
	var totalKB int64
	for _, p := range st.Procs {
		state, rss := "alive", "-"
		if p.Alive() {
			if kb := rssKB(p.Pid); kb > 0 {
				rss = fmt.Sprintf("%.0fMiB", float64(kb)/1024)
				totalKB += kb
			}
		} else {
			state = "DEAD"
			dead++
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Pid, state, rss, orDash(p.Netns), orDash(st.address(p.Name)), p.Log)
	}
	fmt.Fprintf(tw, "total\t\t%d/%d\t%.0fMiB\t\t\t\n", len(st.Procs)-dead, len(st.Procs), float64(totalKB)/1024)
	tw.Flush()
	if len(st.Sites) > 0 {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SITE\tURL\tMANAGER REACHES IT AT\tLATENCY\tNETNS\tVETH (HOST END)")
		for _, s := range st.Sites {
			veth := "-"
			if s.HostIf != "" {
				state := "present"
				if _, err := os.Stat("/sys/class/net/" + s.HostIf); err != nil {
					state = "MISSING"
				}
				veth = fmt.Sprintf("%s %s (%s)", s.HostIf, s.HostAddr, state)
			}
			ns := orDash(s.Netns)
			if s.Netns != "" {
				if _, err := os.Stat("/run/netns/" + s.Netns); err != nil {
					ns += " (MISSING)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t+%s each way\t%s\t%s\n", s.Name, orDash(s.URL), orDash(s.ProxyURL), st.Latency, ns, veth)
		}
		tw.Flush()
	}
	if dead > 0 {
		return fmt.Errorf("%d of the lab's %d processes are not running (see their logs); drover lab down removes the lab", dead, len(st.Procs))
	}
	return nil
}

// address is what a process serves, for status.
func (s *State) address(proc string) string {
	switch {
	case proc == "manager":
		return s.Manager.URL
	case proc == "proxy":
		var l []string
		for _, site := range s.Sites {
			if site.ProxyURL != "" {
				l = append(l, strings.TrimPrefix(site.ProxyURL, "https://"))
			}
		}
		return strings.Join(l, ",")
	case strings.HasPrefix(proc, "site-"):
		if site, err := s.Site(strings.TrimPrefix(proc, "site-")); err == nil {
			return site.URL
		}
	case strings.HasPrefix(proc, "agents-"):
		return fmt.Sprintf("%d machines", s.Machines)
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// rssKB is a process's resident memory.
func rssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(rest, &kb)
			return kb
		}
	}
	return 0
}

// Env returns shell lines that point the CLI at the manager, or at a site
// when site is set: its URL, CA and a new admin session token (never a
// password).
func Env(ctx context.Context, dir, site, ttl string) (string, error) {
	st, err := Load(dir)
	if err != nil {
		return "", err
	}
	if st.Phase != PhaseReady {
		return "", fmt.Errorf("the lab in %s is %s, not ready: see drover lab status%s", st.Dir, st.Phase, st.dirFlag())
	}
	e := st.Manager
	if site != "" {
		s, err := st.Site(site)
		if err != nil {
			return "", err
		}
		e = s.Endpoint
	}
	c, err := loginAdmin(ctx, e, ttl)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("export DROVER_ENDPOINT=%s\nexport DROVER_CA_CERT=%s\nexport DROVER_TOKEN=%s\n# %s of the lab in %s, as admin; a session token valid %s\n",
		shellQuote(e.URL), shellQuote(e.CAFile), shellQuote(c.Token), e.Name, st.Dir, ttl), nil
}
