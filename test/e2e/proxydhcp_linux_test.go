package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

const (
	// The network's own DHCP server (Kea), on the same bridge as drover.
	proxyKeaAddr = "192.0.2.2"
	// A UEFI machine: OVMF's own network stack and PXE (EDK2), no iPXE ROM.
	proxyUEFIMAC = "52:54:00:d7:0d:01"
	// An iPXE client doing PXE boot server discovery.
	proxyBSMAC = "52:54:00:d7:0d:02"
	// OVMF, Debian's ovmf package (make qemu-deps).
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// Debian's ipxe package: iPXE as a Linux kernel, which runs the
	// script it is given as initrd.
	ipxeLkrn = "/usr/lib/ipxe/ipxe.lkrn"
)

// bootServerScript makes iPXE do PXE boot server discovery against
// drover's port 4011, as a PXE client does after a proxy DHCP offer that
// sends it there: DHCP first (Kea's address, drover's proxy offer), then
// the boot server list and discovery control a PXE offer would carry
// (only the listed servers: drover, for boot server type 32768, which
// iPXE keeps little-endian), then pxebs, a DHCPREQUEST to
// 192.0.2.1:4011 whose DHCPACK must name the boot item asked for, then
// the file that ACK gave.
const bootServerScript = `#!ipxe
dhcp net0 || goto failed
echo drover-e2e: proxy offer filename ${proxydhcp/filename}
set 43.6:uint8 3
set 43.8:hex 00:80:01:c0:00:02:01
pxebs net0 32768 || goto failed
echo drover-e2e: boot server filename ${pxebs/filename} from ${pxebs/next-server}
chain ${pxebs/filename} || goto failed
:failed
echo drover-e2e: failed
`

