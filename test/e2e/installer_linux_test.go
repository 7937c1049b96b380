package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/netns"
)

const (
	diMAC     = "52:54:00:d7:0c:01"
	diMachine = "mac-52-54-00-d7-0c-01"
	// Debian's network installer as the debian-installer-12-netboot-amd64
	// package installs it (make qemu-deps): the text frontend, whose
	// debian-installer/amd64/ holds linux and initrd.gz.
	diNetboot = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"
	// The installer's static address (install/network), outside the DHCP
	// range: requests from it are the installer's, after it read its
	// network settings from the command line drover rendered.
	diAddress = "192.0.2.50"
	// A Debian mirror that has nothing: the test's own HTTP server in the
	// namespace, which records what the installer asks for and answers 404
	// (there is no mirror offline).
	diMirrorAddr = discServer + ":8081"
	diMirrorPath = "/drover-e2e-debian"
	diRootHash   = "$6$droverE2E$s0JO5ag6aaNdTdEVb0EYokFgZkIW8V8N8Jt/UtP1p3sogV84R07NK7OIkY1AYY1PSBR2aW5HJpNFszkM7Kzlw."
	// Installer boot under software emulation: iPXE's DHCP (about 20 s),
	// 40 MiB of initrd over HTTP, the kernel, d-i's hardware detection.
	diInstallerLimit = 6 * time.Minute
)

