package lab

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
)

//go:embed content.yaml
var labContent []byte

// Limits of up's flags.
const (
	MaxSites    = 64
	MaxMachines = 1000
)

// Options configure Up.
type Options struct {
	Dir      string
	Sites    int
	Machines int
	// Latency is added by Toxiproxy each way between the manager and
	// every site.
	Latency time.Duration
	// NoNetns keeps the sites on loopback even as root.
	NoNetns bool
	// Force removes a lab that exists in Dir first.
	Force bool
	// Self is how the printed commands name this binary.
	Self string
}

// ErrInterrupted is returned by Up when ctx ended (Ctrl-C) and what was
// built was removed.
var ErrInterrupted = errors.New("interrupted: everything the lab had started was stopped and removed")

// siteNames names the sites: the first four as the docs' examples, then
// site5, site6...
func siteNames(n int) []string {
	base := []string{"east", "west", "north", "south"}
	out := make([]string, n)
	for i := range out {
		if i < len(base) {
			out[i] = base[i]
		} else {
			out[i] = fmt.Sprintf("site%d", i+1)
		}
	}
	return out
}

// progress prints the steps of up with the time since it began.
type progress struct {
	out   io.Writer
	start time.Time
	mu    sync.Mutex
}

func (p *progress) step(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "[%5.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// checkOptions refuses bad flags before anything is made.
func checkOptions(o *Options) error {
	if o.Sites < 1 || o.Sites > MaxSites {
		return fmt.Errorf("--sites %d: give 1 to %d sites", o.Sites, MaxSites)
	}
	if o.Machines < 1 || o.Machines > MaxMachines {
		return fmt.Errorf("--machines %d: give 1 to %d machines per site", o.Machines, MaxMachines)
	}
	if err := checkLatency(o.Latency); err != nil {
		return fmt.Errorf("--%w", err)
	}
	if o.Dir == "" {
		o.Dir = DefaultDir()
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = abs
	if o.Self == "" {
		o.Self = "drover"
	}
	return nil
}

// existing says why up cannot build in dir, or nil when it can.
func existing(dir string) (*State, error) {
	st, err := Load(dir)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, ErrNoLab) {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s exists, is not empty and holds no lab: give a new or empty directory with --dir", dir)
	}
	return nil, nil
}

// Up builds a lab and reports its progress to out. When ctx ends it
// removes everything it made and returns ErrInterrupted; when a step
// fails it stops what it started and keeps the logs.
func Up(ctx context.Context, o Options, out io.Writer) (_ *State, err error) {
	if err := checkOptions(&o); err != nil {
		return nil, err
	}
	prev, err := existing(o.Dir)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		if !o.Force {
			return nil, prev.existsError(o.Self)
		}
		fmt.Fprintf(out, "removing the lab in %s (--force)\n", o.Dir)
		if err := Down(prev.Dir, out); err != nil {
			return nil, err
		}
	}
	netns := os.Geteuid() == 0 && !o.NoNetns
	if netns {
		if err := checkNetnsMode(); err != nil {
			return nil, err
		}
	}
	created := false
	if _, statErr := os.Stat(o.Dir); errors.Is(statErr, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	st := &State{
		Dir: o.Dir, CreatedDir: created, ID: labID(o.Dir), Phase: PhaseBuilding, Started: time.Now().UTC(),
		Netns: netns, Latency: o.Latency.String(), Machines: o.Machines,
		Manager: Endpoint{Name: "manager", DataDir: filepath.Join(o.Dir, "manager")},
		path:    filepath.Join(o.Dir, stateFile),
	}
	st.Manager.CAFile = filepath.Join(st.Manager.DataDir, "tls", "ca.crt")
	for i, name := range siteNames(o.Sites) {
		s := Site{Endpoint: Endpoint{Name: name, DataDir: filepath.Join(o.Dir, "sites", name, "server")}}
		s.CAFile = filepath.Join(s.DataDir, "tls", "ca.crt")
		if netns {
			s.Netns, s.HostIf = netnsName(st.ID, name), fmt.Sprintf("%s%d", hostIfPrefix(st.ID), i+1)
			s.HostAddr, s.SiteAddr = siteAddrs(i + 1)
		}
		st.Sites = append(st.Sites, s)
	}
	if err := st.update(func() {}); err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			fmt.Fprintln(out, "interrupted: stopping and removing what was built")
			if derr := Down(st.Dir, out); derr != nil {
				err = fmt.Errorf("%w; removing it: %v", ErrInterrupted, derr)
				return
			}
			err = ErrInterrupted
			return
		}
		_, perr := stopProcs(st.Procs, st.Dir, 10*time.Second)
		_, nerr := removeNetworks(st.ID, nil)
		if !netns {
			nerr = nil
		}
		_ = st.update(func() { st.Phase = PhaseFailed })
		cleanup := "the lab's processes and namespaces were stopped and removed"
		if cerr := errors.Join(perr, nerr); cerr != nil {
			cleanup = fmt.Sprintf("removing the lab's processes and namespaces failed too: %v", cerr)
		}
		err = fmt.Errorf("%w\n%s; its logs are in %s (%s lab down%s removes them)", err, cleanup, filepath.Join(st.Dir, "logs"), o.Self, st.dirFlag())
	}()
	b := &builder{st: st, o: o, p: &progress{out: out, start: time.Now()}}
	if err := b.build(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return st, nil
}