// TestPXEProxyDHCP: drover as a proxy DHCP server next to the network's
// own DHCP server (Kea, in a namespace of its own on the same bridge),
// with two real clients on the bridge:
//
//   - a UEFI machine (OVMF, the firmware's own PXE, no iPXE ROM) takes
//     Kea's address and drover's proxy offer, loads ipxe.efi from
//     drover's TFTP, and the iPXE in it, asking again, gets its script URL
//     from drover's proxy offer and fetches the script;
//   - iPXE does PXE boot server discovery: a DHCPREQUEST to drover's port
//     4011 from the address Kea gave it, answered with a DHCPACK that
//     names its script, which it fetches.
//
// drover stores no lease; Kea does.
func TestPXEProxyDHCP(t *testing.T) {
	qemu := needPXEVM(t)
	for _, f := range []string{ovmfCode, ovmfVars, ipxeLkrn} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s is missing (make qemu-deps installs ovmf; make deps installs ipxe)", f)
		}
	}
	if _, err := exec.LookPath("kea-dhcp4"); err != nil {
		t.Skip("kea-dhcp4 not installed, the network's DHCP server in this test (make deps, or apt-get install kea-dhcp4-server)")
	}
	testStart := time.Now()
	dir := t.TempDir()
	ns := discoveryNetwork(t)
	ctx := context.Background()
	s, _ := startBootServer(t, dir, ns, "--tftp-listen", discServer+":69")
	// The lab's subnet becomes proxy DHCP: drover hands out no address.
	if _, err := s.client.ApplyObjects(ctx, &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "discovery-lab"}, CIDR: discNet, Proxy: true}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	kea := startKea(t, dir, ns)
	// drover opens port 4011 once it has seen the proxy subnet.
	eventually(t, 30*time.Second, "drover serves the PXE boot server port", func() (bool, string) {
		return len(serverLog(s.srv.log, "dhcp: answering proxy DHCP clients' PXE boot requests")) > 0, "not in the server's log yet"
	})

	started := time.Now()
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	if b, err := os.ReadFile(ovmfVars); err != nil || os.WriteFile(vars, b, 0o600) != nil {
		t.Fatalf("copy %s: %v", ovmfVars, err)
	}
	uefi := startQEMU(t, dir, ns, qemu, "tap0", proxyUEFIMAC+",bootindex=0", "-machine", "q35",
		"-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode, "-drive", "if=pflash,format=raw,file="+vars)
	script := filepath.Join(dir, "pxebs.ipxe")
	if err := os.WriteFile(script, []byte(bootServerScript), 0o644); err != nil {
		t.Fatal(err)
	}
	bs := startQEMU(t, dir, ns, qemu, "tap1", proxyBSMAC, "-machine", "pc", "-kernel", ipxeLkrn, "-initrd", script)
	for _, vm := range []struct {
		mac string
		p   *proc
	}{{proxyUEFIMAC, uefi}, {proxyBSMAC, bs}} {
		t.Cleanup(func() { t.Logf("--- firmware console of %s ---\n%s", vm.mac, firmwareConsole(vm.p.log)) })
	}

	// scriptFetched is the boot server's log of the first script fetched
	// by mac.
	scriptFetched := func(mac string) map[string]string {
		for _, l := range serverLog(s.srv.log, "boot script") {
			if l["mac"] == mac {
				return l
			}
		}
		return nil
	}
	// keaAddress is the address Kea leased to mac.
	keaAddress := func(mac string) string {
		b, _ := os.ReadFile(kea.leases)
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Split(l, ","); len(f) > 1 && f[1] == mac {
				return f[0]
			}
		}
		return ""
	}

	// The UEFI machine: firmware PXE, TFTP, iPXE, the script.
	running := func(vm *proc) {
		select {
		case <-vm.done:
			t.Fatalf("QEMU exited: %v", vm.err)
		default:
		}
	}
	eventually(t, 3*time.Minute, "the UEFI machine loaded ipxe.efi by TFTP and iPXE fetched its script", func() (bool, string) {
		running(uefi)
		return scriptFetched(proxyUEFIMAC) != nil, lastConsoleLine(uefi.log)
	})
	uefiAddr := keaAddress(proxyUEFIMAC)
	var tftp map[string]string
	for _, l := range serverLog(s.srv.log, "tftp sent") {
		if l["file"] == "ipxe.efi" && strings.HasPrefix(l["client"], uefiAddr+":") {
			tftp = l
		}
	}
	if uefiAddr == "" || tftp == nil || !strings.HasPrefix(scriptFetched(proxyUEFIMAC)["client"], uefiAddr+":") {
		t.Errorf("UEFI machine: Kea's address %q, TFTP of ipxe.efi %v, script fetched %v", uefiAddr, tftp, scriptFetched(proxyUEFIMAC))
	}
	for _, text := range []string{"Start PXE over IPv4", "Station IP address is " + uefiAddr, "NBP filename is ipxe.efi", "NBP file downloaded successfully"} {
		if b, _ := os.ReadFile(uefi.log); !strings.Contains(string(b), text) {
			t.Errorf("the UEFI machine's console does not show %q", text)
		}
	}
	at, _ := time.Parse(time.RFC3339Nano, scriptFetched(proxyUEFIMAC)["time"])
	t.Logf("UEFI PXE: address %s from Kea, ipxe.efi from drover's TFTP, iPXE fetched its script %s after QEMU started", uefiAddr, at.Sub(started).Round(time.Second))

	// Boot server discovery on port 4011.
	var proxyAck map[string]string
	eventually(t, 3*time.Minute, "iPXE asked drover on port 4011 and fetched the script it was given there", func() (bool, string) {
		running(bs)
		for _, l := range serverLog(s.srv.log, "dhcp: PXE boot file on the proxy port") {
			if l["mac"] == proxyBSMAC {
				proxyAck = l
			}
		}
		return proxyAck != nil && scriptFetched(proxyBSMAC) != nil, fmt.Sprintf("port 4011 answered: %v; %s", proxyAck != nil, lastConsoleLine(bs.log))
	})
	bsAddr := keaAddress(proxyBSMAC)
	wantFile := "http://" + discServer + ":8080/boot/" + proxyBSMAC + ".ipxe"
	if bsAddr == "" || proxyAck["client"] != bsAddr+":68" || proxyAck["file"] != wantFile {
		t.Errorf("port 4011 answered %s with %s; want Kea's address %q, port 68, and %s", proxyAck["client"], proxyAck["file"], bsAddr, wantFile)
	}
	if !strings.HasPrefix(scriptFetched(proxyBSMAC)["client"], bsAddr+":") {
		t.Errorf("the script was fetched from %s, want %s (the address Kea gave)", scriptFetched(proxyBSMAC)["client"], bsAddr)
	}
	// iPXE wraps its console at 80 columns.
	if b, _ := os.ReadFile(bs.log); !strings.Contains(strings.NewReplacer("\r", "", "\n", "").Replace(string(b)), "drover-e2e: boot server filename "+wantFile+" from "+discServer) {
		t.Errorf("the console does not show iPXE taking %s from the boot server's ACK", wantFile)
	}
	at, _ = time.Parse(time.RFC3339Nano, proxyAck["time"])
	t.Logf("boot server discovery: drover answered %s on port 4011 %s after QEMU started", proxyAck["client"], at.Sub(started).Round(time.Second))

	if stored := listAs[api.Lease](s, "leases", ""); len(stored) != 0 {
		t.Errorf("drover stored leases in proxy mode: %+v", stored)
	}
	t.Logf("the whole test took %s", time.Since(testStart).Round(time.Second))
}

