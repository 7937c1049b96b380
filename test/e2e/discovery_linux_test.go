package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/netns"
)

// The discovery image test's network, inside a namespace of its own: the
// server on a bridge, the VMs on taps in it.
const (
	discNet     = "192.0.2.0/24" // TEST-NET-1: never routed anywhere
	discServer  = "192.0.2.1"
	discMAC     = "52:54:00:d7:0a:01"
	discBadMAC  = "52:54:00:d7:0a:02"
	discMachine = "mac-52-54-00-d7-0a-01"
	// Software emulation on a shared 2-core machine: a boot to a
	// registered agent takes 20-60 s; the limits leave room for a slow day.
	discBootLimit = 5 * time.Minute
	discJobLimit  = 3 * time.Minute
)

// TestDiscoveryImageBootsRegistersAndRunsATask boots build/discovery's
// kernel and initramfs in QEMU (software emulation) on a tap bridged into
// a network namespace where drover's server answers DHCP, serves the CA
// over plain HTTP and the API over HTTPS. The kernel command line is the
// one the built-in discovery boot environment renders for the VM's MAC
// (what iPXE would boot it with). The image's agent registers the VM,
// which shows up discovered with its CPUs, memory and MAC, and a one-task
// commission runs on it; a task reboots it and it registers again as the
// same machine. A second VM, given a hand-written command line with a
// wrong CA fingerprint, must refuse the CA and never register.
func TestDiscoveryImageBootsRegistersAndRunsATask(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, a bridge and taps")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (make deps, or apt-get install qemu-system-x86)")
	}
	kernel, initrd := discoveryImage(t)
	dir := t.TempDir()
	ns := discoveryNetwork(t)
	ctx := context.Background()
	get := bootGetter(t, ns)
	s, joinToken := startBootServer(t, dir, ns, "--boot-files-dir", filepath.Dir(filepath.Dir(kernel)))
	bootURL := "http://" + discServer + ":8080"
	if _, err := s.client.ApplyObjects(ctx,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "hello"},
			Script: "echo \"hello from $(hostname): $(nproc) CPUs, kernel $(uname -r), machine {{ .Machine.Name }}\"\n"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "say-hello"}, Tasks: []string{"hello"}},
		// In the background with its output elsewhere, so the job ends and
		// reports before the machine goes down.
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "reboot-soon"},
			Script: "(sleep 2; reboot) </dev/null >/dev/null 2>&1 &\necho rebooting in 2 s\n"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "reboot-soon"}, Tasks: []string{"reboot-soon"}},
	); err != nil {
		t.Fatalf("apply: %v", err)
	}

	// What iPXE would get for this MAC: the discovery environment's kernel,
	// initrd and command line.
	script := get(bootURL + "/boot/" + discMAC + ".ipxe")
	var cmdline []string
	for _, line := range strings.Split(script, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "kernel" {
			continue
		}
		if want := bootURL + "/files/discovery/vmlinuz"; f[1] != want {
			t.Errorf("discovery kernel %s, want %s", f[1], want)
		}
		for _, p := range f[2:] {
			if p == "||" {
				break
			}
			if !strings.HasPrefix(p, "initrd=") {
				cmdline = append(cmdline, p)
			}
		}
	}
	if len(cmdline) == 0 {
		t.Fatalf("no kernel line in the discovery script:\n%s", script)
	}
	if served := get(bootURL + "/files/discovery/initrd.img"); !sameFile(t, initrd, served) {
		t.Errorf("the boot server serves another initrd.img than %s", initrd)
	}
	t.Logf("discovery kernel params: %s", strings.ReplaceAll(strings.Join(cmdline, " "), joinToken, "<join token>"))

	started := time.Now()
	vm := bootVM(t, dir, ns, qemu, kernel, initrd, "tap0", discMAC, strings.Join(cmdline, " "))
	m := waitRegistered(t, s, vm, discMachine)
	t.Logf("the VM registered %s after QEMU started (software emulation)", time.Since(started).Round(time.Second))

	// The second VM, with a wrong fingerprint, boots while the first works.
	badSum := sha256.Sum256([]byte("not the CA"))
	bad := bootVM(t, dir, ns, qemu, kernel, initrd, "tap1", discBadMAC, strings.Join([]string{"console=ttyS0",
		"drover.endpoint=" + s.endpoint, "drover.join_token=" + joinToken,
		"drover.ca_url=" + bootURL + "/ca.pem", "drover.ca_sha256=" + hex.EncodeToString(badSum[:])}, " "))

	checkDiscovered(t, m, discMAC)

	commission := func(workflow, task string) string {
		t.Helper()
		return commissionOn(t, s, discMachine, workflow, task, vm.log)
	}
	if out, want := commission("say-hello", "hello"), fmt.Sprintf("hello from %s: 2 CPUs", discMachine); !strings.Contains(out, want) {
		t.Errorf("hello job output %q lacks %q", out, want)
	}

	// A task reboots the machine; the image boots again, and its new agent
	// (the state was on tmpfs) is adopted as the same machine once the old
	// one is unreachable.
	registered := *m.Status.RegisteredAt
	commission("reboot-soon", "reboot-soon")
	eventually(t, discBootLimit, discMachine+" registered again after its reboot", func() (bool, string) {
		err := s.client.Get(ctx, "machines", discMachine, &m)
		st := m.Status
		return err == nil && st.RegisteredAt != nil && st.RegisteredAt.After(registered) && st.Reachable,
			fmt.Sprintf("reachable %v; %s", st.Reachable, lastConsoleLine(vm.log))
	})
	if b, _ := os.ReadFile(vm.log); !strings.Contains(string(b), "drover-discovery: rebooting") {
		t.Errorf("the console does not show /init rebooting")
	}
	if m.Status.State != api.StateReady {
		t.Errorf("%s is %s after its reboot, want ready", discMachine, m.Status.State)
	}
	t.Logf("%s rebooted and registered again, %s after its first registration", discMachine, m.Status.RegisteredAt.Sub(registered).Round(time.Second))

	eventually(t, discBootLimit, "the VM with a wrong fingerprint refuses the CA", func() (bool, string) {
		b, _ := os.ReadFile(bad.log)
		return strings.Contains(string(b), "REFUSING the CA certificate"), lastConsoleLine(bad.log)
	})
	for _, m := range s.machines() {
		if slices.Contains(m.MACs(), discBadMAC) {
			t.Errorf("machine %s registered from the VM that was given a wrong CA fingerprint", m.Name)
		}
	}
}

