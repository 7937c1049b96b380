// Command agents measures one drover server against many simulated agents
// in one process speaking the real protocol over HTTPS: all register, all
// run a 3-task no-op workflow. It prints the total time, the server's peak
// RSS and `get machines` latency while the work runs.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/bench/internal/fetch"
	"github.com/drover-project/drover/internal/agent"
	"github.com/drover-project/drover/internal/inventory"
)

const content = `[
{"kind":"Task","name":"noop-1","script":"true"},
{"kind":"Task","name":"noop-2","script":"true"},
{"kind":"Task","name":"noop-3","script":"true"},
{"kind":"Workflow","name":"noop","tasks":["noop-1","noop-2","noop-3"]},
{"kind":"Profile","name":"global","params":{"commission/workflow":"noop"}}
]`

func main() {
	if os.Getenv("DROVER_BENCH_SAMPLER") == "1" {
		if err := runSampler(); err != nil {
			fmt.Fprintln(os.Stderr, "sampler:", err)
			os.Exit(1)
		}
		return
	}
	n := flag.Int("agents", 10000, "simulated agents")
	maxJobs := flag.Int("max-concurrent-jobs", 10, "the server's global job limit")
	bin := flag.String("drover", os.Getenv("DROVER_BIN"), "drover binary")
	heapProfile = flag.String("heap-profile", "", "write the server's heap profile at the end to this file")
	serverArgs = flag.String("server-args", "", "extra flags for drover server, space-separated (e.g. \"--gc-percent 100\")")
	cpuProfile = flag.String("cpu-profile", "", "write a 20 s CPU profile of the server, taken while the workflow runs, to this file")
	keepData = flag.Bool("keep-data", false, "keep the server's data dir (to look at the store afterwards)")
	goroutineProfile = flag.String("goroutine-profile", "", "write the server's goroutines (debug=1 text) at the end to this file")
	flag.Parse()
	if *bin == "" {
		*bin = "bin/drover"
	}
	if err := run(*bin, *n, *maxJobs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var heapProfile, goroutineProfile, serverArgs *string
var keepData *bool
var cpuProfile *string

// phaseMax is the highest RSS sampled since the last phase began.
var phaseMax atomic.Int64

func phasePeak(kb int64) {
	for {
		cur := phaseMax.Load()
		if kb <= cur || phaseMax.CompareAndSwap(cur, kb) {
			return
		}
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func run(bin string, n, maxJobs int) error {
	dir, err := os.MkdirTemp("", "drover-bench-")
	if err != nil {
		return err
	}
	if *keepData {
		defer fmt.Println("  data kept in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	const password = "bench-admin-password"
	logf, _ := os.Create(filepath.Join(dir, "server.log"))
	args := []string{"server", "--data-dir", filepath.Join(dir, "server"), "--listen", addr,
		"--max-concurrent-jobs", strconv.Itoa(maxJobs), "--log-level", "warn"}
	args = append(args, strings.Fields(*serverArgs)...)
	srv := exec.Command(bin, args...)
	srv.Env = append(os.Environ(), "DROVER_ADMIN_PASSWORD="+password)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	}()
	caFile := filepath.Join(dir, "server", "tls", "ca.crt")
	endpoint := "https://" + addr
	ctx := context.Background()
	var c *api.Client
	for i := 0; ; i++ {
		if ca, err := os.ReadFile(caFile); err == nil {
			if c, err = api.NewClient(endpoint, ca, ""); err == nil {
				if l, err := c.Login(ctx, "admin", password, ""); err == nil {
					c.Token = l.Token
					break
				}
			}
		}
		if i > 300 {
			return fmt.Errorf("server did not start (see %s)", filepath.Join(dir, "server.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	var docs []json.RawMessage
	if err := json.Unmarshal([]byte(content), &docs); err != nil {
		return err
	}
	if _, err := c.Apply(ctx, docs); err != nil {
		return err
	}
	jt, err := c.CreateJoinToken(ctx, "2h", nil)
	if err != nil {
		return err
	}
	ca, _ := os.ReadFile(caFile)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var jobs atomic.Int64
	executor := agent.FuncExecutor(func(ctx context.Context, req agent.ExecRequest) (int, error) {
		jobs.Add(1)
		return 0, nil
	})

	fmt.Printf("drover server vs %d simulated agents (one process; each agent its own HTTPS connection), --max-concurrent-jobs %d %s, %d cores\n", n, maxJobs, *serverArgs, numCPU())
	start := time.Now()
	agentCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("sim%05d", i)
		seed := i
		a, err := agent.New(agent.Config{
			Endpoint: endpoint, CAPEM: ca, JoinToken: jt.Token,
			StateDir: filepath.Join(dir, "agents", name), Name: name,
			Executor:  executor,
			Inventory: func(context.Context) (api.Inventory, error) { return inventory.Simulated(name, seed), nil },
			Logger:    quiet,
		})
		if err != nil {
			stop()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(agentCtx); err != nil && agentCtx.Err() == nil {
				fmt.Fprintf(os.Stderr, "agent %s stopped: %v\n", name, err)
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()

	// Sample `get machines` latency and the server's memory all along.
	var latMu sync.Mutex
	// views: "table" is what `drover get machines` asks for (the rows it
	// prints, made by the server); "summary" is the objects without
	// inventories; "full" is every field.
	views := []string{api.ViewTable, api.ViewSummary, api.ViewFull}
	lats := map[string][]time.Duration{}
	var peakRSS atomic.Int64
	// `get machines` is timed from its own process, like a user's CLI, on
	// its own connection: timed from this process it would measure how
	// long 10,000 simulated agents make the bench wait for the CPU, and on
	// c's connection it would queue behind the progress polling.
	var settledPhase atomic.Bool
	settled := map[string][]time.Duration{}
	listBytes := map[string]int64{}
	samplerCmd := exec.Command(os.Args[0])
	samplerCmd.Env = append(os.Environ(), "DROVER_BENCH_SAMPLER=1", "DROVER_ENDPOINT="+endpoint, "DROVER_CA_CERT="+caFile, "DROVER_TOKEN="+c.Token)
	samplerIn, err := samplerCmd.StdinPipe()
	if err != nil {
		return err
	}
	samplerOut, err := samplerCmd.StdoutPipe()
	if err != nil {
		return err
	}
	samplerCmd.Stderr = os.Stderr
	if err := samplerCmd.Start(); err != nil {
		return err
	}
	defer func() {
		samplerIn.Close()
		_ = samplerCmd.Wait()
	}()
	samplesDone := make(chan struct{})
	go func() {
		defer close(samplesDone)
		sc := bufio.NewScanner(samplerOut)
		for sc.Scan() {
			var view string
			var ns, size int64
			if _, err := fmt.Sscan(sc.Text(), &view, &ns, &size); err != nil {
				continue
			}
			latMu.Lock()
			if settledPhase.Load() {
				settled[view] = append(settled[view], time.Duration(ns))
			} else {
				lats[view] = append(lats[view], time.Duration(ns))
			}
			listBytes[view] = size
			latMu.Unlock()
		}
	}()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for sampleCtx.Err() == nil {
			if rss := rssKB(srv.Process.Pid); rss > peakRSS.Load() {
				peakRSS.Store(rss)
			}
			phasePeak(rssKB(srv.Process.Pid))
			time.Sleep(200 * time.Millisecond)
		}
	}()

	count := func(state string) (int, int, error) {
		t, err := c.Table(ctx, "machines", "")
		if err != nil {
			return 0, 0, err
		}
		col := slices.IndexFunc(t.Columns, func(c api.TableColumn) bool { return c.Name == "STATE" })
		in := 0
		for _, row := range t.Rows {
			if col >= 0 && col < len(row) && row[col] == state {
				in++
			}
		}
		return len(t.Rows), in, nil
	}
	for {
		total, _, err := count("")
		if err == nil && total == n {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	registered := time.Since(start)
	fmt.Printf("  all %d registered in %s; server RSS peak so far %.0f MiB, now %.0f MiB\n", n, registered.Round(time.Millisecond), float64(phaseMax.Swap(0))/1024, float64(rssKB(srv.Process.Pid))/1024)
	t1 := time.Now()
	resp, err := c.Action(ctx, api.ActionCommission, "all", "")
	if err != nil {
		return err
	}
	started := 0
	for _, r := range resp.Results {
		if r.Error == "" {
			started++
		}
	}
	fmt.Printf("  commission started on %d machines in %s\n", started, time.Since(t1).Round(time.Millisecond))
	if *cpuProfile != "" {
		go func() {
			if err := fetch.ToFile(ctx, c, "/debug/pprof/profile?seconds=20", *cpuProfile); err != nil {
				fmt.Println("  cpu profile:", err)
			}
		}()
	}
	last := time.Now()
	for {
		_, ready, err := count("ready")
		if err == nil && ready == n {
			break
		}
		if time.Since(last) > 10*time.Second {
			fmt.Printf("  ... %d/%d ready, %d jobs run, %s\n", ready, n, jobs.Load(), time.Since(start).Round(time.Second))
			last = time.Now()
		}
		if time.Since(start) > 30*time.Minute {
			return fmt.Errorf("not done after 30 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
	total := time.Since(start)
	fmt.Printf("  server RSS peak while the workflow ran %.0f MiB, now %.0f MiB\n", float64(phaseMax.Swap(0))/1024, float64(rssKB(srv.Process.Pid))/1024)
	stopSampling()
	sampling.Wait()
	// Latency on the settled server, apart from latency under load.
	settledPhase.Store(true)
	for {
		latMu.Lock()
		enough := len(settled[api.ViewTable]) >= 50 && len(settled[api.ViewSummary]) >= 50 && len(settled[api.ViewFull]) >= 50
		latMu.Unlock()
		if enough {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	samplerIn.Close()
	<-samplesDone
	if rss := rssKB(srv.Process.Pid); rss > peakRSS.Load() {
		peakRSS.Store(rss)
	}
	fmt.Printf("  server memory at the end: RSS %.0f MiB = anonymous %.0f MiB (Go heap, stacks) + file %.0f MiB (the store's memory-mapped database)\n",
		float64(rssKB(srv.Process.Pid))/1024, float64(statusKB(srv.Process.Pid, "RssAnon"))/1024, float64(statusKB(srv.Process.Pid, "RssFile"))/1024)
	hwm := hwmKB(srv.Process.Pid)
	if hwm > peakRSS.Load() {
		peakRSS.Store(hwm)
	}
	if m, err := metrics(ctx, c, "drover_go_heap_bytes", "drover_go_stack_bytes", "drover_go_goroutines", "drover_store_revision"); err == nil {
		fmt.Printf("  server at the end: %s\n", m)
	}
	if *goroutineProfile != "" {
		if err := fetch.ToFile(ctx, c, "/debug/pprof/goroutine?debug=1", *goroutineProfile); err != nil {
			fmt.Println("  goroutine profile:", err)
		} else {
			fmt.Println("  goroutine profile written to", *goroutineProfile)
		}
	}
	if *heapProfile != "" {
		if err := fetch.ToFile(ctx, c, "/debug/pprof/heap", *heapProfile); err != nil {
			fmt.Println("  heap profile:", err)
		} else {
			fmt.Println("  heap profile written to", *heapProfile)
		}
	}
	pct := func(ds []time.Duration, q float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return ds[int(q*float64(len(ds)-1))].Round(100 * time.Microsecond)
	}
	fmt.Printf("  workflow (3 no-op tasks) done on all %d in %s after registration; %d jobs\n", n, (total - registered).Round(time.Millisecond), jobs.Load())
	fmt.Printf("RESULT total %s (target < 5m: %s)\n", total.Round(time.Millisecond), verdict(total < 5*time.Minute))
	fmt.Printf("RESULT peak server RSS %.0f MiB (target < 1024 MiB: %s)\n", float64(peakRSS.Load())/1024, verdict(peakRSS.Load() < 1<<20))
	for _, v := range views {
		fmt.Printf("  GET machines?view=%s (%d items, %.1f MB): while the workflow ran p50 %s p99 %s (%d requests); settled p50 %s p99 %s (%d requests)\n",
			v, n, float64(listBytes[v])/1e6, pct(lats[v], 0.5), pct(lats[v], 0.99), len(lats[v]), pct(settled[v], 0.5), pct(settled[v], 0.99), len(settled[v]))
	}
	all := append(slices.Clone(lats[api.ViewTable]), settled[api.ViewTable]...)
	fmt.Printf("RESULT drover get machines (view=table) to last byte, all %d requests during and after the run: p50 %s p99 %s (target p99 < 100ms: %s)\n", len(all), pct(all, 0.5), pct(all, 0.99), verdict(pct(all, 0.99) < 100*time.Millisecond))
	fmt.Printf("reference: Digital Rebar publishes about 1,000 machines on 4 cores and 4 GB\n")
	return nil
}

// runSampler times `get machines` in every view until its stdin closes,
// printing "view nanoseconds bytes" per request.
func runSampler() error {
	c, err := api.NewClientFromFile(os.Getenv("DROVER_ENDPOINT"), os.Getenv("DROVER_CA_CERT"), os.Getenv("DROVER_TOKEN"))
	if err != nil {
		return err
	}
	c.UseHTTP1() // as the CLI does
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	out := bufio.NewWriter(os.Stdout)
	for ctx.Err() == nil {
		for _, v := range []string{api.ViewTable, api.ViewSummary, api.ViewFull} {
			if d, size, err := getMachines(ctx, c, v); err == nil {
				fmt.Fprintln(out, v, int64(d), size)
				out.Flush()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// getMachines times GET /api/v1/objects/machines in a view to its last
// byte: the server's latency, without the client's JSON decoding.
func getMachines(ctx context.Context, c *api.Client, view string) (time.Duration, int64, error) {
	t0 := time.Now()
	body, err := c.Stream(ctx, "/api/v1/objects/machines?view="+view)
	if err != nil {
		return 0, 0, err
	}
	defer body.Close()
	n, err := io.Copy(io.Discard, body)
	if err != nil {
		return 0, 0, err
	}
	return time.Since(t0), n, nil
}

// metrics reads some gauges from the server's /metrics.
func metrics(ctx context.Context, c *api.Client, names ...string) (string, error) {
	body, err := c.Stream(ctx, "/metrics")
	if err != nil {
		return "", err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, n := range names {
			if strings.HasPrefix(line, n+" ") {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, ", "), nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func statusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

func rssKB(pid int) int64 { return statusKB(pid, "VmRSS") }
func hwmKB(pid int) int64 { return statusKB(pid, "VmHWM") }
