// Package inventory collects the hardware inventory an agent reports when it
// registers.
//
// It has to work inside the discovery image: a minimal initramfs with
// busybox, /proc and /sys mounted, and no udev, pci.ids or DMI tools. So it
// reads only sysfs and procfs (through ghw for CPU, memory, disks and DMI),
// never runs external programs or downloads anything, and treats every
// missing source as a warning recorded in the inventory rather than a
// failure. Only when neither the CPU count nor the memory size can be read
// does Collect return an error.
package inventory

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jaypipes/ghw"

	"github.com/drover-project/drover/api"
)

// Collect returns the inventory of the machine it runs on. Partial failures
// (no DMI in a VM, no disks, unreadable sysfs entries) are listed in
// Inventory.Warnings. The error is non-nil only if the basics (CPU count and
// memory size) could not be read, or ctx was cancelled; the inventory
// returned alongside still holds whatever was collected.
func Collect(ctx context.Context) (api.Inventory, error) {
	return collect(ctx, "/")
}

// collect reads sysfs and procfs below root, so that tests can supply a
// fake tree. Network interfaces come from the live system; only their sysfs
// attributes are read below root.
func collect(ctx context.Context, root string) (api.Inventory, error) {
	c := &collector{root: root}
	inv := api.Inventory{
		Arch:   runtime.GOARCH,
		Kernel: c.readLine("proc/sys/kernel/osrelease"),
		OS:     c.osName(),
	}
	if h, err := os.Hostname(); err == nil && h != "(none)" {
		inv.Hostname = h
	}

	steps := []func(*api.Inventory){c.cpu, c.memory, c.disks, c.system, c.nics}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return inv, err
		}
		step(&inv)
	}

	sanitize(&inv)
	inv.Warnings = c.warnings
	if len(inv.Warnings) > api.MaxInventoryWarnings {
		inv.Warnings = append(inv.Warnings[:api.MaxInventoryWarnings-1],
			fmt.Sprintf("and %d more warnings", len(c.warnings)-api.MaxInventoryWarnings+1))
	}
	if inv.CPUs == 0 || inv.MemoryBytes == 0 {
		errs := make([]error, len(c.warnings))
		for k, w := range c.warnings {
			errs[k] = errors.New(w)
		}
		return inv, fmt.Errorf("could not read basic hardware facts (CPUs, memory): %w", errors.Join(errs...))
	}
	return inv, nil
}

type collector struct {
	root     string
	warnings []string
}

func (c *collector) warn(format string, args ...any) {
	c.warnings = append(c.warnings, fmt.Sprintf(format, args...))
}

func (c *collector) path(rel string) string { return filepath.Join(c.root, rel) }

// readLine returns the first line of a small file below root, trimmed, or
// "" if it cannot be read.
func (c *collector) readLine(rel string) string {
	data, err := os.ReadFile(c.path(rel))
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(line)
}

// ghwOptions makes ghw read below our root, never run external tools, and
// send its log messages to our logger at debug level instead of printing
// warnings to stderr. The explicit context stops GHW_* environment
// variables from changing what the agent reports.
func (c *collector) ghwOptions() []any {
	return []any{
		context.Background(),
		ghw.WithChroot(c.root),
		ghw.WithDisableTools(),
		ghw.WithLogger(slog.New(debugHandler{slog.Default().Handler()}).With("component", "ghw")),
	}
}

func (c *collector) cpu(inv *api.Inventory) {
	info, err := ghw.CPU(c.ghwOptions()...)
	if err == nil && info.TotalHardwareThreads > 0 {
		inv.CPUs = int(info.TotalHardwareThreads)
		for _, p := range info.Processors {
			if p.Model != "" {
				inv.CPUModel = p.Model
				break
			}
		}
		return
	}
	if err != nil {
		c.warn("cpu: %v", err)
	}
	// The scheduler's count is what this process may use, which is the
	// machine's count unless the agent runs under an affinity mask.
	if c.root == "/" {
		inv.CPUs = runtime.NumCPU()
		c.warn("cpu: no processors in /sys/devices/system/cpu and /proc/cpuinfo; reporting the scheduler's count %d", inv.CPUs)
	} else {
		c.warn("cpu: no processors in /sys/devices/system/cpu and /proc/cpuinfo")
	}
}

