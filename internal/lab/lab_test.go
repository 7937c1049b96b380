package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCheckOptionsRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Sites: 0, Machines: 1}, "--sites 0"},
		{Options{Sites: MaxSites + 1, Machines: 1}, "--sites 65"},
		{Options{Sites: 1, Machines: 0}, "--machines 0"},
		{Options{Sites: 1, Machines: MaxMachines + 1}, "--machines 1001"},
		{Options{Sites: 1, Machines: 1, Latency: 1500 * time.Microsecond}, "--latency 1.5ms"},
		{Options{Sites: 1, Machines: 1, Latency: -time.Millisecond}, "--latency -1ms"},
		{Options{Sites: 1, Machines: 1, Latency: 2 * time.Minute}, "--latency 2m0s"},
	} {
		err := checkOptions(&tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error naming %q", tc.o, err, tc.want)
		}
	}
	o := Options{Sites: 2, Machines: 3, Latency: 20 * time.Millisecond, Dir: "rel/dir"}
	if err := checkOptions(&o); err != nil || !filepath.IsAbs(o.Dir) || o.Self != "drover" {
		t.Fatalf("good options: %v %+v", err, o)
	}
}

func TestSiteNames(t *testing.T) {
	got := strings.Join(siteNames(6), ",")
	if got != "east,west,north,south,site5,site6" {
		t.Fatal(got)
	}
}

func TestExistingSaysWhatIsInTheWay(t *testing.T) {
	dir := t.TempDir()
	if st, err := existing(filepath.Join(dir, "new")); st != nil || err != nil {
		t.Fatalf("a new directory: %v %v", st, err)
	}
	if st, err := existing(dir); st != nil || err != nil {
		t.Fatalf("an empty directory: %v %v", st, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := existing(dir); err == nil || !strings.Contains(err.Error(), "holds no lab") {
		t.Fatalf("a directory of other files: %v", err)
	}
	st := &State{Dir: dir, Phase: PhaseReady, Machines: 3, Sites: []Site{{}, {}}, path: filepath.Join(dir, stateFile)}
	st.Manager.URL = "https://127.0.0.1:1"
	if err := st.update(func() {}); err != nil {
		t.Fatal(err)
	}
	got, err := existing(dir)
	if err != nil || got == nil {
		t.Fatalf("a lab: %v %v", got, err)
	}
	msg := got.existsError("drover").Error()
	for _, want := range []string{"a lab already runs in " + dir, "https://127.0.0.1:1", "2 sites × 3 machines", "drover lab down --dir " + dir, "--force"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	got.Phase = PhaseFailed
	if msg := got.existsError("drover").Error(); !strings.Contains(msg, "failed to build") {
		t.Error(msg)
	}
}

func TestIsLabProcess(t *testing.T) {
	dir := "/tmp/lab"
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"/usr/bin/drover", "server", "--data-dir", "/tmp/lab/manager"}, true},
		{[]string{"bin/drover", "lab", "agents", "--state-dir", "/tmp/lab/sites/east/machines"}, true},
		{[]string{"drover", "lab", "proxy", "--ready-file", "/tmp/lab/proxy.json"}, true},
		// Not the lab's: another directory, another command, not drover.
		{[]string{"drover", "server", "--data-dir", "/tmp/lab2/manager"}, false},
		{[]string{"drover", "lab", "down", "--dir", "/tmp/lab"}, false},
		{[]string{"tail", "-f", "/tmp/lab/logs/manager.log"}, false},
		{[]string{"drover"}, false},
	} {
		if got := isLabProcess(tc.args, dir); got != tc.want {
			t.Errorf("%q: got %v", tc.args, got)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"https://127.0.0.1:8443": "https://127.0.0.1:8443",
		"/tmp/my lab/ca.crt":     "'/tmp/my lab/ca.crt'",
		"it's":                   `'it'\''s'`,
		"":                       "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("%q: got %s, want %s", in, got, want)
		}
	}
}

