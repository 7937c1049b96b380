package inventory

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func TestCollectThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("inventory collection reads Linux sysfs")
	}
	// GHW_* variables must not redirect what the agent reports.
	t.Setenv("GHW_CHROOT", "/nonexistent")
	t.Setenv("GHW_LOG_LEVEL", "debug")

	inv, err := Collect(context.Background())
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	t.Logf("inventory: %+v", inv)
	// runtime.NumCPU follows the affinity mask; this test assumes it is
	// not restricted, as in the agent's discovery image.
	if inv.CPUs != runtime.NumCPU() {
		t.Errorf("CPUs = %d, runtime.NumCPU() = %d", inv.CPUs, runtime.NumCPU())
	}
	if inv.MemoryBytes == 0 {
		t.Error("MemoryBytes = 0")
	}
	if inv.Arch != runtime.GOARCH || inv.Kernel == "" {
		t.Errorf("Arch %q, Kernel %q", inv.Arch, inv.Kernel)
	}
	if err := inv.Validate(); err != nil {
		t.Errorf("collected inventory does not validate: %v", err)
	}

	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	nonLoopback := 0
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback == 0 {
			nonLoopback++
		}
	}
	if len(inv.NICs) != nonLoopback {
		t.Errorf("got %d NICs, the system has %d non-loopback interfaces", len(inv.NICs), nonLoopback)
	}
	for _, n := range inv.NICs {
		if n.Name == "lo" {
			t.Error("loopback reported")
		}
		_, err := os.Stat(filepath.Join("/sys/class/net", n.Name, "device"))
		if n.Virtual != (err != nil) {
			t.Errorf("%s: Virtual = %v, but device link present = %v", n.Name, n.Virtual, err == nil)
		}
	}
	for _, d := range inv.Disks {
		if skipDisk(d.Name) || d.SizeBytes == 0 {
			t.Errorf("disk %+v should have been skipped", d)
		}
	}
}

func TestCollectCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Collect(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// fakeRoot builds the sysfs and procfs of a small machine as the discovery
// image sees it: no udev database, and DMI only if dmi is non-nil.
func fakeRoot(t *testing.T, dmi map[string]string) string {
	t.Helper()
	root := t.TempDir()
	write := func(rel string, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var cpuinfo strings.Builder
	for i := range 4 {
		id := string(rune('0' + i))
		cpuinfo.WriteString("processor\t: " + id + "\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 3.00GHz\nflags\t\t: fpu sse2\n\n")
		cpu := "sys/devices/system/cpu/cpu" + id
		write(cpu+"/online", "1\n")
		write(cpu+"/topology/physical_package_id", "0\n")
		write(cpu+"/topology/core_id", string(rune('0'+i/2))+"\n")
	}
	write("proc/cpuinfo", cpuinfo.String())
	write("proc/meminfo", "MemTotal:        8040264 kB\nMemFree:         1000000 kB\n")
	write("proc/sys/kernel/osrelease", "6.1.0-test\n")

	// A SATA disk whose serial is only in VPD page 0x80.
	write("sys/block/sda/size", "15628053168\n")
	write("sys/block/sda/queue/rotational", "1\n")
	write("sys/block/sda/removable", "0\n")
	write("sys/block/sda/device/model", "ST8000NM000A    \n")
	serial := "ZA1B2C3D"
	write("sys/block/sda/device/vpd_pg80", string([]byte{0, 0x80, 0, byte(len(serial))})+serial)
	// An NVMe disk with model and serial on the controller.
	write("sys/block/nvme0n1/size", "7501476528\n")
	write("sys/block/nvme0n1/queue/rotational", "0\n")
	write("sys/block/nvme0n1/removable", "0\n")
	write("sys/block/nvme0n1/device/model", "SAMSUNG MZQL23T8HCLS-00A07\n")
	write("sys/block/nvme0n1/device/serial", "S64HNE0R123456\n")
	// Software and empty devices that must not be reported.
	write("sys/block/loop0/size", "0\n")
	write("sys/block/loop1/size", "2048\n")
	write("sys/block/zram0/size", "2048\n")
	write("sys/block/dm-0/size", "2048\n")
	write("sys/block/sr0/size", "0\n")

	for k, v := range dmi {
		write("sys/class/dmi/id/"+k, v+"\n")
	}
	return root
}

func TestCollectInitramfsWithoutDMI(t *testing.T) {
	inv, err := collect(context.Background(), fakeRoot(t, nil))
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	if inv.CPUs != 4 || inv.CPUModel != "Test CPU @ 3.00GHz" {
		t.Errorf("CPUs %d, model %q", inv.CPUs, inv.CPUModel)
	}
	if inv.MemoryBytes != 8040264*1024 {
		t.Errorf("MemoryBytes = %d", inv.MemoryBytes)
	}
	if inv.Kernel != "6.1.0-test" || inv.OS != "" {
		t.Errorf("Kernel %q, OS %q", inv.Kernel, inv.OS)
	}
	want := []api.Disk{
		{Name: "nvme0n1", SizeBytes: 7501476528 * 512, Model: "SAMSUNG MZQL23T8HCLS-00A07", Serial: "S64HNE0R123456"},
		{Name: "sda", SizeBytes: 15628053168 * 512, Model: "ST8000NM000A", Serial: "ZA1B2C3D", Rotational: true},
	}
	if !slices.Equal(inv.Disks, want) {
		t.Errorf("disks:\n got %+v\nwant %+v", inv.Disks, want)
	}
	if inv.System != (api.System{}) {
		t.Errorf("System = %+v, want empty without DMI", inv.System)
	}
	if !slices.ContainsFunc(inv.Warnings, func(w string) bool { return strings.Contains(w, "DMI") }) {
		t.Errorf("warnings %q do not mention the missing DMI", inv.Warnings)
	}
}

func TestCollectDMI(t *testing.T) {
	root := fakeRoot(t, map[string]string{
		"sys_vendor":     "Supermicro",
		"product_name":   "To Be Filled By O.E.M.",
		"product_serial": "S123456X",
		"product_uuid":   "4C4C4544-0042-3510-8052-B4C04F4E4A32",
	})
	inv, err := collect(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	want := api.System{Vendor: "Supermicro", Serial: "S123456X", UUID: "4c4c4544-0042-3510-8052-b4c04f4e4a32"}
	if inv.System != want {
		t.Errorf("System = %+v, want %+v", inv.System, want)
	}
	if slices.ContainsFunc(inv.Warnings, func(w string) bool { return strings.Contains(w, "DMI") }) {
		t.Errorf("unexpected DMI warning: %q", inv.Warnings)
	}
}

func TestCollectNothingBasicIsAnError(t *testing.T) {
	inv, err := collect(context.Background(), t.TempDir())
	if err == nil {
		t.Fatal("no error for a machine without CPUs and memory")
	}
	if !strings.Contains(err.Error(), "memory") || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("error should carry the warnings: %v", err)
	}
	// What could be read is still returned.
	if inv.Arch != runtime.GOARCH {
		t.Errorf("partial inventory lost: %+v", inv)
	}
}

func TestKnown(t *testing.T) {
	for in, want := range map[string]string{
		"unknown":                  "",
		"  To Be Filled By O.E.M.": "",
		"Default string":           "",
		"None":                     "",
		"PowerEdge R650 ":          "PowerEdge R650",
	} {
		if got := known(in); got != want {
			t.Errorf("known(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSanitize(t *testing.T) {
	inv := api.Inventory{
		CPUModel: "Bad\x00CPU\x1b[31m",
		System:   api.System{Serial: strings.Repeat("é", 300), Vendor: "ok\xff"},
		Disks:    []api.Disk{{Name: "sda", Model: "M\n"}},
	}
	sanitize(&inv)
	if inv.CPUModel != "BadCPU[31m" || inv.System.Vendor != "ok" || inv.Disks[0].Model != "M" {
		t.Errorf("sanitize: %+v", inv)
	}
	if len(inv.System.Serial) > api.MaxInventoryString || !strings.HasPrefix(inv.System.Serial, "é") {
		t.Errorf("serial not truncated on a rune boundary: %d bytes", len(inv.System.Serial))
	}
	if err := inv.Validate(); err != nil {
		t.Errorf("sanitized inventory does not validate: %v", err)
	}
}
