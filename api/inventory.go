package api

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Inventory is the hardware an agent reports when it registers.
type Inventory struct {
	Hostname string `json:"hostname,omitempty"`
	// CPUs is the number of logical processors (hardware threads).
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpuModel,omitempty"`
	MemoryBytes uint64 `json:"memoryBytes"`
	Disks       []Disk `json:"disks,omitempty"`
	NICs        []NIC  `json:"nics,omitempty"`
	System      System `json:"system"`
	Arch        string `json:"arch,omitempty"`
	Kernel      string `json:"kernel,omitempty"`
	OS          string `json:"os,omitempty"`
	// Warnings say what the agent could not collect (e.g. no DMI in a VM),
	// so that an operator can tell a missing value from an absent device.
	Warnings []string `json:"warnings,omitempty"`
}

// Disk is a block device.
type Disk struct {
	Name       string `json:"name"`
	SizeBytes  uint64 `json:"sizeBytes"`
	Model      string `json:"model,omitempty"`
	Serial     string `json:"serial,omitempty"`
	Rotational bool   `json:"rotational,omitempty"`
	Removable  bool   `json:"removable,omitempty"`
}

// NIC is a network interface.
type NIC struct {
	Name string `json:"name"`
	// MAC is lower-case and colon-separated ("52:54:00:ab:cd:ef"), empty
	// for interfaces without a hardware address.
	MAC string `json:"mac,omitempty"`
	// Addresses are in CIDR notation ("10.0.0.5/24").
	Addresses []string `json:"addresses,omitempty"`
	// Up means the link is administratively up and has carrier.
	Up        bool `json:"up"`
	SpeedMbps int  `json:"speedMbps,omitempty"`
	// Virtual marks software interfaces (bridges, bonds, VLANs, veth,
	// tunnels): on Linux, those without a backing device in sysfs.
	Virtual bool `json:"virtual,omitempty"`
}

// System is the machine's identity from DMI/SMBIOS.
type System struct {
	Vendor  string `json:"vendor,omitempty"`
	Product string `json:"product,omitempty"`
	Serial  string `json:"serial,omitempty"`
	UUID    string `json:"uuid,omitempty"`
}

// Bounds a server enforces on an Inventory. Agents are not trusted: these
// keep one report from bloating the store or the UI. They are generous for
// real hardware (large JBODs, many-port hosts).
const (
	MaxInventoryDisks     = 1024
	MaxInventoryNICs      = 1024
	MaxNICAddresses       = 64
	MaxInventoryWarnings  = 32
	MaxInventoryString    = 256 // names, models, serials, versions
	MaxInventoryWarning   = 512
	MaxInventoryCPUs      = 1 << 16
	MaxInventoryMemory    = 1 << 60 // 1 EiB
	MaxInventoryDiskBytes = 1 << 60
	MaxNICSpeedMbps       = 10_000_000 // 10 Tb/s
	maxValidationErrors   = 10
)

// PrimaryMAC returns the MAC address that identifies the machine: that of
// the first physical (non-virtual, non-loopback) Ethernet interface in name
// order. Name order rather than report order or link state keeps the
// answer the same across reboots and re-cabling. It returns "" if there is
// no such interface.
func (i *Inventory) PrimaryMAC() string {
	best := -1
	for k, n := range i.NICs {
		if n.Virtual || n.Name == "lo" {
			continue
		}
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 || isZero(hw) {
			continue
		}
		if best < 0 || n.Name < i.NICs[best].Name {
			best = k
		}
	}
	if best < 0 {
		return ""
	}
	mac, _ := NormalizeMAC(i.NICs[best].MAC)
	return mac
}

// Summary is the short form tables show.
func (i *Inventory) Summary() *Hardware {
	h := &Hardware{CPUs: i.CPUs, MemoryBytes: i.MemoryBytes, Disks: len(i.Disks), PrimaryMAC: i.PrimaryMAC()}
	for _, d := range i.Disks {
		h.DiskBytes += d.SizeBytes
	}
	return h
}

// MACs returns the MAC addresses of all non-virtual interfaces, in name
// order, for matching a machine by any of its NICs.
func (i *Inventory) MACs() []string {
	nics := slices.Clone(i.NICs)
	slices.SortFunc(nics, func(a, b NIC) int { return strings.Compare(a.Name, b.Name) })
	var macs []string
	for _, n := range nics {
		if n.Virtual || n.MAC == "" {
			continue
		}
		if mac, err := NormalizeMAC(n.MAC); err == nil && !slices.Contains(macs, mac) {
			macs = append(macs, mac)
		}
	}
	return macs
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// NormalizeMAC parses a hardware address in any form net.ParseMAC accepts
// and returns it lower-case and colon-separated.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a MAC address (want aa:bb:cc:dd:ee:ff)", s)
	}
	return hw.String(), nil
}