// existsError says that a lab is in the way, and what to do.
func (s *State) existsError(self string) error {
	dirFlag := s.dirFlag()
	switch s.Phase {
	case PhaseReady:
		return fmt.Errorf("a lab already runs in %s (manager %s, %d sites × %d machines, up since %s): use it (eval \"$(%s lab env%s)\"), remove it (%s lab down%s), or rebuild it with --force",
			s.Dir, s.Manager.URL, len(s.Sites), s.Machines, s.Started.Local().Format(time.Kitchen), self, dirFlag, self, dirFlag)
	case PhaseFailed:
		return fmt.Errorf("%s holds the logs of a lab that failed to build: remove them (%s lab down%s) or rebuild with --force", s.Dir, self, dirFlag)
	default:
		return fmt.Errorf("a lab is being built in %s, or its build was killed: see %s lab status%s; remove it with %s lab down%s, or rebuild with --force", s.Dir, self, dirFlag, self, dirFlag)
	}
}

// dirFlag is " --dir DIR" unless DIR is the default.
func (s *State) dirFlag() string {
	if def, err := filepath.Abs(DefaultDir()); err == nil && def == s.Dir {
		return ""
	}
	return " --dir " + shellQuote(s.Dir)
}

// builder carries up's work.
type builder struct {
	st *State
	o  Options
	p  *progress

	manager *api.Client
	sites   []*api.Client
}