// TestDebianInstallerPreseed takes a machine from its first network boot
// to Debian's installer, as an operator would: the VM network-boots the
// discovery image and registers; the operator sets the installer's params
// on the machine (a secure root password hash, the disk, a static address,
// the mirror); a task sets the machine's boot environment to the built-in
// debian-12-preseed (returning once the boot server serves it) and
// reboots it. On its next network boot iPXE gets the installer's script,
// loads Debian's netboot kernel and initrd from drover's HTTP boot server
// (--boot-files-dir, from the debian-installer-12-netboot-amd64 package),
// and d-i configures the network from the kernel command line, fetches
// the machine's preseed from drover and goes on with the values in it
// until it asks the preseeded mirror for the release file, which is where
// an offline test has to stop.
func TestDebianInstallerPreseed(t *testing.T) {
	qemu := needPXEVM(t)
	for _, f := range []string{"linux", "initrd.gz"} {
		if _, err := os.Stat(filepath.Join(diNetboot, f)); err != nil {
			t.Skipf("Debian's network installer is not installed (make qemu-deps, or apt-get install debian-installer-12-netboot-amd64): %v", err)
		}
	}
	kernel, _ := discoveryImage(t)
	testStart := time.Now()
	dir := t.TempDir()
	// The boot files directory an operator would make: the installer's
	// directory linked where the built-in boot environment looks
	// (debian-12/linux, debian-12/initrd.gz).
	files := filepath.Join(dir, "boot-files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(diNetboot, filepath.Join(files, "debian-12")); err != nil {
		t.Fatal(err)
	}
	ns := discoveryNetwork(t)
	ctx := context.Background()
	s, joinToken := startBootServer(t, dir, ns, "--boot-files-dir", files,
		"--discovery-dir", filepath.Dir(kernel), "--tftp-listen", discServer+":69")
	mirror := startMirrorRecorder(t, ns, diMirrorAddr)
	if _, err := s.client.ApplyObjects(ctx,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "install-debian"},
			Script: "drover agent boot-env debian-12-preseed\n(sleep 2; reboot) </dev/null >/dev/null 2>&1 &\necho boot environment debian-12-preseed, rebooting in 2 s\n"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "install-debian"}, Tasks: []string{"install-debian"}},
	); err != nil {
		t.Fatalf("apply: %v", err)
	}

	started := time.Now()
	vm := startVM(t, dir, ns, qemu, "tap0", diMAC, "-boot", "n")
	// The firmware's part of the console (each boot) and the installer's
	// screens stay in the test log, passed or failed.
	t.Cleanup(func() {
		t.Logf("--- firmware console of %s ---\n%s", diMAC, firmwareConsole(vm.log))
		t.Logf("--- installer screens of %s (serial console) ---\n%s", diMAC, installerScreens(vm.log))
	})
	waitRegistered(t, s, vm, diMachine)
	t.Logf("the VM booted discovery and registered %s after QEMU started", time.Since(started).Round(time.Second))

	// The operator's part: the installer's params on the machine.
	raw := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	if _, err := s.client.ApplyObjects(ctx, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: diMachine},
		Params: map[string]json.RawMessage{
			"install/root-password-hash": raw(diRootHash),
			"install/disk":               raw("/dev/vda"),
			"install/network":            raw(map[string]any{"address": diAddress + "/24", "gateway": discServer, "dns": []string{discServer}, "domain": "e2e.example"}),
			"debian/mirror":              raw("http://" + diMirrorAddr + diMirrorPath),
		}}); err != nil {
		t.Fatalf("apply the machine's install params: %v", err)
	}
	var m api.Machine
	if err := s.client.Get(ctx, "machines", diMachine, &m); err != nil {
		t.Fatal(err)
	}
	if m.Status.State != api.StateDiscovered || len(m.MACs()) == 0 {
		t.Fatalf("after applying its params %s is %s with MACs %v: the apply lost its status", diMachine, m.Status.State, m.MACs())
	}

	// The install task: set the boot environment (served once the command
	// returns), reboot.
	rebooted := time.Now()
	commissionOn(t, s, diMachine, "install-debian", "install-debian", vm.log)
	if err := s.client.Get(ctx, "machines", diMachine, &m); err != nil {
		t.Fatal(err)
	}
	if m.BootEnvName() != "debian-12-preseed" {
		t.Fatalf("%s has boot environment %q after the task, want debian-12-preseed", diMachine, m.BootEnvName())
	}

	// iPXE gets the installer's script and loads its kernel and initrd
	// from the boot server.
	logHas := func(msg string, kv ...string) (time.Time, bool) {
		for _, l := range serverLog(s.srv.log, msg) {
			ok := true
			for i := 0; i+1 < len(kv); i += 2 {
				if !strings.HasPrefix(l[kv[i]], kv[i+1]) {
					ok = false
				}
			}
			if ok {
				at, _ := time.Parse(time.RFC3339Nano, l["time"])
				return at, true
			}
		}
		return time.Time{}, false
	}
	var scriptAt, initrdAt, preseedAt time.Time
	eventually(t, diInstallerLimit, "iPXE loaded the installer's kernel and initrd", func() (bool, string) {
		var ok1, ok2, ok3 bool
		scriptAt, ok1 = logHas("boot script", "mac", diMAC, "bootEnv", "debian-12-preseed")
		_, ok2 = logHas("boot file", "file", "/files/debian-12/linux")
		initrdAt, ok3 = logHas("boot file", "file", "/files/debian-12/initrd.gz")
		return ok1 && ok2 && ok3, fmt.Sprintf("script %v, kernel %v, initrd %v; %s", ok1, ok2, ok3, lastConsoleLine(vm.log))
	})
	t.Logf("iPXE fetched the debian-12-preseed script %s and the installer's initrd %s after the task started",
		scriptAt.Sub(rebooted).Round(time.Second), initrdAt.Sub(rebooted).Round(time.Second))

	// d-i comes up, configures the network with the values drover put on
	// its command line, and fetches the preseed from its static address.
	eventually(t, diInstallerLimit, "d-i fetched the machine's preseed", func() (bool, string) {
		var ok bool
		preseedAt, ok = logHas("boot file rendered", "mac", diMAC, "path", "preseed.cfg", "client", diAddress+":")
		return ok, lastConsoleLine(vm.log)
	})
	t.Logf("d-i fetched %s's preseed from %s, %s after iPXE loaded its initrd", diMachine, diAddress, preseedAt.Sub(initrdAt).Round(time.Second))

	// ... and goes on with what it read: the mirror it asks is the one
	// that only the preseed names.
	var first mirrorRequest
	eventually(t, diInstallerLimit, "d-i asked the preseeded mirror", func() (bool, string) {
		reqs := mirror.requests()
		if len(reqs) > 0 {
			first = reqs[0]
		}
		return len(reqs) > 0, lastConsoleLine(vm.log)
	})
	t.Logf("d-i asked the preseeded mirror for %s from %s, %s after it fetched the preseed", first.path, first.client, first.at.Sub(preseedAt).Round(time.Second))
	if !strings.HasPrefix(first.path, diMirrorPath+"/dists/") || !strings.HasPrefix(first.client, diAddress+":") {
		t.Errorf("the mirror's first request: %s from %s, want %s/dists/... from %s", first.path, first.client, diMirrorPath, diAddress)
	}
	// The console shows it (d-i's screens, drawn with newt on the serial
	// console).
	eventually(t, 2*time.Minute, "the console shows d-i's mirror error", func() (bool, string) {
		c := installerConsole(vm.log)
		return strings.Contains(c, "Bad archive mirror"), lastConsoleLine(vm.log)
	})
	t.Logf("d-i says \"Bad archive mirror\" %s after the task started", time.Since(rebooted).Round(time.Second))

	// What the installer was served: the params rendered, the secure ones
	// decrypted into it.
	get := bootGetter(t, ns)
	renderURL := "http://" + discServer + ":8080/render/" + strings.ReplaceAll(diMAC, ":", "-")
	preseed := get(renderURL + "/preseed.cfg")
	for _, want := range []string{
		"d-i passwd/root-password-crypted password " + diRootHash,
		"d-i partman-auto/disk string /dev/vda",
		"d-i grub-installer/bootdev string /dev/vda",
		"d-i netcfg/get_ipaddress string " + diAddress,
		"d-i netcfg/get_hostname string " + diMachine,
		"d-i mirror/http/hostname string " + diMirrorAddr,
		"d-i mirror/http/directory string " + diMirrorPath,
		"d-i preseed/late_command string in-target sh -c 'curl -fsS --retry 5 -o /root/drover-post-install.sh " + renderURL + "/post-install.sh && sh /root/drover-post-install.sh'",
	} {
		if !strings.Contains(preseed, want) {
			t.Errorf("the preseed lacks %q:\n%s", want, preseed)
		}
	}
	post := get(renderURL + "/post-install.sh")
	for _, want := range []string{
		"DROVER_JOIN_TOKEN=" + joinToken,
		"DROVER_ENDPOINT=" + s.endpoint,
		"http://" + discServer + ":8080/agent/drover",
		"url='http://" + discServer + ":8080/boot/" + strings.ReplaceAll(diMAC, ":", "-") + "/local'",
		"ExecStart=/usr/local/bin/drover agent --name " + diMachine,
	} {
		if !strings.Contains(post, want) {
			t.Errorf("post-install.sh lacks %q", want)
		}
	}
	t.Logf("the whole test took %s", time.Since(testStart).Round(time.Second))
}