// startQEMU starts a VM (1 GiB, 2 CPUs, serial console as the proc's log)
// with a virtio NIC on the tap (nic: its MAC and more device properties)
// and no option ROM on it: the firmware or kernel in args brings its own
// network stack.
func startQEMU(t *testing.T, dir, ns, qemu, tap, nic string, args ...string) *proc {
	t.Helper()
	mac, _, _ := strings.Cut(nic, ",")
	all := append([]string{"netns", "exec", ns, qemu, "-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic"}, args...)
	all = append(all, "-netdev", "tap,id=net0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=net0,romfile=,mac="+nic)
	return startCommand(t, dir, "vm-"+strings.ReplaceAll(mac, ":", ""), nil, "ip", all...)
}

// keaServer is the network's own DHCP server in the proxy DHCP test.
type keaServer struct {
	leases string
}

// startKea runs kea-dhcp4 in a namespace of its own, joined to the
// bridge of ns by a veth pair, handing out 192.0.2.100-199 with no boot
// information; the namespace goes at the end.
func startKea(t *testing.T, dir, ns string) *keaServer {
	t.Helper()
	keaNS := fmt.Sprintf("drover-kea-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", keaNS)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", keaNS).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", keaNS, err, out)
		}
	})
	run("-n", keaNS, "link", "add", "kea0", "type", "veth", "peer", "name", "kea-br", "netns", ns)
	run("-n", ns, "link", "set", "kea-br", "master", "br0", "up")
	run("-n", keaNS, "addr", "add", proxyKeaAddr+"/24", "dev", "kea0")
	run("-n", keaNS, "link", "set", "kea0", "up")
	run("-n", keaNS, "link", "set", "lo", "up")

	kd := filepath.Join(dir, "kea")
	if err := os.MkdirAll(kd, 0o700); err != nil {
		t.Fatal(err)
	}
	k := &keaServer{leases: filepath.Join(kd, "leases.csv")}
	conf := map[string]any{"Dhcp4": map[string]any{
		"interfaces-config": map[string]any{"interfaces": []string{"kea0"}},
		"lease-database":    map[string]any{"type": "memfile", "persist": true, "name": k.leases, "lfc-interval": 0},
		"valid-lifetime":    3600,
		"subnet4": []any{map[string]any{
			"id": 1, "subnet": discNet,
			"pools":       []any{map[string]any{"pool": "192.0.2.100 - 192.0.2.199"}},
			"option-data": []any{map[string]any{"name": "routers", "data": discServer}},
		}},
		"loggers": []any{map[string]any{
			"name": "kea-dhcp4", "severity": "INFO",
			"output_options": []any{map[string]any{"output": "stdout"}},
		}},
	}}
	b, _ := json.MarshalIndent(conf, "", "  ")
	confFile := filepath.Join(kd, "kea-dhcp4.conf")
	if err := os.WriteFile(confFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startCommand(t, kd, "kea", []string{"KEA_PIDFILE_DIR=" + kd, "KEA_LOCKFILE_DIR=" + kd},
		"ip", "netns", "exec", keaNS, "kea-dhcp4", "-c", confFile)
	eventually(t, 30*time.Second, "Kea serves", func() (bool, string) {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("kea-dhcp4 exited: %v\n%s", p.err, b)
		default:
		}
		b, _ := os.ReadFile(p.log)
		return strings.Contains(string(b), "DHCP4_STARTED"), lastConsoleLine(p.log)
	})
	return k
}