// bootGetter returns a GET from inside the namespace that fails the test
// on anything but 200 and returns the body.
func bootGetter(t *testing.T, ns string) func(url string) string {
	httpIn := &http.Transport{}
	dialIn(ns, httpIn)
	return func(url string) string {
		t.Helper()
		resp, err := (&http.Client{Transport: httpIn, Timeout: 30 * time.Second}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, b)
		}
		return string(b)
	}
}

// startBootServer starts drover's server in the namespace of
// discoveryNetwork: the API on discServer:8443, DHCP on br0, the HTTP boot
// server on discServer:8080, with extra flags (where the boot files are).
// It logs in as admin, applies the lab's subnet and puts a join token in
// the global profile for the discovery environment, and returns the
// token.
func startBootServer(t *testing.T, dir, ns string, extra ...string) (*site, string) {
	t.Helper()
	ctx := context.Background()
	s := &site{t: t, dir: dir, addr: discServer + ":8443", password: "e2e-admin-password"}
	s.endpoint = "https://" + s.addr
	s.caFile = filepath.Join(dir, "server", "tls", "ca.crt")
	args := append([]string{"netns", "exec", ns, droverBin, "server", "--data-dir", filepath.Join(dir, "server"),
		"--listen", s.addr, "--dhcp-interface", "br0", "--boot-address", discServer,
		"--heartbeat-interval", "5s", "--reachable-timeout", "15s",
		"--boot-listen", discServer + ":8080"}, extra...)
	srv := startCommand(t, dir, "server", []string{"DROVER_ADMIN_PASSWORD=" + s.password}, "ip", args...)
	s.srv = srv
	eventually(t, 30*time.Second, "server up", func() (bool, string) {
		select {
		case <-srv.done:
			t.Fatalf("server exited: %v", srv.err)
		default:
		}
		if _, err := os.Stat(s.caFile); err != nil {
			return false, err.Error()
		}
		c, err := api.NewClientFromFile(s.endpoint, s.caFile, "")
		if err != nil {
			return false, err.Error()
		}
		dialIn(ns, c.HTTP.Transport.(*http.Transport))
		var h map[string]string
		err = c.Do(ctx, "GET", "/healthz", nil, &h)
		if err == nil {
			s.client = c
		}
		return err == nil, fmt.Sprint(err)
	})
	login, err := s.client.Login(ctx, "admin", s.password, "")
	if err != nil {
		t.Fatal(err)
	}
	s.client.Token = login.Token
	jt, err := s.client.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := json.Marshal(jt.Token)
	if _, err := s.client.ApplyObjects(ctx,
		&api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "discovery-lab"}, CIDR: discNet,
			Range: &api.IPRange{Start: "192.0.2.100", End: "192.0.2.199"}, Router: discServer, DNS: []string{discServer}},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: api.GlobalProfile},
			Params: map[string]json.RawMessage{"agent/join-token": token}},
	); err != nil {
		t.Fatalf("apply: %v", err)
	}
	s.joinTok = jt.Token
	return s, jt.Token
}