// Validate checks an inventory received from an agent. MACs must already
// be in canonical form (as NormalizeMAC returns) so the server can compare
// them as strings. It reports up to ten problems at once.
func (i *Inventory) Validate() error {
	v := &validator{}
	v.str("hostname", i.Hostname, 253)
	if i.CPUs < 0 || i.CPUs > MaxInventoryCPUs {
		v.add("cpus: %d is out of range 0..%d", i.CPUs, MaxInventoryCPUs)
	}
	v.str("cpuModel", i.CPUModel, MaxInventoryString)
	if i.MemoryBytes > MaxInventoryMemory {
		v.add("memoryBytes: %d is more than 1 EiB", i.MemoryBytes)
	}
	v.str("arch", i.Arch, MaxInventoryString)
	v.str("kernel", i.Kernel, MaxInventoryString)
	v.str("os", i.OS, MaxInventoryString)
	v.str("system.vendor", i.System.Vendor, MaxInventoryString)
	v.str("system.product", i.System.Product, MaxInventoryString)
	v.str("system.serial", i.System.Serial, MaxInventoryString)
	v.str("system.uuid", i.System.UUID, MaxInventoryString)

	if len(i.Disks) > MaxInventoryDisks {
		v.add("disks: %d entries, at most %d allowed", len(i.Disks), MaxInventoryDisks)
	} else {
		seen := make(map[string]bool, len(i.Disks))
		for k, d := range i.Disks {
			field := fmt.Sprintf("disks[%d]", k)
			v.name(field+".name", d.Name)
			if seen[d.Name] {
				v.add("%s.name: duplicate disk %q", field, d.Name)
			}
			seen[d.Name] = true
			if d.SizeBytes > MaxInventoryDiskBytes {
				v.add("%s.sizeBytes: %d is more than 1 EiB", field, d.SizeBytes)
			}
			v.str(field+".model", d.Model, MaxInventoryString)
			v.str(field+".serial", d.Serial, MaxInventoryString)
		}
	}

	if len(i.NICs) > MaxInventoryNICs {
		v.add("nics: %d entries, at most %d allowed", len(i.NICs), MaxInventoryNICs)
	} else {
		seen := make(map[string]bool, len(i.NICs))
		for k, n := range i.NICs {
			field := fmt.Sprintf("nics[%d]", k)
			v.name(field+".name", n.Name)
			if seen[n.Name] {
				v.add("%s.name: duplicate interface %q", field, n.Name)
			}
			seen[n.Name] = true
			if n.MAC != "" {
				if canon, err := NormalizeMAC(n.MAC); err != nil {
					v.add("%s.mac: %v", field, err)
				} else if canon != n.MAC {
					v.add("%s.mac: %q must be written as %q", field, n.MAC, canon)
				}
			}
			if n.SpeedMbps < 0 || n.SpeedMbps > MaxNICSpeedMbps {
				v.add("%s.speedMbps: %d is out of range 0..%d", field, n.SpeedMbps, MaxNICSpeedMbps)
			}
			if len(n.Addresses) > MaxNICAddresses {
				v.add("%s.addresses: %d entries, at most %d allowed", field, len(n.Addresses), MaxNICAddresses)
				continue
			}
			for j, a := range n.Addresses {
				if len(a) > 64 {
					v.add("%s.addresses[%d]: too long", field, j)
				} else if _, err := netip.ParsePrefix(a); err != nil {
					v.add("%s.addresses[%d]: %q is not an address in CIDR notation (10.0.0.5/24)", field, j, a)
				}
			}
		}
	}

	if len(i.Warnings) > MaxInventoryWarnings {
		v.add("warnings: %d entries, at most %d allowed", len(i.Warnings), MaxInventoryWarnings)
	} else {
		for k, w := range i.Warnings {
			v.str(fmt.Sprintf("warnings[%d]", k), w, MaxInventoryWarning)
		}
	}
	return v.err()
}

type validator struct {
	errs    []error
	dropped int
}

func (v *validator) add(format string, args ...any) {
	if len(v.errs) >= maxValidationErrors {
		v.dropped++
		return
	}
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

// str checks free text: bounded, valid UTF-8, no control characters (which
// could forge log lines or terminal escapes when shown to an operator).
func (v *validator) str(field, s string, max int) {
	if len(s) > max {
		v.add("%s: %d bytes, at most %d allowed", field, len(s), max)
		return
	}
	if !utf8.ValidString(s) {
		v.add("%s: not valid UTF-8", field)
		return
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		v.add("%s: %q contains control characters", field, s)
	}
}

// name checks an interface or device name: required, short, no spaces or
// slashes.
func (v *validator) name(field, s string) {
	switch {
	case s == "":
		v.add("%s: required", field)
	case len(s) > 64:
		v.add("%s: %d bytes, at most 64 allowed", field, len(s))
	case strings.ContainsFunc(s, func(r rune) bool {
		return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) || r > unicode.MaxASCII
	}):
		v.add("%s: %q may not contain spaces, slashes or non-ASCII characters", field, s)
	}
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	if v.dropped > 0 {
		v.errs = append(v.errs, fmt.Errorf("and %d more problems", v.dropped))
	}
	return fmt.Errorf("invalid inventory: %w", errors.Join(v.errs...))
}