func (c *collector) memory(inv *api.Inventory) {
	info, err := ghw.Memory(c.ghwOptions()...)
	if err != nil {
		c.warn("memory: %v", err)
		return
	}
	// TotalPhysicalBytes counts online memory blocks, close to what is
	// installed; ghw falls back to the usable total when it cannot tell.
	if info.TotalPhysicalBytes > 0 {
		inv.MemoryBytes = uint64(info.TotalPhysicalBytes)
	} else if info.TotalUsableBytes > 0 {
		inv.MemoryBytes = uint64(info.TotalUsableBytes)
	} else {
		c.warn("memory: size unknown")
	}
}

// skipDisk tells software block devices (loop, RAM disks, device mapper,
// md, network block devices) from disks. The inventory is hardware; what
// is built on top of it is not.
func skipDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "dm-", "md", "nbd", "drbd", "rbd", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (c *collector) disks(inv *api.Inventory) {
	info, err := ghw.Block(c.ghwOptions()...)
	if err != nil {
		c.warn("disks: %v", err)
		return
	}
	for _, d := range info.Disks {
		if skipDisk(d.Name) || d.SizeBytes == 0 {
			// Size 0: an empty card reader or optical drive.
			continue
		}
		disk := api.Disk{
			Name:      d.Name,
			SizeBytes: d.SizeBytes,
			Model:     known(d.Model),
			Serial:    known(d.SerialNumber),
			// Straight from the kernel: ghw only classifies known name
			// prefixes (sd, vd, nvme...).
			Rotational: c.readLine(filepath.Join("sys/block", d.Name, "queue/rotational")) == "1",
			Removable:  d.IsRemovable,
		}
		// ghw takes model and serial from the udev database, which the
		// discovery image does not have; sysfs has them for most devices.
		if disk.Model == "" {
			disk.Model = c.readLine(filepath.Join("sys/block", d.Name, "device/model"))
		}
		if disk.Serial == "" {
			disk.Serial = c.firstLine(
				filepath.Join("sys/block", d.Name, "device/serial"), // NVMe, some SCSI
				filepath.Join("sys/block", d.Name, "serial"),        // virtio
			)
		}
		if disk.Serial == "" {
			disk.Serial = c.readVPDSerial(d.Name)
		}
		if len(inv.Disks) == api.MaxInventoryDisks {
			c.warn("disks: more than %d disks; the rest are not reported", api.MaxInventoryDisks)
			break
		}
		inv.Disks = append(inv.Disks, disk)
	}
	slices.SortFunc(inv.Disks, func(a, b api.Disk) int { return strings.Compare(a.Name, b.Name) })
	if len(inv.Disks) == 0 {
		c.warn("disks: no disks found in /sys/block (missing storage driver in the discovery image?)")
	}
}

func (c *collector) firstLine(rels ...string) string {
	for _, rel := range rels {
		if s := c.readLine(rel); s != "" {
			return s
		}
	}
	return ""
}

// readVPDSerial reads the unit serial number from SCSI VPD page 0x80, which
// the kernel exposes for SATA and SAS disks that have no serial attribute.
func (c *collector) readVPDSerial(name string) string {
	data, err := os.ReadFile(c.path(filepath.Join("sys/block", name, "device/vpd_pg80")))
	if err != nil || len(data) < 4 || data[1] != 0x80 {
		return ""
	}
	n := int(data[2])<<8 | int(data[3])
	if 4+n > len(data) {
		return ""
	}
	return strings.TrimSpace(string(data[4 : 4+n]))
}

func (c *collector) system(inv *api.Inventory) {
	dmi := "sys/class/dmi/id"
	if _, err := os.Stat(c.path(dmi)); err != nil {
		c.warn("system: no DMI/SMBIOS data (%s missing; usual in containers and some VMs)", "/"+dmi)
		return
	}
	info, err := ghw.Product(c.ghwOptions()...)
	if err != nil {
		c.warn("system: %v", err)
		return
	}
	inv.System = api.System{
		Vendor:  known(info.Vendor),
		Product: known(info.Name),
		Serial:  known(info.SerialNumber),
		UUID:    strings.ToLower(known(info.UUID)),
	}
	// product_serial and product_uuid are readable by root only.
	for _, f := range []string{"product_serial", "product_uuid"} {
		if _, err := os.ReadFile(c.path(filepath.Join(dmi, f))); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.warn("system: cannot read %s (the agent must run as root): %v", f, err)
		}
	}
}