// waitRegistered waits until the VM's agent registered it as machine and
// returns the machine; it fails at once when QEMU exits.
func waitRegistered(t *testing.T, s *site, vm *proc, machine string) api.Machine {
	t.Helper()
	var m api.Machine
	eventually(t, discBootLimit, "the VM registered as "+machine, func() (bool, string) {
		select {
		case <-vm.done:
			t.Fatalf("QEMU exited: %v", vm.err)
		default:
		}
		err := s.client.Get(context.Background(), "machines", machine, &m)
		return err == nil, lastConsoleLine(vm.log)
	})
	return m
}

// checkDiscovered fails the test unless the machine is discovered with
// the VM's hardware: 2 CPUs, about 1 GiB, the MAC.
func checkDiscovered(t *testing.T, m api.Machine, mac string) {
	t.Helper()
	hw := m.Status.Hardware
	if m.Status.State != api.StateDiscovered || hw == nil || hw.CPUs != 2 || hw.PrimaryMAC != mac ||
		hw.MemoryBytes < 900<<20 || hw.MemoryBytes > 1100<<20 {
		b, _ := json.MarshalIndent(m.Status, "", "  ")
		t.Fatalf("machine %s: want discovered, 2 CPUs, about 1 GiB, MAC %s; got\n%s", m.Name, mac, b)
	}
	t.Logf("%s: %s, %d CPUs, %d MiB, MAC %s, OS %q", m.Name, m.Status.State, hw.CPUs, hw.MemoryBytes>>20, hw.PrimaryMAC, m.Status.Inventory.OS)
}

// commissionOn runs a one-task workflow on the machine and returns the
// job's output once it succeeded and the machine is ready; console is the
// VM's serial log, shown while waiting.
func commissionOn(t *testing.T, s *site, machine, workflow, task, console string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := s.client.Action(ctx, "commission", machine, workflow); err != nil {
		t.Fatalf("commission: %v", err)
	}
	var job api.Job
	eventually(t, discJobLimit, "the "+task+" job finished", func() (bool, string) {
		for _, j := range s.jobs("") {
			if j.Machine == machine && j.Task == task {
				job = j
				return j.Finished(), j.State
			}
		}
		return false, "no job yet; " + lastConsoleLine(console)
	})
	var out strings.Builder
	if _, err := s.client.JobLog(ctx, job.Name, 0, false, &out); err != nil {
		t.Fatal(err)
	}
	if job.State != api.JobSucceeded {
		t.Fatalf("job %s: %s (%s), output %q", job.Name, job.State, job.Message, out.String())
	}
	t.Logf("job %s succeeded: %s", job.Name, strings.TrimSpace(out.String()))
	var m api.Machine
	eventually(t, 30*time.Second, machine+" ready", func() (bool, string) {
		err := s.client.Get(ctx, "machines", machine, &m)
		return err == nil && m.Status.State == api.StateReady, m.Status.State
	})
	return out.String()
}

func sameFile(t *testing.T, path, content string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) == content
}

