package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLab builds `drover lab up --sites 2 --machines 3 --latency 20ms`,
// uses it through the manager and a site as a user would (lab env, get
// machines, run across sites, lab status), then takes it down and checks
// that no process, namespace, link or directory of it is left.
func TestLab(t *testing.T) {
	t.Run("loopback", func(t *testing.T) { testLab(t, false) })
	t.Run("netns", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("the lab puts sites in network namespaces only as root; the loopback lab ran without root")
		}
		if _, err := exec.LookPath("ip"); err != nil {
			t.Skip("ip(8) is not installed (make deps installs iproute2)")
		}
		testLab(t, true)
	})
}

// labCLI runs drover with extra environment and returns stdout, stderr.
func labCLI(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, droverBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// parseEnv reads `drover lab env` output into KEY=VALUE pairs.
func parseEnv(t *testing.T, s string) []string {
	t.Helper()
	var env []string
	for _, line := range strings.Split(s, "\n") {
		kv, ok := strings.CutPrefix(line, "export ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		env = append(env, k+"="+strings.Trim(v, "'"))
	}
	if len(env) != 3 {
		t.Fatalf("lab env gave %d variables, want DROVER_ENDPOINT, DROVER_CA_CERT, DROVER_TOKEN:\n%s", len(env), s)
	}
	return env
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// labLeftovers lists what of the lab in dir (namespaces and links of id)
// still exists: processes whose command line names dir, namespaces,
// links, the directory.
func labLeftovers(dir, id string) []string {
	var left []string
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue
			}
		}
		left = append(left, fmt.Sprintf("process %d: %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	if id != "" {
		nss, _ := os.ReadDir("/run/netns")
		for _, e := range nss {
			if strings.HasPrefix(e.Name(), "drover-lab-"+id+"-") {
				left = append(left, "namespace "+e.Name())
			}
		}
		links, _ := os.ReadDir("/sys/class/net")
		for _, e := range links {
			if strings.HasPrefix(e.Name(), "dl"+id) {
				left = append(left, "link "+e.Name())
			}
		}
	}
	if _, err := os.Stat(dir); err == nil {
		left = append(left, "directory "+dir)
	}
	return left
}

func testLab(t *testing.T, netns bool) {
	dir := filepath.Join(t.TempDir(), "lab")
	dirFlag := []string{"--dir", dir}
	var id string
	// Whatever happens, nothing of the lab outlives the test.
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "lab.json")); err == nil {
			if out, errs, err := labCLI(t, nil, append([]string{"lab", "down"}, dirFlag...)...); err != nil {
				t.Errorf("cleanup: lab down: %v\n%s%s", err, out, errs)
			}
		}
		for _, l := range labLeftovers(dir, id) {
			switch {
			case strings.HasPrefix(l, "process "):
				pid, _ := strconv.Atoi(strings.TrimSuffix(strings.Fields(l)[1], ":"))
				_ = syscall.Kill(pid, syscall.SIGKILL)
			case strings.HasPrefix(l, "namespace "):
				_ = exec.Command("ip", "netns", "del", strings.TrimPrefix(l, "namespace ")).Run()
			case strings.HasPrefix(l, "link "):
				_ = exec.Command("ip", "link", "del", strings.TrimPrefix(l, "link ")).Run()
			}
		}
		if t.Failed() {
			for _, name := range []string{"manager", "site-east", "site-west", "agents-east", "agents-west", "proxy"} {
				if b, err := os.ReadFile(filepath.Join(dir, "logs", name+".log")); err == nil && len(b) > 0 {
					t.Logf("--- %s log ---\n%s", name, b)
				}
			}
		}
	})

	args := append([]string{"lab", "up", "--sites", "2", "--machines", "3", "--latency", "20ms"}, dirFlag...)
	if !netns {
		args = append(args, "--no-netns")
	}
	start := time.Now()
	out, errs, err := labCLI(t, nil, args...)
	if err != nil {
		t.Fatalf("lab up: %v\n%s%s", err, out, errs)
	}
	t.Logf("lab up took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	for _, want := range []string{"registered site east", "registered site west", "6/6 machines commissioned", "The lab is up", "lab env --dir " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up's output lacks %q", want)
		}
	}
	var state struct {
		ID    string
		Procs []struct {
			Name string
			Pid  int
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil || json.Unmarshal(b, &state) != nil {
		t.Fatalf("lab.json: %v", err)
	}
	id = state.ID
	if len(state.Procs) != 6 {
		t.Fatalf("lab.json records %d processes, want 6 (manager, 2 sites, proxy, 2 agents)", len(state.Procs))
	}

	// The manager, through `eval "$(drover lab env)"`.
	out, errs, err = labCLI(t, nil, append([]string{"lab", "env"}, dirFlag...)...)
	if err != nil {
		t.Fatalf("lab env: %v\n%s", err, errs)
	}
	mgr := parseEnv(t, out)
	password, _ := os.ReadFile(filepath.Join(dir, "manager", "initial-admin-password"))
	if tok := envValue(mgr, "DROVER_TOKEN"); tok == "" || strings.Contains(out, strings.TrimSpace(string(password))) {
		t.Fatalf("lab env must give a token, never the password:\n%s", out)
	}
	mgr = append(mgr, "DROVER_CONFIG="+filepath.Join(t.TempDir(), "cli.json"))
	out, errs, err = labCLI(t, mgr, "get", "machines")
	if err != nil {
		t.Fatalf("get machines on the manager: %v\n%s", err, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "SITE ") {
		t.Fatalf("get machines on the manager: want a SITE column and 6 machines:\n%s", out)
	}
	perSite := map[string]int{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 3 || f[2] != "ready" {
			t.Errorf("machine not ready: %q", l)
			continue
		}
		perSite[f[0]]++
	}
	if perSite["east"] != 3 || perSite["west"] != 3 {
		t.Fatalf("machines per site %v, want 3 in east and 3 in west:\n%s", perSite, out)
	}
	t.Logf("drover get machines (manager):\n%s", out)
	out, errs, err = labCLI(t, mgr, "get", "sites")
	if err != nil || strings.Count(out, " yes ") != 2 {
		t.Fatalf("get sites: both connected: %v %s\n%s", err, errs, out)
	}

	// A command on every machine of every site, through the manager.
	out, errs, err = labCLI(t, mgr, "run", "all%all", "--", "echo", "hi")
	if err != nil {
		t.Fatalf("run 'all%%all' through the manager: %v\n%s%s", err, out, errs)
	}
	for _, site := range []string{"east", "west"} {
		for n := 1; n <= 3; n++ {
			if want := fmt.Sprintf("%s%%n%d: hi\n", site, n); !strings.Contains(out, want) {
				t.Errorf("run 'all%%all' lacks %q:\n%s", want, out)
			}
		}
	}

	// One site directly.
	out, errs, err = labCLI(t, nil, append([]string{"lab", "env", "--site", "east"}, dirFlag...)...)
	if err != nil {
		t.Fatalf("lab env --site east: %v\n%s", err, errs)
	}
	east := append(parseEnv(t, out), "DROVER_CONFIG="+filepath.Join(t.TempDir(), "cli.json"))
	if envValue(east, "DROVER_ENDPOINT") == envValue(mgr, "DROVER_ENDPOINT") {
		t.Fatal("lab env --site east points at the manager")
	}
	if _, errs, err := labCLI(t, nil, append([]string{"lab", "env", "--site", "nowhere"}, dirFlag...)...); err == nil || !strings.Contains(errs, `no site "nowhere"`) {
		t.Errorf("lab env --site nowhere: %v %s", err, errs)
	}
	out, errs, err = labCLI(t, east, "get", "machines")
	if err != nil || strings.HasPrefix(out, "SITE") || strings.Count(out, " ready ") != 3 {
		t.Fatalf("get machines on east: 3 ready machines of its own: %v %s\n%s", err, errs, out)
	}
	out, errs, err = labCLI(t, east, "run", "all", "--", "sh", "-c", "echo $DROVER_STATE_DIR")
	if err != nil {
		t.Fatalf("run on east: %v\n%s%s", err, out, errs)
	}
	for n := 1; n <= 3; n++ {
		if want := fmt.Sprintf("n%d: %s\n", n, filepath.Join(dir, "sites", "east", "machines", fmt.Sprintf("n%d", n))); !strings.Contains(out, want) {
			t.Errorf("east's machines do not run with their own state dirs: no %q in\n%s", want, out)
		}
	}
	if netns {
		// A machine of east sees east's namespace: its address, not west's.
		out, errs, err = labCLI(t, east, "run", "all", "--collate", "--", "sh", "-c", "grep -c '10\\.213\\.1\\.2$' /proc/net/fib_trie; grep -c '10\\.213\\.2\\.' /proc/net/fib_trie")
		if !strings.HasPrefix(out, "n[1-3]: ") || strings.Count(out, "\n") < 2 {
			t.Errorf("run on east in its namespace: %v %s\n%s", err, errs, out)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) < 2 || lines[0] == "n[1-3]: 0" || !strings.HasSuffix(lines[1], ": 0") {
			t.Errorf("east's machines should see 10.213.1.2 and nothing of west's 10.213.2.0/30:\n%s", out)
		}
	}

	// Status, and up again on the lab.
	out, errs, err = labCLI(t, nil, append([]string{"lab", "status"}, dirFlag...)...)
	if err != nil {
		t.Fatalf("lab status: %v\n%s%s", err, out, errs)
	}
	t.Logf("lab status:\n%s", out)
	for _, want := range []string{"manager", "site-east", "site-west", "agents-east", "agents-west", "proxy", "6/6"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab status lacks %q", want)
		}
	}
	if strings.Contains(out, "DEAD") || strings.Contains(out, "MISSING") {
		t.Errorf("lab status shows a dead process or a missing namespace")
	}
	if netns && !strings.Contains(out, "drover-lab-"+id+"-east") {
		t.Errorf("lab status does not show east's namespace")
	}
	if _, errs, err := labCLI(t, nil, append([]string{"lab", "up", "--sites", "1", "--machines", "1"}, dirFlag...)...); err == nil || !strings.Contains(errs, "a lab already runs in "+dir) {
		t.Errorf("lab up on a running lab: %v %s", err, errs)
	}

	// Down: nothing is left.
	out, errs, err = labCLI(t, nil, append([]string{"lab", "down"}, dirFlag...)...)
	if err != nil {
		t.Fatalf("lab down: %v\n%s%s", err, out, errs)
	}
	t.Logf("lab down: %s", out)
	if left := labLeftovers(dir, id); len(left) > 0 {
		t.Fatalf("left after lab down: %s", strings.Join(left, "; "))
	}
	for _, p := range state.Procs {
		if err := syscall.Kill(p.Pid, 0); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid)); bytes.Contains(b, []byte(dir)) {
				t.Errorf("%s (pid %d) still runs", p.Name, p.Pid)
			}
		}
	}
	if _, errs, err := labCLI(t, nil, append([]string{"lab", "status"}, dirFlag...)...); err == nil || !strings.Contains(errs, "no lab in "+dir) {
		t.Errorf("lab status after down: %v %s", err, errs)
	}
}
