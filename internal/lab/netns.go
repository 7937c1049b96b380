package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// In namespace mode each site i (from 1) gets the namespace
// drover-lab-ID-NAME and a veth pair: dlIDi on the host with 10.213.i.1/30,
// eth0 in the namespace with 10.213.i.2/30. Deleting the namespace deletes
// both ends.
const (
	netnsPrefix = "drover-lab-"
	labSubnet   = "10.213.0.0/16"
	// sitePort is the API port of a site inside its namespace.
	sitePort = 8443
)

func netnsName(id, site string) string { return netnsPrefix + id + "-" + site }

// hostIfPrefix starts the names of the host ends of a lab's veth pairs
// (at most 15 characters with the site's number).
func hostIfPrefix(id string) string { return "dl" + id }

func siteAddrs(i int) (host, site string) {
	return fmt.Sprintf("10.213.%d.1", i), fmt.Sprintf("10.213.%d.2", i)
}

// ip runs ip(8) and returns its error with its output.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkNetnsMode says whether namespace mode can run here.
func checkNetnsMode() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("as root the lab puts each site in a network namespace with ip(8), which is not installed: install iproute2 (make deps does), or use --no-netns")
	}
	prefix := netip.MustParsePrefix(labSubnet)
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return fmt.Errorf("ip -o -4 addr show: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "inet" {
				continue
			}
			if p, err := netip.ParsePrefix(f[i+1]); err == nil && prefix.Overlaps(p) {
				return fmt.Errorf("the lab's network %s is in use on this host (%s on %s): another lab runs as root (drover lab status --dir ...; drover lab down), or use --no-netns", labSubnet, f[i+1], strings.TrimSuffix(f[1], ":"))
			}
		}
	}
	return nil
}

// setupSiteNetns makes site i's namespace and veth pair.
func setupSiteNetns(ns, hostIf, hostAddr, siteAddr string) error {
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"addr", "add", hostAddr + "/30", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", siteAddr + "/30", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// labNamespaces lists the namespaces of the lab id that exist, recorded
// or not.
func labNamespaces(id string) []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), netnsPrefix+id+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// labLinks lists the host ends of the lab's veth pairs that exist.
func labLinks(id string) []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), hostIfPrefix(id)) {
			out = append(out, e.Name())
		}
	}
	return out
}

// removeNetworks deletes the lab's namespaces (and with them their veth
// pairs), then any host end left, and checks that none is left. It
// returns what it removed.
func removeNetworks(id string, recorded []string) (removed []string, err error) {
	seen := map[string]bool{}
	for _, ns := range append(recorded, labNamespaces(id)...) {
		if ns == "" || seen[ns] {
			continue
		}
		seen[ns] = true
		if _, statErr := os.Stat("/run/netns/" + ns); statErr != nil {
			continue
		}
		if e := ip("netns", "del", ns); e != nil {
			err = errors.Join(err, e)
			continue
		}
		removed = append(removed, "namespace "+ns)
	}
	// The kernel destroys a namespace's veth pairs in the background.
	for i := 0; i < 40 && len(labLinks(id)) > 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	for _, l := range labLinks(id) {
		if e := ip("link", "del", l); e != nil {
			if _, statErr := os.Stat("/sys/class/net/" + l); statErr == nil {
				err = errors.Join(err, e)
			}
			continue
		}
		removed = append(removed, "link "+l)
	}
	if left := append(labNamespaces(id), labLinks(id)...); len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("still present after removal: %s", strings.Join(left, ", ")))
	}
	return removed, err
}
