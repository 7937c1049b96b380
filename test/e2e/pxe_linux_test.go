package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

const (
	pxeMAC     = "52:54:00:d7:0b:01"
	pxeMachine = "mac-52-54-00-d7-0b-01"
	// QEMU's default ROM for virtio-net-pci on the pc machine, from
	// Debian's ipxe-qemu (QEMU's firmware path includes its directory).
	pxeROM = "/usr/lib/ipxe/qemu/efi-virtio.rom"
)

// TestPXEBootChain boots a QEMU VM over the network only (-boot n, no
// -kernel): its NIC's iPXE ROM asks drover's DHCP, which answers an iPXE
// client with the URL of its per-machine script; the script (the
// discovery boot environment, for a MAC no machine has) chains the
// discovery kernel and initrd over HTTP, and the image's agent registers
// the VM. A task then sets the machine's own boot environment to local
// and reboots it: on its next network boot iPXE fetches the local script
// and exits, leaving the firmware with no other boot device.
func TestPXEBootChain(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, a bridge and taps")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (make deps, or apt-get install qemu-system-x86)")
	}
	if _, err := os.Stat(pxeROM); err != nil {
		t.Skip("no iPXE ROM for QEMU's NIC (apt-get install ipxe-qemu)")
	}
	kernel, _ := discoveryImage(t)
	dir := t.TempDir()
	ns := discoveryNetwork(t)
	ctx := context.Background()
	s, _ := startBootServer(t, dir, ns, "--discovery-dir", filepath.Dir(kernel), "--tftp-listen", discServer+":69")
	if _, err := s.client.ApplyObjects(ctx,
		// The reboot in the background with its output elsewhere, so the
		// job ends and reports before the machine goes down.
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "boot-local"},
			Script: "drover agent boot-env local\n(sleep 2; reboot) </dev/null >/dev/null 2>&1 &\necho boot environment local, rebooting in 2 s\n"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "boot-local"}, Tasks: []string{"boot-local"}},
	); err != nil {
		t.Fatalf("apply: %v", err)
	}

	// bootScripts lists the boot environments whose scripts the boot
	// server served to the VM, in order, and when, from its log.
	type served struct {
		env string
		at  time.Time
	}
	bootScripts := func() []served {
		b, _ := os.ReadFile(s.srv.log)
		var scripts []served
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.Contains(l, `msg="boot script"`) || !strings.Contains(l, "mac="+pxeMAC) {
				continue
			}
			var sc served
			for _, f := range strings.Fields(l) {
				if v, ok := strings.CutPrefix(f, "bootEnv="); ok {
					sc.env = v
				}
				if v, ok := strings.CutPrefix(f, "time="); ok {
					sc.at, _ = time.Parse(time.RFC3339Nano, v)
				}
			}
			scripts = append(scripts, sc)
		}
		return scripts
	}
	consoleHas := func(vm *proc, text string) bool {
		b, _ := os.ReadFile(vm.log)
		return strings.Contains(string(b), text)
	}

	started := time.Now()
	vm := startVM(t, dir, ns, qemu, "tap0", pxeMAC, "-boot", "n")
	// The firmware's part of the console (SeaBIOS, iPXE: DHCP, the script,
	// the downloads) stays in the test log, passed or failed.
	t.Cleanup(func() { t.Logf("--- firmware console of %s ---\n%s", pxeMAC, firmwareConsole(vm.log)) })
	m := waitRegistered(t, s, vm, pxeMachine)
	t.Logf("the VM registered %s after QEMU started (software emulation, network boot)", time.Since(started).Round(time.Second))
	if sc := bootScripts(); len(sc) != 1 || sc[0].env != api.BootEnvDiscovery {
		t.Errorf("boot scripts served to %s: %v, want one discovery script", pxeMAC, sc)
	} else {
		t.Logf("iPXE fetched the discovery script %s after QEMU started", sc[0].at.Sub(started).Round(time.Second))
	}
	for _, text := range []string{"Filename: http://" + discServer + ":8080/boot/" + pxeMAC + ".ipxe",
		"drover: booting discovery", "/files/discovery/initrd.img... ok"} {
		if !consoleHas(vm, text) {
			t.Errorf("the console does not show %q", text)
		}
	}
	checkDiscovered(t, m, pxeMAC)

	// The task switches its machine to local (served once the command
	// returns) and reboots it.
	rebooted := time.Now()
	commissionOn(t, s, pxeMachine, "boot-local", "boot-local", vm.log)
	if err := s.client.Get(ctx, "machines", pxeMachine, &m); err != nil {
		t.Fatal(err)
	}
	if m.BootEnvName() != "local" {
		t.Fatalf("%s has boot environment %q after the task, want local", pxeMachine, m.BootEnvName())
	}
	var local served
	eventually(t, discBootLimit, "the VM's next network boot got the local script and left iPXE", func() (bool, string) {
		sc := bootScripts()
		var envs []string
		for _, x := range sc {
			envs = append(envs, x.env)
		}
		if len(sc) == 2 && sc[1].env == "local" {
			local = sc[1]
		}
		left := consoleHas(vm, "booting from the local disk") && consoleHas(vm, "No bootable device")
		return local.env != "" && left, "scripts served: " + strings.Join(envs, ",") + "; " + lastConsoleLine(vm.log)
	})
	t.Logf("iPXE fetched the local script %s after the task started", local.at.Sub(rebooted).Round(time.Second))
	t.Logf("%s rebooted, got the local script and left the network boot %s after the task started", pxeMachine, time.Since(rebooted).Round(time.Second))
}

// firmwareConsole is what SeaBIOS and iPXE wrote on the VM's serial
// console, boot after boot, without the Linux kernel's and the image's
// output and without terminal escapes.
func firmwareConsole(path string) string {
	b, _ := os.ReadFile(path)
	escape := regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]|\x1bc`)
	var out []string
	firmware := true
	for _, l := range strings.Split(escape.ReplaceAllString(string(b), ""), "\n") {
		l = strings.TrimRight(l, " \r")
		switch {
		case strings.Contains(l, "SeaBIOS"):
			firmware = true
		case strings.Contains(l, "Linux version"):
			firmware = false
			out = append(out, "[Linux boots]")
		}
		if firmware && l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
