package dhcp

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/netns"
	"golang.org/x/sys/unix"
)

// netnsPair is two network namespaces joined by a veth pair: the server's
// end (srvIf, with srvAddr) and the client's (cliIf, no address).
type netnsPair struct {
	srvNS, cliNS string
	srvIf, cliIf string
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetnsPair creates the namespaces and the veth pair, removed when the
// test ends (failed or not).
func newNetnsPair(t *testing.T, srvAddr string) *netnsPair {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and a veth pair (run as root, e.g. make test in CI)")
	}
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	p := &netnsPair{srvNS: "drv-ds" + id, cliNS: "drv-dc" + id, srvIf: "drvs" + id, cliIf: "drvc" + id}
	t.Cleanup(func() {
		// Deleting a namespace deletes the veth end in it, and so the pair.
		exec.Command("ip", "netns", "del", p.srvNS).Run()
		exec.Command("ip", "netns", "del", p.cliNS).Run()
	})
	run(t, "ip", "netns", "add", p.srvNS)
	run(t, "ip", "netns", "add", p.cliNS)
	run(t, "ip", "link", "add", p.srvIf, "netns", p.srvNS, "type", "veth", "peer", "name", p.cliIf, "netns", p.cliNS)
	run(t, "ip", "-n", p.srvNS, "addr", "add", srvAddr, "dev", p.srvIf)
	run(t, "ip", "-n", p.srvNS, "link", "set", p.srvIf, "up")
	run(t, "ip", "-n", p.srvNS, "link", "set", "lo", "up")
	run(t, "ip", "-n", p.cliNS, "link", "set", p.cliIf, "up")
	run(t, "ip", "-n", p.cliNS, "link", "set", "lo", "up")
	return p
}

// dhclientResult is what dhclient handed its script.
type dhclientResult map[string]string

// runDHClient runs ISC dhclient in the client namespace until it has a
// lease (or timeout), with a script that only records what it was told
// (so nothing on the host changes), and stops it.
func runDHClient(t *testing.T, p *netnsPair, dir string) dhclientResult {
	t.Helper()
	if _, err := exec.LookPath("dhclient"); err != nil {
		t.Fatal("dhclient not found: install isc-dhcp-client (make deps)")
	}
	script := filepath.Join(dir, "script.sh")
	out := filepath.Join(dir, "env")
	os.Remove(out)
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncase \"$reason\" in BOUND|REBOOT|RENEW) env > "+out+".tmp && mv "+out+".tmp "+out+";; esac\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "dhclient.conf")
	os.WriteFile(conf, []byte("timeout 30;\nrequest subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, host-name;\n"), 0o644)
	cmd := exec.Command("ip", "netns", "exec", p.cliNS, "dhclient", "-d", "-1", "-v",
		"-sf", script, "-cf", conf, "-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), p.cliIf)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()
	deadline := time.After(30 * time.Second)
	for {
		if b, err := os.ReadFile(out); err == nil {
			res := dhclientResult{}
			sc := bufio.NewScanner(strings.NewReader(string(b)))
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), "="); ok {
					res[k] = strings.Trim(v, "'")
				}
			}
			return res
		}
		select {
		case err := <-exited:
			t.Fatalf("dhclient exited without a lease (%v):\n%s", err, log.String())
		case <-deadline:
			t.Fatalf("dhclient got no lease in 30s:\n%s", log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestDHClient: a real client (ISC dhclient) in a network namespace gets
// a lease from the server in another one, with the subnet's router, DNS
// and boot file; the lease is still in the store, and still the client's,
// after a server restart; a reservation gets its fixed address.
func TestDHClient(t *testing.T) {
	p := newNetnsPair(t, "10.213.0.1/24")
	sn := &api.Subnet{
		Meta:   api.Meta{Kind: api.KindSubnet, Name: "lab"},
		CIDR:   "10.213.0.0/24",
		Range:  &api.IPRange{Start: "10.213.0.100", End: "10.213.0.150"},
		Router: "10.213.0.1",
		DNS:    []string{"10.213.0.53", "10.213.0.54"},
		Domain: "lab.example",
	}
	res := &api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: "fixed"}, MAC: "52:54:00:12:34:56", IP: "10.213.0.20", Hostname: "fixed1"}
	run(t, "ip", "-n", p.cliNS, "link", "set", p.cliIf, "address", "52:54:00:00:aa:01")

	h := &harness{dir: t.TempDir(), cfg: Config{Interfaces: []string{p.srvIf}, BootAddress: netip.MustParseAddr("10.213.0.1")}, t: t}
	openStore(t, h)
	h.put(t, sn)
	h.put(t, res)
	startReal(t, h, p)

	dir := t.TempDir()
	got := runDHClient(t, p, dir)
	ip := got["new_ip_address"]
	t.Logf("dhclient: ip %s routers %s dns %s filename %s next-server %s", ip, got["new_routers"], got["new_domain_name_servers"], got["new_filename"], got["new_next_server"])
	if !strings.HasPrefix(ip, "10.213.0.1") || got["new_routers"] != "10.213.0.1" ||
		got["new_domain_name_servers"] != "10.213.0.53 10.213.0.54" || got["new_domain_name"] != "lab.example" ||
		got["new_subnet_mask"] != "255.255.255.0" {
		t.Fatalf("lease: %v", got)
	}
	if got["new_filename"] != "undionly.kpxe" || got["new_next_server"] != "10.213.0.1" {
		t.Errorf("boot file %q next server %q", got["new_filename"], got["new_next_server"])
	}
	if l, ok := h.storedLease(t, ip); !ok || l.MAC != "52:54:00:00:aa:01" || l.State != api.LeaseBound {
		t.Fatalf("stored lease of %s: %+v", ip, l)
	}

	// Restart: the lease is still in the store, and the client confirming
	// its address (INIT-REBOOT, from its lease file) keeps it.
	h.stop()
	h.st.Close()
	openStore(t, h)
	if l, ok := h.storedLease(t, ip); !ok || l.MAC != "52:54:00:00:aa:01" {
		t.Fatalf("after restart the store has %+v for %s", l, ip)
	}
	startReal(t, h, p)
	if again := runDHClient(t, p, dir); again["new_ip_address"] != ip {
		t.Errorf("after restart the client got %s, had %s (%v)", again["new_ip_address"], ip, again)
	}

	// The reserved MAC gets its fixed address and name.
	run(t, "ip", "-n", p.cliNS, "link", "set", p.cliIf, "address", "52:54:00:12:34:56")
	fixed := runDHClient(t, p, t.TempDir())
	if fixed["new_ip_address"] != "10.213.0.20" || fixed["new_host_name"] != "fixed1" {
		t.Errorf("reservation: got %s %q", fixed["new_ip_address"], fixed["new_host_name"])
	}
}

func openStore(t *testing.T, h *harness) {
	st, err := openBolt(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	t.Cleanup(func() { h.stop(); h.st.Close() })
}

// startReal starts a server whose sockets live in the server namespace.
func startReal(t *testing.T, h *harness, p *netnsPair) {
	cfg := h.cfg
	cfg.Logger = quiet
	h.srv = New(h.st, cfg)
	if err := netns.Do(p.srvNS, h.srv.Listen); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.srv.Run(ctx) }()
	select {
	case <-h.srv.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready")
	}
}