func (b *builder) build(ctx context.Context) error {
	st, o := b.st, b.o
	mode := "sites on loopback ports"
	if st.Netns {
		mode = "each site in its own network namespace"
	}
	lat := "no added latency"
	if o.Latency > 0 {
		lat = fmt.Sprintf("%s latency each way (%s round trip) between the manager and each site", o.Latency, 2*o.Latency)
	}
	b.p.step("building a lab in %s: a manager and %d sites × %d machines, %s, %s", st.Dir, o.Sites, o.Machines, lat, mode)

	// Endpoints: the manager and every site, as drover server processes.
	mgr, err := st.startProc("manager", "", nil, "server", "--data-dir", st.Manager.DataDir, "--listen", "127.0.0.1:0", "--log-level", "warn")
	if err != nil {
		return err
	}
	servers := []*Proc{mgr}
	for i := range st.Sites {
		s := &st.Sites[i]
		listen := "127.0.0.1:0"
		args := []string{"server", "--data-dir", s.DataDir, "--log-level", "warn"}
		if st.Netns {
			if err := setupSiteNetns(s.Netns, s.HostIf, s.HostAddr, s.SiteAddr); err != nil {
				return fmt.Errorf("site %s's network namespace: %w", s.Name, err)
			}
			listen = fmt.Sprintf("%s:%d", s.SiteAddr, sitePort)
			args = append(args, "--tls-san", s.SiteAddr)
		}
		p, err := st.startProc("site-"+s.Name, s.Netns, nil, append(args, "--listen", listen)...)
		if err != nil {
			return err
		}
		servers = append(servers, p)
	}
	urls := make([]string, len(servers))
	if err := parallel(len(servers), func(i int) error {
		ca := st.Manager.CAFile
		if i > 0 {
			ca = st.Sites[i-1].CAFile
		}
		u, err := st.waitServer(ctx, servers[i], ca)
		urls[i] = u
		return err
	}); err != nil {
		return err
	}
	if err := st.update(func() {
		st.Manager.URL = urls[0]
		for i := range st.Sites {
			st.Sites[i].URL = urls[i+1]
			st.Sites[i].Upstream = strings.TrimPrefix(urls[i+1], "https://")
		}
	}); err != nil {
		return err
	}
	where := make([]string, len(st.Sites))
	for i, s := range st.Sites {
		where[i] = s.Name + " " + s.URL
	}
	b.p.step("started the manager (%s) and %d site endpoints: %s", st.Manager.URL, len(st.Sites), strings.Join(where, ", "))

	// Toxiproxy between the manager and each site.
	readyFile := filepath.Join(st.Dir, "proxy.json")
	args := []string{"lab", "proxy", "--latency", o.Latency.String(), "--ready-file", readyFile, "--log-level", "warn"}
	for _, s := range st.Sites {
		args = append(args, "--site", s.Name+"="+s.Upstream)
	}
	proxy, err := st.startProc("proxy", "", nil, args...)
	if err != nil {
		return err
	}
	links, err := st.waitReadyFile(ctx, proxy, readyFile)
	if err != nil {
		return err
	}
	if err := st.update(func() {
		for i := range st.Sites {
			st.Sites[i].ProxyURL = "https://" + links[st.Sites[i].Name]
		}
	}); err != nil {
		return err
	}
	b.p.step("Toxiproxy links (+%s each way): %s", o.Latency, b.linkList())

	// Each site: content, its machines' agents, their labels and params.
	b.sites = make([]*api.Client, len(st.Sites))
	if err := parallel(len(st.Sites), func(i int) error { return b.startSite(ctx, i) }); err != nil {
		return err
	}
	total := len(st.Sites) * o.Machines
	if err := b.waitCount(ctx, "machines discovered (agents registered with their sites)", total, 2*time.Minute, func() (int, error) {
		n := 0
		for _, c := range b.sites {
			l, err := c.ListView(ctx, "machines", "", api.ViewSummary)
			if err != nil {
				return n, err
			}
			n += len(l.Items)
		}
		return n, nil
	}); err != nil {
		return err
	}
	if err := parallel(len(st.Sites), func(i int) error { return b.labelMachines(ctx, i) }); err != nil {
		return err
	}
	b.p.step("labelled the machines (role=compute, every fifth role=storage; rack) and gave each its own config/root")

	// The manager: register every site with its own admin password.
	if b.manager, err = adminClient(ctx, st.Manager); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := parallel(len(st.Sites), func(i int) error { return b.register(ctx, st.Sites[i]) }); err != nil {
		return err
	}
	if err := b.waitCount(ctx, "machines mirrored by the manager", total, 2*time.Minute, func() (int, error) {
		l, err := b.manager.ListView(ctx, "machines", "", api.ViewSummary)
		if err != nil {
			return 0, err
		}
		return len(l.Items), nil
	}); err != nil {
		return err
	}

	// Commission everything through the manager.
	resp, err := b.manager.Action(ctx, api.ActionCommission, "all%all", "")
	if err != nil {
		return fmt.Errorf("commission 'all%%all' on the manager: %w", err)
	}
	refused := 0
	for _, r := range resp.Results {
		if r.Error != "" {
			refused++
			b.p.step("%s%%%s: %s", r.Site, r.Machine, r.Error)
		}
	}
	if refused > 0 {
		return fmt.Errorf("commission was refused on %d machines", refused)
	}
	b.p.step("commission 'all%%all' sent to the manager, which forwarded it to each site: %d runs started", len(resp.Results))
	var broken []string
	if err := b.waitCount(ctx, "machines commissioned (ready)", total, 10*time.Minute, func() (int, error) {
		ms, err := b.managerMachines(ctx)
		if err != nil {
			return 0, err
		}
		ready := 0
		broken = broken[:0]
		for _, m := range ms {
			switch m.Status.State {
			case api.StateReady:
				ready++
			case api.StateBroken:
				broken = append(broken, m.Site+"%"+m.Name)
			}
		}
		if len(broken) > 0 && ready+len(broken) == total {
			return total, nil
		}
		return ready, nil
	}); err != nil {
		return err
	}
	st.BuildSeconds = time.Since(b.p.start).Seconds()
	if err := st.update(func() { st.Phase = PhaseReady }); err != nil {
		return err
	}
	b.summary(b.p.out, broken)
	if len(broken) > 0 {
		return &BrokenError{Machines: broken}
	}
	return nil
}

