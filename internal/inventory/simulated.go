package inventory

import (
	"fmt"

	"github.com/drover-project/drover/api"
)

const (
	gib = 1 << 30
	gb  = 1000 * 1000 * 1000
	tb  = 1000 * gb
)

type diskKind struct {
	prefix     string // "sd", "nvme", "vd"
	model      string
	sizeBytes  uint64
	rotational bool
}

type hardwareClass struct {
	vendor, product string
	cpuModel        string
	cpus            []int
	memoryGiB       []uint64
	nicPrefix       string // "eno" gives eno1, eno2...; "ens" gives ens3, ens4...
	nicSpeeds       []int
	nicCount        []int
	bootDisk        diskKind
	bootDisks       int
	dataDisk        *diskKind
	dataDisks       []int
}

// classes are plausible server shapes for the machine simulator. Names are
// public product names, used only so that simulated inventories look like
// what operators see.
var classes = []hardwareClass{
	{
		vendor: "Dell Inc.", product: "PowerEdge R650",
		cpuModel:  "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
		cpus:      []int{64, 128},
		memoryGiB: []uint64{256, 512},
		nicPrefix: "eno", nicSpeeds: []int{10000, 25000}, nicCount: []int{2, 4},
		bootDisk: diskKind{"sd", "MZ7LH480HBHQ0D3", 480 * gb, false}, bootDisks: 2,
		dataDisk: &diskKind{"sd", "ST8000NM000A-2KE101", 8 * tb, true}, dataDisks: []int{0, 4, 8},
	},
	{
		vendor: "HPE", product: "ProLiant DL360 Gen10",
		cpuModel:  "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz",
		cpus:      []int{24, 48},
		memoryGiB: []uint64{128, 192, 384},
		nicPrefix: "eno", nicSpeeds: []int{1000, 10000}, nicCount: []int{2, 4},
		bootDisk: diskKind{"sd", "MM1000GEFQV", 1000 * gb, true}, bootDisks: 2,
	},
	{
		vendor: "Supermicro", product: "AS-1114S-WN10RT",
		cpuModel:  "AMD EPYC 7443P 24-Core Processor",
		cpus:      []int{48},
		memoryGiB: []uint64{256, 512},
		nicPrefix: "eno", nicSpeeds: []int{25000}, nicCount: []int{2},
		bootDisk: diskKind{"nvme", "SAMSUNG MZQL23T8HCLS-00A07", 3840 * gb, false}, bootDisks: 1,
		dataDisk: &diskKind{"nvme", "SAMSUNG MZQL23T8HCLS-00A07", 3840 * gb, false}, dataDisks: []int{1, 3, 9},
	},
	{
		vendor: "QEMU", product: "Standard PC (Q35 + ICH9, 2009)",
		cpuModel:  "QEMU Virtual CPU version 2.5+",
		cpus:      []int{2, 4, 8},
		memoryGiB: []uint64{4, 8, 16},
		nicPrefix: "ens", nicSpeeds: []int{0}, nicCount: []int{1, 2},
		bootDisk: diskKind{"vd", "", 40 * gb, true}, bootDisks: 1,
	},
}

// maxSimulatedNICs is the most NICs a simulated machine has; SimulatedMAC
// encodes the NIC index in two bits.
const maxSimulatedNICs = 4

// Simulated returns a plausible inventory for a simulated machine named
// name. The same seed always gives the same hardware. MAC addresses come
// from SimulatedMAC and so are unique across seeds.
func Simulated(name string, seed int) api.Inventory {
	r := splitmix{state: uint64(seed) ^ 0x6472_6f76_6572_0001}
	class := classes[r.intn(len(classes))]

	inv := api.Inventory{
		Hostname:    name,
		CPUs:        pick(&r, class.cpus),
		CPUModel:    class.cpuModel,
		MemoryBytes: pick(&r, class.memoryGiB) * gib,
		Arch:        "amd64",
		Kernel:      "6.1.0-28-amd64",
		OS:          "Debian GNU/Linux 12 (bookworm)",
		System: api.System{
			Vendor:  class.vendor,
			Product: class.product,
			Serial:  fmt.Sprintf("SIM%08X", uint32(seed)),
			UUID:    r.uuid(),
		},
	}

	counters := map[string]int{}
	addDisk := func(k diskKind) {
		n := counters[k.prefix]
		counters[k.prefix]++
		var dname string
		switch k.prefix {
		case "nvme":
			dname = fmt.Sprintf("nvme%dn1", n)
		default:
			dname = k.prefix + string(rune('a'+n%26))
			if n >= 26 {
				dname = k.prefix + string(rune('a'+n/26-1)) + string(rune('a'+n%26))
			}
		}
		d := api.Disk{Name: dname, SizeBytes: k.sizeBytes, Model: k.model, Rotational: k.rotational}
		if k.prefix != "vd" {
			d.Serial = fmt.Sprintf("S%011X", r.next()&0xFFFFFFFFFFF)
		}
		inv.Disks = append(inv.Disks, d)
	}
	for range class.bootDisks {
		addDisk(class.bootDisk)
	}
	if class.dataDisk != nil {
		for range pick(&r, class.dataDisks) {
			addDisk(*class.dataDisk)
		}
	}

	speed := pick(&r, class.nicSpeeds)
	nics := min(pick(&r, class.nicCount), maxSimulatedNICs)
	first := 1
	if class.nicPrefix == "ens" {
		first = 3
	}
	for k := range nics {
		inv.NICs = append(inv.NICs, api.NIC{
			Name:      fmt.Sprintf("%s%d", class.nicPrefix, first+k),
			MAC:       SimulatedMAC(seed, k),
			Up:        k == 0 || r.intn(2) == 0,
			SpeedMbps: speed,
		})
	}
	return inv
}

// SimulatedMAC returns the MAC of NIC nic (0-3) of the simulated machine
// with the given seed: 5X:44:SS:SS:SS:SS, where SS are the seed's 32 bits
// and X encodes the NIC index (52, 56, 5a, 5e). Every first octet is
// locally administered and unicast. MACs are unique for any 2^32
// consecutive seeds, and stay clear of QEMU's 52:54:00 prefix so that
// simulated machines never collide with real VMs in the e2e lab.
func SimulatedMAC(seed, nic int) string {
	if nic < 0 || nic >= maxSimulatedNICs {
		panic(fmt.Sprintf("inventory: simulated NIC index %d out of range 0..%d", nic, maxSimulatedNICs-1))
	}
	s := uint32(seed)
	return fmt.Sprintf("%02x:44:%02x:%02x:%02x:%02x", 0x52+4*nic, byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}

func pick[T any](r *splitmix, choices []T) T { return choices[r.intn(len(choices))] }

// splitmix is SplitMix64: a tiny generator whose output is fixed by its
// definition, so simulated inventories stay the same across Go releases
// (math/rand makes no such promise for its derived methods).
type splitmix struct{ state uint64 }

func (s *splitmix) next() uint64 {
	s.state += 0x9e3779b97f4a7c15
	z := s.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (s *splitmix) intn(n int) int { return int(s.next() % uint64(n)) }

// uuid returns a random-looking version 4 UUID.
func (s *splitmix) uuid() string {
	hi, lo := s.next(), s.next()
	hi = hi&^0xF000 | 0x4000         // version 4
	lo = lo&^(0xC<<60) | (0x8 << 60) // RFC 4122 variant
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
		hi>>32, (hi>>16)&0xFFFF, hi&0xFFFF, lo>>48, lo&0xFFFFFFFFFFFF)
}