func TestReadProcOfThisProcess(t *testing.T) {
	info, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sid, _ := unix.Getsid(0)
	if info.session != sid || info.startTime == 0 || info.state == 'Z' {
		t.Fatalf("%+v, session %d", info, sid)
	}
}

func TestMain(m *testing.M) {
	if pidFile := os.Getenv("LAB_TEST_SESSION_LEADER"); pidFile != "" {
		sessionLeader(pidFile)
		return
	}
	os.Exit(m.Run())
}

// sessionLeader is a lab process that ignores SIGTERM and has started a
// child in a process group of its own, as the agents' job scripts are.
func sessionLeader(pidFile string) {
	signal.Ignore(syscall.SIGTERM)
	child := exec.Command("sleep", "60")
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := child.Start(); err != nil {
		os.Exit(2)
	}
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(child.Process.Pid)), 0o644)
	time.Sleep(time.Minute)
}

// TestStopProcsEndsTheWholeSession: a process in a session of its own
// that ignores SIGTERM, and its child in another process group, are both
// gone afterwards.
func TestStopProcsEndsTheWholeSession(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LAB_TEST_SESSION_LEADER="+pidFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	var child int
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		if child > 0 {
			_ = syscall.Kill(child, syscall.SIGKILL)
		}
	})
	info, err := readProc(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500 && child == 0; i++ {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(string(b))
		time.Sleep(10 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("the child did not start")
	}
	if ci, err := readProc(child); err != nil || ci.session != cmd.Process.Pid {
		t.Fatalf("child %d: %+v %v, want session %d", child, ci, err, cmd.Process.Pid)
	}
	p := Proc{Name: "test", Pid: cmd.Process.Pid, StartTime: info.startTime}
	if !p.Alive() {
		t.Fatal("not alive")
	}
	// A record whose start time does not match (a reused pid) is never
	// taken for the process.
	if (Proc{Pid: p.Pid, StartTime: p.StartTime + 1}).Alive() {
		t.Fatal("a process with another start time counts as alive")
	}
	n, err := stopProcs([]Proc{p}, dir, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Fatal("the session leader survived")
	}
	if ci, err := readProc(child); err == nil && ci.state != 'Z' {
		t.Fatalf("child %d survived: %+v", child, ci)
	}
	if n != 2 {
		t.Fatalf("ended %d processes, want 2", n)
	}
}

// TestRunProxyAddsLatencyEachWay sends a line through a real Toxiproxy
// link to an echo server: the answer cannot come back before twice the
// latency.
func TestRunProxyAddsLatencyEachWay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	ready := filepath.Join(t.TempDir(), "proxy.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	link, err := ParseLink("east=" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	const latency = 40 * time.Millisecond
	go func() {
		done <- RunProxy(ctx, ProxyOptions{Latency: latency, Links: []ProxyLink{link}, ReadyFile: ready, Logger: slog.New(slog.DiscardHandler)})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var links map[string]string
	for i := 0; i < 200; i++ {
		if b, err := os.ReadFile(ready); err == nil && json.Unmarshal(b, &links) == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if links["east"] == "" {
		t.Fatalf("no link in %s", ready)
	}
	c, err := net.Dial("tcp", links["east"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		start := time.Now()
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("%q %v", line, err)
		}
		if rtt := time.Since(start); rtt < 2*latency {
			t.Fatalf("round trip %s through a link with %s each way", rtt, latency)
		}
	}
	if _, err := ParseLink("east"); err == nil {
		t.Error("a link without an upstream was accepted")
	}
}

// TestStopProcsLeavesAReusedPidAlone: a record whose pid now belongs to
// another process (another start time) is neither signalled nor taken for
// the leader of its session.
func TestStopProcsLeavesAReusedPidAlone(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	info, err := readProc(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	stale := Proc{Name: "old", Pid: cmd.Process.Pid, StartTime: info.startTime - 1}
	n, err := stopProcs([]Proc{stale}, t.TempDir(), 100*time.Millisecond)
	if err != nil || n != 0 {
		t.Fatalf("ended %d: %v", n, err)
	}
	select {
	case <-done:
		t.Fatal("another process with the recorded pid was ended")
	default:
	}
}