// BrokenError says the lab is up but commission failed on some machines.
type BrokenError struct{ Machines []string }

func (e *BrokenError) Error() string {
	return fmt.Sprintf("the lab is up, but commission failed on %d machines (%s): see drover get runs, drover logs", len(e.Machines), strings.Join(e.Machines, ", "))
}

// register adds a site to the manager with the site's admin password,
// which the manager uses once and does not keep.
func (b *builder) register(ctx context.Context, s Site) error {
	password, err := adminPassword(s.Endpoint)
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		return err
	}
	site, err := b.manager.AddSite(ctx, api.SiteAddRequest{Name: s.Name, URL: s.ProxyURL, CACert: string(ca), Username: "admin", Password: password})
	if err != nil {
		return fmt.Errorf("registering site %s with the manager: %w", s.Name, err)
	}
	b.p.step("registered site %s with the manager at %s (user %s; the site's admin password was not kept)", s.Name, site.URL, site.ManagementUser)
	return nil
}

func (b *builder) linkList() string {
	var l []string
	for _, s := range b.st.Sites {
		l = append(l, fmt.Sprintf("%s %s -> %s", s.Name, strings.TrimPrefix(s.ProxyURL, "https://"), s.Upstream))
	}
	return strings.Join(l, ", ")
}

// startSite applies the lab's content to site i and starts its agents.
func (b *builder) startSite(ctx context.Context, i int) error {
	s := b.st.Sites[i]
	c, err := adminClient(ctx, s.Endpoint)
	if err != nil {
		return fmt.Errorf("site %s: %w", s.Name, err)
	}
	b.sites[i] = c
	docs, err := Content()
	if err != nil {
		return err
	}
	if _, err := c.Apply(ctx, docs); err != nil {
		return fmt.Errorf("site %s: applying the lab's content: %w", s.Name, err)
	}
	jt, err := c.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		return fmt.Errorf("site %s: join token: %w", s.Name, err)
	}
	_, err = b.st.startProc("agents-"+s.Name, s.Netns, []string{"DROVER_JOIN_TOKEN=" + jt.Token},
		"lab", "agents", "--endpoint", s.URL, "--ca-cert", s.CAFile, "--machines", fmt.Sprint(b.o.Machines),
		"--state-dir", b.machinesDir(s.Name), "--seed", fmt.Sprint((i+1)*100000), "--log-level", "warn")
	return err
}

func (b *builder) machinesDir(site string) string {
	return filepath.Join(b.st.Dir, "sites", site, "machines")
}

// labelMachines gives site i's machines their labels, and each a
// config/root of its own: the machines share this host, and config-push
// writes the files it manages there.
func (b *builder) labelMachines(ctx context.Context, i int) error {
	s := b.st.Sites[i]
	objs := make([]api.Object, 0, b.o.Machines)
	for n := 1; n <= b.o.Machines; n++ {
		name := fmt.Sprintf("n%d", n)
		role := "compute"
		if n%5 == 0 {
			role = "storage"
		}
		root, _ := json.Marshal(filepath.Join(b.machinesDir(s.Name), name, "etc", "drover"))
		objs = append(objs, &api.Machine{
			Meta:   api.Meta{Kind: api.KindMachine, Name: name, Labels: map[string]string{"role": role, "rack": fmt.Sprintf("r%d", (n-1)/10+1)}},
			Params: map[string]json.RawMessage{"config/root": root},
		})
	}
	if _, err := b.sites[i].ApplyObjects(ctx, objs...); err != nil {
		return fmt.Errorf("site %s: labelling machines: %w", s.Name, err)
	}
	return nil
}