// discoveryImage brings build/discovery up to date (the build is
// idempotent and quick when nothing changed) and returns its kernel and
// initrd. It skips when there is no image and none can be built.
func discoveryImage(t *testing.T) (kernel, initrd string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "build", "discovery")
	kernel, initrd = filepath.Join(out, "vmlinuz"), filepath.Join(out, "initrd.img")
	cmd := exec.Command(filepath.Join(root, "scripts", "discovery-image.sh"))
	cmd.Env = os.Environ()
	// The image carries the drover under test when it is static (make e2e
	// passes bin/drover); otherwise the script builds its own.
	if out, err := exec.Command("ldd", droverBin).CombinedOutput(); err != nil || strings.Contains(string(out), "not a dynamic") {
		cmd.Env = append(cmd.Env, "DROVER_BIN="+droverBin)
	} else {
		cmd.Env = append(cmd.Env, "DROVER_BIN=")
	}
	start := time.Now()
	b, err := cmd.CombinedOutput()
	_, kerr := os.Stat(kernel)
	_, ierr := os.Stat(initrd)
	switch {
	case err != nil && (kerr != nil || ierr != nil):
		t.Skipf("no discovery image and it cannot be built (make discovery-image): %v\n%s", err, b)
	case err != nil:
		t.Fatalf("scripts/discovery-image.sh failed: %v\n%s", err, b)
	}
	t.Logf("%s(%s)", b, time.Since(start).Round(100*time.Millisecond))
	return kernel, initrd
}

// discoveryNetwork makes a namespace with a bridge br0 holding the
// server's address and two taps for VMs, and removes them all at the end.
func discoveryNetwork(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("drover-disc-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() {
		// The processes in it are gone by now (cleanups run in reverse).
		for _, dev := range []string{"tap0", "tap1", "br0"} {
			_ = exec.Command("ip", "-n", ns, "link", "del", dev).Run()
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "link", "add", "br0", "type", "bridge")
	run("-n", ns, "addr", "add", discServer+"/24", "dev", "br0")
	run("-n", ns, "link", "set", "br0", "up")
	for _, tap := range []string{"tap0", "tap1"} {
		run("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
		run("-n", ns, "link", "set", tap, "master", "br0", "up")
	}
	return ns
}

// bootVM starts QEMU on a tap with the discovery image; its serial
// console is the proc's log. Without KVM: software emulation.
func bootVM(t *testing.T, dir, ns, qemu, kernel, initrd, tap, mac, cmdline string) *proc {
	t.Helper()
	return startVM(t, dir, ns, qemu, tap, mac, "-kernel", kernel, "-initrd", initrd, "-append", cmdline)
}

// startVM starts QEMU (1 GiB, 2 CPUs, serial console as the proc's log) with
// a virtio NIC of that MAC on the tap, booting as bootArgs say.
func startVM(t *testing.T, dir, ns, qemu, tap, mac string, bootArgs ...string) *proc {
	t.Helper()
	name := "vm-" + strings.ReplaceAll(mac, ":", "")
	args := append([]string{"netns", "exec", ns, qemu,
		"-machine", "pc", "-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic"}, bootArgs...)
	args = append(args,
		"-netdev", "tap,id=net0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=net0,mac="+mac,
		// Entropy for the guest: without it Go's crypto/rand waits for
		// the kernel's RNG to initialize, 10-20 s under emulation.
		"-device", "virtio-rng-pci")
	vm := startCommand(t, dir, name, nil, "ip", args...)
	t.Cleanup(func() {
		if t.Failed() {
			// The harness shows the tail of the console; the image's own
			// lines tell the story of the whole boot.
			b, _ := os.ReadFile(vm.log)
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "drover-discovery:") || strings.HasPrefix(l, "udhcpc:") || strings.HasPrefix(l, "time=") {
					lines = append(lines, l)
				}
			}
			t.Logf("--- %s console, drover lines ---\n%s", name, strings.Join(lines, "\n"))
		}
	})
	return vm
}

func lastConsoleLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "console: " + lines[len(lines)-1]
}

// dialIn makes the client connect from inside the namespace, where the
// server listens.
func dialIn(ns string, tr *http.Transport) {
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := netns.Do(ns, func() error {
			var err error
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}
