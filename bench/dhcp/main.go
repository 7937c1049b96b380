// Command dhcp benchmarks drover's DHCPv4 server against Kea with
// perfdhcp: both serve the same subnet on the same veth pair between two
// network namespaces the benchmark makes (and removes), and perfdhcp
// floods each for the same time with the same client count. It prints
// DORA exchanges per second for both and their ratio.
//
// perfdhcp acts as a relay (requests come from port 67 with giaddr set to
// its address, replies go back unicast to giaddr:67), so the subnet is
// chosen by giaddr on both servers. Needs root, perfdhcp (kea-admin) and
// kea-dhcp4 (kea-dhcp4-server): `make deps` installs them.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/bench/internal/fetch"
	"github.com/drover-project/drover/internal/netns"
)

var (
	duration = flag.Duration("duration", 10*time.Second, "how long perfdhcp floods each server")
	// Kea as a competent operator runs it on a multi-core box: with its
	// multi-threading on (off by default in Kea 2.2). Single-threaded Kea
	// is about a third slower here.
	keaThreads = flag.Int("kea-threads", runtime.NumCPU(), "Kea's multi-threading pool size (0: single-threaded, Kea 2.2's default)")
	rate       = flag.Int("rate", 20000, "DORA exchanges per second perfdhcp tries (above what either server does: the figure is what they keep up with)")
	clients    = flag.Int("clients", 50000, "distinct client MACs perfdhcp uses (the subnet has 65,024 addresses)")
	target     = flag.Float64("target", 1.5, "drover/Kea ratio to reach")
	keep       = flag.Bool("keep", false, "keep the work directory (logs, configs, lease files)")
	only       = flag.String("only", "", "run only drover or kea")
	rounds     = flag.Int("rounds", 3, "runs of each server, alternating; the median counts (this machine's CPUs are shared)")
	cpuProf    = flag.String("cpu-profile", "", "save a CPU profile of drover's server during its first run to this file")
)