// needPXEVM skips the test unless a QEMU VM can network-boot here (root
// for the namespaces, QEMU, its NIC's iPXE ROM) and returns QEMU.
func needPXEVM(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, a bridge and taps")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (make qemu-deps, or apt-get install qemu-system-x86)")
	}
	if _, err := os.Stat(pxeROM); err != nil {
		t.Skip("no iPXE ROM for QEMU's NIC (make qemu-deps, or apt-get install ipxe-qemu)")
	}
	return qemu
}

// serverLog returns the server log's lines with that msg, each as its
// key=value fields (text handler format, values unquoted).
func serverLog(path, msg string) []map[string]string {
	b, _ := os.ReadFile(path)
	var out []map[string]string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "msg="+fmt.Sprintf("%q", msg)) && !strings.Contains(l, "msg="+msg+" ") {
			continue
		}
		fields := map[string]string{}
		for _, f := range strings.Fields(l) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = strings.Trim(v, `"`)
			}
		}
		out = append(out, fields)
	}
	return out
}

// installerConsole is the VM's serial console without terminal escapes
// and line drawing, blanks squeezed: d-i draws its screens with newt on
// the serial console, so its texts are there between cursor moves.
func installerConsole(path string) string {
	b, _ := os.ReadFile(path)
	s := regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][0B]|\x1b[=>c]|\x0f|\x0e|\r`).ReplaceAllString(string(b), " ")
	s = regexp.MustCompile(`[ \t]+`).ReplaceAllString(s, " ")
	return regexp.MustCompile(`\n[ \n]*`).ReplaceAllString(s, "\n")
}

// installerScreens is the text of d-i's screens: the console after the
// installer's kernel started, without kernel messages, screen's status
// line and newt's line drawing.
func installerScreens(path string) string {
	c := installerConsole(path)
	if i := strings.LastIndex(c, "Linux version"); i >= 0 {
		c = c[i:]
	}
	c = regexp.MustCompile(`\[[^\[\]\n]*\]\[ \w+ \d+ \d+:\d+ \]`).ReplaceAllString(c, "")
	c = regexp.MustCompile(`(?m)[lmtukj]?q{3,}[lmtukj]?|(^| )x( x)*( |$)`).ReplaceAllString(c, " ")
	var out []string
	for _, l := range strings.Split(c, "\n") {
		l = strings.TrimSpace(regexp.MustCompile(` {2,}`).ReplaceAllString(l, " "))
		if l != "" && !regexp.MustCompile(`^\[ *\d+\.\d+\]`).MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// mirrorRequest is one request the mirror recorder got.
type mirrorRequest struct {
	path, client string
	at           time.Time
}

// mirrorRecorder is an HTTP server in the namespace standing in for a
// Debian mirror that has nothing: it records each request and answers
// 404.
type mirrorRecorder struct {
	mu     sync.Mutex
	reqs   []mirrorRequest
	closed bool // no more logging: the test may have ended
}

func (m *mirrorRecorder) requests() []mirrorRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mirrorRequest(nil), m.reqs...)
}

func startMirrorRecorder(t *testing.T, ns, addr string) *mirrorRecorder {
	t.Helper()
	m := &mirrorRecorder{}
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.reqs = append(m.reqs, mirrorRequest{path: r.URL.Path, client: r.RemoteAddr, at: time.Now()})
		if !m.closed {
			t.Logf("mirror: %s %s from %s (%s)", r.Method, r.URL.Path, r.RemoteAddr, r.UserAgent())
		}
		m.mu.Unlock()
		http.NotFound(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		srv.Close()
	})
	return m
}