func (b *builder) managerMachines(ctx context.Context) ([]api.Machine, error) {
	l, err := b.manager.ListView(ctx, "machines", "", api.ViewSummary)
	if err != nil {
		return nil, err
	}
	out := make([]api.Machine, 0, len(l.Items))
	for _, raw := range l.Items {
		var m api.Machine
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// waitCount polls count until it reaches total, printing the count when
// it changes (at most once a second).
func (b *builder) waitCount(ctx context.Context, what string, total int, limit time.Duration, count func() (int, error)) error {
	deadline := time.Now().Add(limit)
	last, lastPrint := -1, time.Time{}
	var lastErr error
	for {
		n, err := count()
		if err != nil {
			lastErr = err
		}
		if n >= total {
			b.p.step("%d/%d %s", n, total, what)
			return nil
		}
		if n != last && time.Since(lastPrint) >= time.Second {
			b.p.step("%d/%d %s", n, total, what)
			last, lastPrint = n, time.Now()
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("%d/%d %s after %s: %w", n, total, what, limit, lastErr)
			}
			return fmt.Errorf("%d/%d %s after %s (see the logs in %s)", n, total, what, limit, filepath.Join(b.st.Dir, "logs"))
		}
		if dead := b.st.deadProcs(); len(dead) > 0 {
			return fmt.Errorf("%s ended%s: %s", dead[0].Name, b.st.exitOf(dead[0].Name), tail(dead[0].Log))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// deadProcs lists the lab's processes that are not running.
func (s *State) deadProcs() []Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Proc
	for _, p := range s.Procs {
		if !p.Alive() {
			out = append(out, p)
		}
	}
	return out
}

// parallel runs fn(0..n-1) at once and joins their errors.
func parallel(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

var listeningRE = regexp.MustCompile(`drover server listening on (https://\S+)`)

// waitServer waits until a server process says where it listens and
// answers there; it returns its URL.
func (s *State) waitServer(ctx context.Context, p *Proc, caFile string) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		if !p.Alive() {
			return "", fmt.Errorf("%s ended%s: %s", p.Name, s.exitOf(p.Name), tail(p.Log))
		}
		if b, err := os.ReadFile(p.Log); err == nil {
			if m := listeningRE.FindSubmatch(b); m != nil {
				if c, err := api.NewClientFromFile(string(m[1]), caFile, ""); err == nil {
					var h map[string]string
					if c.Do(ctx, "GET", "/healthz", nil, &h) == nil {
						return string(m[1]), nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not answer within a minute: %s", p.Name, tail(p.Log))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitReadyFile waits for the proxy's listen addresses.
func (s *State) waitReadyFile(ctx context.Context, p *Proc, path string) (map[string]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			var links map[string]string
			if err := json.Unmarshal(b, &links); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return links, nil
		}
		if !p.Alive() {
			return nil, fmt.Errorf("%s ended%s: %s", p.Name, s.exitOf(p.Name), tail(p.Log))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not start its links within 30s: %s", p.Name, tail(p.Log))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// adminPassword reads the password an endpoint generated for admin at
// its first start.
func adminPassword(e Endpoint) (string, error) {
	b, err := os.ReadFile(filepath.Join(e.DataDir, "initial-admin-password"))
	if err != nil {
		return "", fmt.Errorf("%s's admin password: %w", e.Name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// adminClient logs in to an endpoint as admin.
func adminClient(ctx context.Context, e Endpoint) (*api.Client, error) {
	return loginAdmin(ctx, e, "1h")
}

func loginAdmin(ctx context.Context, e Endpoint, ttl string) (*api.Client, error) {
	password, err := adminPassword(e)
	if err != nil {
		return nil, err
	}
	c, err := api.NewClientFromFile(e.URL, e.CAFile, "")
	if err != nil {
		return nil, err
	}
	l, err := c.Login(ctx, "admin", password, ttl)
	if err != nil {
		return nil, fmt.Errorf("logging in to %s (%s) as admin: %w", e.Name, e.URL, err)
	}
	c.Token = l.Token
	return c, nil
}

// Content returns the lab's content documents.
func Content() ([]json.RawMessage, error) { return model.YAMLDocuments(labContent) }

// shellQuote quotes s for sh when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=%@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