const (
	srvNS, cliNS = "drvbench-srv", "drvbench-cli"
	srvIf, cliIf = "drvbs0", "drvbc0"
	srvAddr      = "10.214.0.1"
	cliAddr      = "10.214.0.2"
	cidr         = "10.214.0.0/16"
	poolStart    = "10.214.1.0"
	poolEnd      = "10.214.254.255"
	apiAddr      = "127.0.0.1:18443"
	password     = "bench-admin-password"
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dhcp:", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, port 67)")
	}
	for _, tool := range []string{"perfdhcp", "kea-dhcp4", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run make deps (Debian kea-admin, kea-dhcp4-server, iproute2)", tool)
		}
	}
	bin := os.Getenv("DROVER_BIN")
	if bin == "" {
		bin = "bin/drover"
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("drover binary %s: %w (make build, or set DROVER_BIN)", bin, err)
	}
	bin, _ = filepath.Abs(bin)
	dir, err := os.MkdirTemp("", "drover-dhcp-bench-")
	if err != nil {
		return err
	}
	if *keep {
		defer fmt.Println("work directory kept:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	defer teardown()
	if err := setup(); err != nil {
		return err
	}
	fmt.Printf("perfdhcp: %s at up to %d DORA/s, %d clients, subnet %s (pool %s-%s), on a veth pair between namespaces\n",
		*duration, *rate, *clients, cidr, poolStart, poolEnd)
	var droverRuns, keaRuns []float64
	for i := 1; i <= *rounds; i++ {
		if *only != "kea" {
			r, err := benchDrover(bin, filepath.Join(dir, fmt.Sprintf("drover-%d", i)))
			if err != nil {
				return fmt.Errorf("drover: %w", err)
			}
			droverRuns = append(droverRuns, r)
		}
		if *only != "drover" {
			r, err := benchKea(filepath.Join(dir, fmt.Sprintf("kea-%d", i)))
			if err != nil {
				return fmt.Errorf("kea: %w", err)
			}
			keaRuns = append(keaRuns, r)
		}
	}
	drover, kea := median(droverRuns), median(keaRuns)
	fmt.Printf("\nruns (DORA/s): drover %s; kea %s\n", runs(droverRuns), runs(keaRuns))
	fmt.Printf("drover: %8.0f DORA/s (leases fsynced before each ACK, in batches)\n", drover)
	fmt.Printf("kea:    %8.0f DORA/s (memfile, logging WARN, %d threads)\n", kea, *keaThreads)
	if drover > 0 && kea > 0 {
		ratio := drover / kea
		verdict := "target met"
		if ratio < *target {
			verdict = "BELOW target"
		}
		fmt.Printf("ratio:  %.2fx (target %.1fx: %s)\n", ratio, *target, verdict)
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func runs(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(parts, ", ")
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func setup() error {
	teardown()
	for _, args := range [][]string{
		{"ip", "netns", "add", srvNS},
		{"ip", "netns", "add", cliNS},
		{"ip", "link", "add", srvIf, "netns", srvNS, "type", "veth", "peer", "name", cliIf, "netns", cliNS},
		{"ip", "-n", srvNS, "addr", "add", srvAddr + "/16", "dev", srvIf},
		{"ip", "-n", cliNS, "addr", "add", cliAddr + "/16", "dev", cliIf},
		{"ip", "-n", srvNS, "link", "set", srvIf, "up"},
		{"ip", "-n", cliNS, "link", "set", cliIf, "up"},
		{"ip", "-n", srvNS, "link", "set", "lo", "up"},
		{"ip", "-n", cliNS, "link", "set", "lo", "up"},
	} {
		if err := sh(args...); err != nil {
			return err
		}
	}
	return nil
}

// teardown removes the namespaces (and with them the veth pair).
func teardown() {
	exec.Command("ip", "netns", "del", srvNS).Run()
	exec.Command("ip", "netns", "del", cliNS).Run()
}

// start runs a command in the server namespace, its output in logFile.
func start(logFile string, env []string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", srvNS}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func benchDrover(bin, dir string) (float64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	logFile := filepath.Join(dir, "server.log")
	srv, err := start(logFile, []string{"DROVER_ADMIN_PASSWORD=" + password},
		bin, "server", "--data-dir", filepath.Join(dir, "data"), "--listen", apiAddr, "--no-default-content",
		"--dhcp-interface", srvIf, "--boot-address", srvAddr, "--log-level", "warn")
	if err != nil {
		return 0, err
	}
	defer stop(srv)
	c, err := login(filepath.Join(dir, "data", "tls", "ca.crt"), logFile)
	if err != nil {
		return 0, err
	}
	ctx := context.Background()
	sn := &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "bench"}, CIDR: cidr,
		Range: &api.IPRange{Start: poolStart, End: poolEnd}, Router: srvAddr, DNS: []string{srvAddr}, LeaseTime: "1h"}
	if _, err := c.ApplyObjects(ctx, sn); err != nil {
		return 0, err
	}
	// The DHCP server follows the event stream; give it a moment.
	time.Sleep(500 * time.Millisecond)
	fmt.Println("\n== drover")
	profDone := make(chan struct{})
	if *cpuProf != "" {
		secs := int(duration.Seconds()) - 1
		go func() {
			defer close(profDone)
			if err := fetch.ToFile(ctx, c, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), *cpuProf); err != nil {
				fmt.Fprintln(os.Stderr, "cpu profile:", err)
			}
		}()
	} else {
		close(profDone)
	}
	r, err := perfdhcp(filepath.Join(dir, "perfdhcp.log"))
	<-profDone
	*cpuProf = ""
	if err != nil {
		return 0, err
	}
	l, err := c.List(ctx, api.KindLease, "")
	if err != nil {
		return 0, err
	}
	fmt.Printf("leases in drover's store after the run: %d\n", len(l.Items))
	return r, nil
}

// login waits for the server in the namespace and logs in; the client's
// connections are dialled from inside the namespace.
func login(caFile, logFile string) (*api.Client, error) {
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		if ca, err := os.ReadFile(caFile); err == nil {
			c, err := api.NewClient("https://"+apiAddr, ca, "")
			if err != nil {
				return nil, err
			}
			tr := c.HTTP.Transport.(*http.Transport)
			tr.DialContext = func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
				derr := netns.Do(srvNS, func() error {
					var d net.Dialer
					conn, err = d.DialContext(ctx, network, addr)
					return err
				})
				if derr != nil {
					return nil, derr
				}
				return conn, nil
			}
			if l, err := c.Login(ctx, "admin", password, ""); err == nil {
				c.Token = l.Token
				return c, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(logFile)
	return nil, fmt.Errorf("server did not start:\n%s", log)
}

func benchKea(dir string) (float64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	conf := map[string]any{"Dhcp4": map[string]any{
		"interfaces-config": map[string]any{"interfaces": []string{srvIf}, "dhcp-socket-type": "udp"},
		"lease-database":    map[string]any{"type": "memfile", "persist": true, "name": filepath.Join(dir, "leases.csv"), "lfc-interval": 0},
		"valid-lifetime":    3600,
		"multi-threading": map[string]any{
			"enable-multi-threading": *keaThreads > 0, "thread-pool-size": max(*keaThreads, 1), "packet-queue-size": 64,
		},
		"subnet4": []any{map[string]any{
			"id": 1, "subnet": cidr,
			"pools": []any{map[string]any{"pool": poolStart + " - " + poolEnd}},
			"option-data": []any{
				map[string]any{"name": "routers", "data": srvAddr},
				map[string]any{"name": "domain-name-servers", "data": srvAddr},
			},
		}},
		"loggers": []any{map[string]any{
			"name": "kea-dhcp4", "severity": "WARN",
			"output_options": []any{map[string]any{"output": filepath.Join(dir, "kea.log")}},
		}},
	}}
	b, _ := json.MarshalIndent(conf, "", "  ")
	confFile := filepath.Join(dir, "kea-dhcp4.conf")
	if err := os.WriteFile(confFile, b, 0o644); err != nil {
		return 0, err
	}
	if err := sh("ip", "netns", "exec", srvNS, "kea-dhcp4", "-t", confFile); err != nil {
		return 0, err
	}
	logFile := filepath.Join(dir, "stdout.log")
	kea, err := start(logFile, []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}, "kea-dhcp4", "-c", confFile)
	if err != nil {
		return 0, err
	}
	defer stop(kea)
	// Kea opens its sockets after reading the configuration.
	if err := waitUDP67(); err != nil {
		log, _ := os.ReadFile(logFile)
		return 0, fmt.Errorf("%w\n%s", err, log)
	}
	fmt.Println("\n== kea")
	return perfdhcp(filepath.Join(dir, "perfdhcp.log"))
}

// waitUDP67 waits until something listens on UDP port 67 in the server
// namespace.
func waitUDP67() error {
	for i := 0; i < 100; i++ {
		out, _ := exec.Command("ip", "netns", "exec", srvNS, "ss", "-uln", "sport", "= :67").Output()
		if strings.Contains(string(out), ":67") {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("nothing listens on port 67 after 10s")
}

var rateLine = regexp.MustCompile(`Rate: ([0-9.]+) 4-way exchanges/second`)

// perfdhcp floods the server from the client namespace and returns the
// DORA rate it reports.
func perfdhcp(logFile string) (float64, error) {
	secs := int(duration.Seconds())
	if secs < 1 {
		secs = 1
	}
	cmd := exec.Command("ip", "netns", "exec", cliNS, "perfdhcp", "-4", "-l", cliIf,
		"-r", strconv.Itoa(*rate), "-R", strconv.Itoa(*clients), "-p", strconv.Itoa(secs), srvAddr)
	out, err := cmd.CombinedOutput()
	os.WriteFile(logFile, out, 0o644)
	// perfdhcp exits 3 when packets were dropped, which a flood always has.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		return 0, fmt.Errorf("perfdhcp: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	var rate float64
	for sc.Scan() {
		line := sc.Text()
		if m := rateLine.FindStringSubmatch(line); m != nil {
			rate, _ = strconv.ParseFloat(m[1], 64)
		}
		if strings.Contains(line, "sent packets") || strings.Contains(line, "received packets") || strings.Contains(line, "drops") || strings.Contains(line, "Rate:") {
			fmt.Println("  " + strings.TrimSpace(line))
		}
	}
	if rate == 0 {
		return 0, fmt.Errorf("no rate in perfdhcp's output:\n%s", out)
	}
	return rate, nil
}
