// Command run times `drover run all -- true` on one site with many
// simulated machines (the real agent code in this process, each with its
// own HTTPS connection and long poll; the command itself is a Go function
// that returns 0). It prints the figures; it asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/bench/internal/fetch"
	"github.com/drover-project/drover/bench/internal/simsite"
	"github.com/drover-project/drover/internal/agent"
)

func main() {
	n := flag.Int("agents", 10000, "simulated machines")
	runs := flag.Int("runs", 5, "timed runs")
	fanout := flag.Int("fanout", 0, "--fanout of the timed runs (0: all)")
	bin := flag.String("drover", os.Getenv("DROVER_BIN"), "drover binary")
	flag.StringVar(&serverProfile, "cpu-profile", "", "write a CPU profile of the server, taken during the timed runs, to this file")
	flag.StringVar(&agentsProfile, "agents-cpu-profile", "", "write a CPU profile of this process (the simulated agents) during the timed runs to this file")
	flag.Parse()
	if *bin == "" {
		*bin = "bin/drover"
	}
	if err := run(*bin, *n, *runs, *fanout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var serverProfile, agentsProfile string

func run(bin string, n, runs, fanout int) error {
	dir, err := os.MkdirTemp("", "drover-bench-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	site, err := simsite.Start(bin, dir)
	if err != nil {
		return err
	}
	defer site.Stop()
	var executed atomic.Int64
	commands := agent.CommandRunner(func(ctx context.Context, req agent.CommandRequest) (int, error) {
		executed.Add(1)
		return 0, nil
	})
	fmt.Printf("drover run all -- true: one site, %d simulated machines (real agent code in one process, each its own HTTPS connection), %d cores\n", n, runtime.NumCPU())
	start := time.Now()
	if err := site.StartAgents(n, "sim", nil, commands); err != nil {
		return err
	}
	if err := site.WaitMachines(n, 10*time.Minute); err != nil {
		return err
	}
	fmt.Printf("  %d machines registered in %s; server RSS %.0f MiB\n", n, time.Since(start).Round(time.Millisecond), float64(site.StatusKB("VmRSS"))/1024)
	// Until every agent polls, some nodes come back unreachable.
	ctx := context.Background()
	for i := 0; ; i++ {
		ok, took, err := apiRun(ctx, site.Client, 0)
		if err != nil {
			return err
		}
		if ok == n {
			fmt.Printf("  warm-up: every machine answered (%s)\n", took.Round(time.Millisecond))
			break
		}
		if i > 120 {
			return fmt.Errorf("only %d of %d machines answer after 2 minutes", ok, n)
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("  server before the timed runs: %s\n", site.Metrics("drover_go_goroutines", "drover_go_heap_bytes"))
	if serverProfile != "" {
		profiled := make(chan struct{})
		defer func() { <-profiled }()
		go func() {
			defer close(profiled)
			if err := fetch.ToFile(ctx, site.Client, "/debug/pprof/profile?seconds=10", serverProfile); err != nil {
				fmt.Println("  server profile:", err)
			}
		}()
	}
	if agentsProfile != "" {
		f, err := os.Create(agentsProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var times []time.Duration
	for i := 0; i < runs; i++ {
		before := executed.Load()
		args := []string{"run", "all", "--", "true"}
		if fanout > 0 {
			args = []string{"run", "all", "--fanout", fmt.Sprint(fanout), "--", "true"}
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "DROVER_ENDPOINT="+site.Endpoint, "DROVER_CA_CERT="+site.CAFile, "DROVER_TOKEN="+site.Client.Token)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(t0)
		if err != nil {
			return fmt.Errorf("drover run: %v: %.500s", err, out)
		}
		times = append(times, took)
		fmt.Printf("  run %d: drover %s: %s (%d commands executed)\n", i+1, strings.Join(args, " "), took.Round(time.Millisecond), executed.Load()-before)
	}
	slices.Sort(times)
	fmt.Printf("  server after: RSS %.0f MiB, peak %.0f MiB; %s\n", float64(site.StatusKB("VmRSS"))/1024, float64(site.StatusKB("VmHWM"))/1024,
		site.Metrics("drover_go_goroutines", "drover_go_heap_bytes"))
	fmt.Printf("RESULT drover run all -- true on %d machines of one site (the CLI's wall time, all output read): min %s median %s max %s (target < 2s)\n",
		n, times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	return nil
}

// apiRun runs `true` on all machines through the API and counts the nodes
// that succeeded.
func apiRun(ctx context.Context, c *api.Client, fanout int) (int, time.Duration, error) {
	ok := 0
	t0 := time.Now()
	err := c.Run(ctx, api.RunRequest{Nodes: "all", Argv: []string{"true"}, Fanout: fanout}, func(l api.RunLine) error {
		if l.Type == api.RunLineResult && l.OK() {
			ok++
		}
		return nil
	})
	return ok, time.Since(t0), err
}