// known turns ghw's "unknown" and vendors' placeholder strings into "", so
// that an empty field reliably means "not known" and placeholders are never
// mistaken for identity (many boards share "Default string" as serial).
func known(s string) string {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "", "unknown", "none", "n/a", "na", "not specified", "not available", "not applicable",
		"to be filled by o.e.m.", "default string", "system serial number", "system product name",
		"system manufacturer", "0123456789", "00000000-0000-0000-0000-000000000000",
		"ffffffff-ffff-ffff-ffff-ffffffffffff", "03000200-0400-0500-0006-000700080009":
		return ""
	}
	return s
}

func (c *collector) nics(inv *api.Inventory) {
	ifaces, err := net.Interfaces()
	if err != nil {
		c.warn("nics: %v", err)
		return
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		sys := filepath.Join("sys/class/net", ifc.Name)
		nic := api.NIC{
			Name: ifc.Name,
			MAC:  ifc.HardwareAddr.String(),
			Up:   ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagRunning != 0,
		}
		if _, err := os.Stat(c.path(filepath.Join(sys, "device"))); err != nil {
			nic.Virtual = true
		}
		// speed is -1 or unreadable (EINVAL) without link; keep 0 then.
		if s, err := strconv.Atoi(c.readLine(filepath.Join(sys, "speed"))); err == nil && s > 0 && s <= api.MaxNICSpeedMbps {
			nic.SpeedMbps = s
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			c.warn("nics: %s: addresses: %v", ifc.Name, err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && len(nic.Addresses) < api.MaxNICAddresses {
				nic.Addresses = append(nic.Addresses, ipn.String())
			}
		}
		inv.NICs = append(inv.NICs, nic)
	}
	// Physical interfaces first so that truncation drops virtual ones,
	// then by name for a stable report.
	slices.SortStableFunc(inv.NICs, func(a, b api.NIC) int {
		if a.Virtual != b.Virtual {
			if a.Virtual {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(inv.NICs) > api.MaxInventoryNICs {
		c.warn("nics: %d interfaces; only the first %d are reported", len(inv.NICs), api.MaxInventoryNICs)
		inv.NICs = inv.NICs[:api.MaxInventoryNICs]
	}
	if len(inv.NICs) == 0 {
		c.warn("nics: no network interfaces besides loopback")
	}
}

// osName reads PRETTY_NAME from os-release; the discovery image may have
// none, in which case the kernel version alone describes it.
func (c *collector) osName() string {
	for _, rel := range []string{"etc/os-release", "usr/lib/os-release"} {
		f, err := os.Open(c.path(rel))
		if err != nil {
			continue
		}
		defer f.Close()
		var name, version string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if !ok {
				continue
			}
			v = strings.Trim(v, `"'`)
			switch k {
			case "PRETTY_NAME":
				return v
			case "NAME":
				name = v
			case "VERSION_ID":
				version = v
			}
		}
		return strings.TrimSpace(name + " " + version)
	}
	return ""
}

// sanitize makes strings read from firmware and sysfs fit what
// Inventory.Validate accepts: valid UTF-8, no control characters, bounded.
// Firmware strings in particular are often padded or contain junk bytes.
func sanitize(inv *api.Inventory) {
	clean := func(s *string, max int) {
		v := strings.ToValidUTF8(*s, "")
		v = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return -1
			}
			return r
		}, v)
		v = strings.TrimSpace(v)
		for len(v) > max {
			_, size := utf8.DecodeLastRuneInString(v)
			v = v[:len(v)-size]
		}
		*s = v
	}
	clean(&inv.Hostname, 253)
	for _, s := range []*string{&inv.CPUModel, &inv.Arch, &inv.Kernel, &inv.OS,
		&inv.System.Vendor, &inv.System.Product, &inv.System.Serial, &inv.System.UUID} {
		clean(s, api.MaxInventoryString)
	}
	for k := range inv.Disks {
		clean(&inv.Disks[k].Model, api.MaxInventoryString)
		clean(&inv.Disks[k].Serial, api.MaxInventoryString)
	}
}

// debugHandler passes records on at debug level: ghw's warnings (no DMI, no
// udev data) are expected in the discovery image and are not the
// operator's concern unless they are debugging inventory.
type debugHandler struct{ h slog.Handler }

func (d debugHandler) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}

func (d debugHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return d.h.Handle(ctx, r)
}

func (d debugHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return debugHandler{d.h.WithAttrs(attrs)}
}

func (d debugHandler) WithGroup(name string) slog.Handler {
	return debugHandler{d.h.WithGroup(name)}
}
