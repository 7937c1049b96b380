package dhcp

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// subnet is a Subnet ready for serving.
type subnet struct {
	name      string
	prefix    netip.Prefix
	mask      net.IPMask
	start     uint32 // range, inclusive; hasRange false when none
	end       uint32
	hasRange  bool
	leaseTime time.Duration
	proxy     bool
	// options are every option the subnet sends, encoded once.
	options    map[uint8][]byte
	nextServer netip.Addr
	// next is where the search for a free address starts: after the last
	// address handed out, so a released address is not reused at once.
	next uint32
}

func newSubnet(s *api.Subnet) (*subnet, error) {
	p, err := model.ParseSubnetCIDR(s.CIDR)
	if err != nil {
		return nil, err
	}
	sn := &subnet{
		name:      s.Name,
		prefix:    p,
		mask:      net.CIDRMask(p.Bits(), 32),
		leaseTime: model.SubnetLeaseTime(s),
		proxy:     s.Proxy,
		options:   map[uint8][]byte{},
	}
	if s.Range != nil {
		a, err1 := model.ParseIPv4(s.Range.Start)
		b, err2 := model.ParseIPv4(s.Range.End)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		sn.start, sn.end, sn.hasRange = u32(a), u32(b), true
		sn.next = sn.start
	}
	sn.options[1] = []byte(sn.mask)
	if s.Router != "" {
		if a, err := model.ParseIPv4(s.Router); err == nil {
			sn.options[3] = a.AsSlice()
		}
	}
	var dns []byte
	for _, d := range s.DNS {
		if a, err := model.ParseIPv4(d); err == nil {
			dns = append(dns, a.AsSlice()...)
		}
	}
	if len(dns) > 0 {
		sn.options[6] = dns
	}
	if s.Domain != "" {
		sn.options[15] = []byte(s.Domain)
	}
	bcast := lastOf(p)
	sn.options[28] = bcast.AsSlice()
	if s.NextServer != "" {
		sn.nextServer, _ = model.ParseIPv4(s.NextServer)
	}
	for code, v := range s.Options {
		c, b, err := model.DHCPOption(code, v)
		if err != nil {
			return nil, err
		}
		sn.options[c] = b
	}
	return sn, nil
}

func (sn *subnet) inRange(ip netip.Addr) bool {
	v := u32(ip)
	return sn.hasRange && v >= sn.start && v <= sn.end
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func lastOf(p netip.Prefix) netip.Addr {
	return addrOf(u32(p.Addr()) | (1<<(32-p.Bits()) - 1))
}

// lease is the server's view of one Lease object.
type lease struct {
	ip       netip.Addr
	mac      string
	subnet   string
	hostname string
	expires  time.Time
	state    string
	// rev is the store revision of the last write of this lease seen;
	// pending counts our writes under way. While one is, events about the
	// lease are our own and older than what we hold.
	rev     int64
	pending int
}

// holds reports whether the lease keeps its address from other clients at
// now.
func (l *lease) holds(now time.Time) bool {
	switch l.state {
	case api.LeaseBound, api.LeaseDeclined:
		return now.Before(l.expires)
	}
	return false
}

func (l *lease) object() *api.Lease {
	return &api.Lease{
		Meta:      api.Meta{Kind: api.KindLease, Name: l.ip.String(), Labels: map[string]string{"subnet": l.subnet}},
		MAC:       l.mac,
		IP:        l.ip.String(),
		Subnet:    l.subnet,
		Hostname:  l.hostname,
		ExpiresAt: l.expires.UTC().Truncate(time.Second),
		State:     l.state,
	}
}

// offer is an address offered to a client and held for it in memory
// until it requests it or the offer expires.
type offer struct {
	subnet  string
	mac     string
	expires time.Time
}

// macKey keys per-subnet client state.
type macKey struct {
	subnet string
	mac    string
}

// state is everything the server knows: the store's subnets,
// reservations, machines' MACs and leases, and its own offers. The server
// holds mu around every use.
type state struct {
	subnets []*subnet // by name
	byName  map[string]*subnet

	resByName map[string]*api.Reservation
	resByMAC  map[string]*api.Reservation
	resByIP   map[netip.Addr]*api.Reservation

	machineMACs map[string][]string // machine → its NICs' MACs
	knownMACs   map[string]string   // MAC → machine

	leases     map[netip.Addr]*lease
	leaseByMAC map[macKey]netip.Addr

	offers     map[netip.Addr]*offer
	offerByMAC map[macKey]netip.Addr
}

func newState() *state {
	return &state{
		byName:      map[string]*subnet{},
		resByName:   map[string]*api.Reservation{},
		resByMAC:    map[string]*api.Reservation{},
		resByIP:     map[netip.Addr]*api.Reservation{},
		machineMACs: map[string][]string{},
		knownMACs:   map[string]string{},
		leases:      map[netip.Addr]*lease{},
		leaseByMAC:  map[macKey]netip.Addr{},
		offers:      map[netip.Addr]*offer{},
		offerByMAC:  map[macKey]netip.Addr{},
	}
}

// watchedKinds are the kinds the server follows.
var watchedKinds = []string{api.KindSubnet, api.KindReservation, api.KindMachine, api.KindLease}

// load lists every watched kind into a fresh state and returns the
// revision to watch from. Leases with writes under way in old are kept.
func load(ctx context.Context, st store.Store, old *state) (*state, int64, error) {
	s := newState()
	from := int64(-1)
	for _, kind := range watchedKinds {
		recs, rev, err := st.List(ctx, kind, store.ListOptions{})
		if err != nil {
			return nil, 0, fmt.Errorf("list %s: %w", kind, err)
		}
		// Later lists may be at later revisions: watching from the first
		// replays what changed meanwhile, and applying an event twice is
		// harmless.
		if from < 0 {
			from = rev
		}
		for _, rec := range recs {
			s.apply(store.Event{Type: store.EventPut, Revision: rec.Revision, Record: rec})
		}
	}
	if old != nil {
		for _, l := range old.leases {
			if l.pending > 0 {
				s.putLease(l)
			}
		}
		for ip, o := range old.offers {
			s.offers[ip] = o
		}
		for k, ip := range old.offerByMAC {
			s.offerByMAC[k] = ip
		}
	}
	return s, from, nil
}

// apply folds one store event into the state. It reports an error only
// for records it cannot read, which are skipped.
func (s *state) apply(ev store.Event) error {
	rec := ev.Record
	del := ev.Type == store.EventDelete
	switch rec.Kind {
	case api.KindSubnet:
		delete(s.byName, rec.Name)
		if !del {
			var o api.Subnet
			if err := model.Decode(rec, &o); err != nil {
				s.sortSubnets()
				return err
			}
			sn, err := newSubnet(&o)
			if err != nil {
				s.sortSubnets()
				return fmt.Errorf("subnet %q: %w", rec.Name, err)
			}
			s.byName[rec.Name] = sn
		}
		s.sortSubnets()
	case api.KindReservation:
		if old := s.resByName[rec.Name]; old != nil {
			delete(s.resByName, rec.Name)
			if s.resByMAC[old.MAC] == old {
				delete(s.resByMAC, old.MAC)
			}
			if ip, err := netip.ParseAddr(old.IP); err == nil && s.resByIP[ip] == old {
				delete(s.resByIP, ip)
			}
		}
		if !del {
			var o api.Reservation
			if err := model.Decode(rec, &o); err != nil {
				return err
			}
			ip, err := model.ParseIPv4(o.IP)
			if err != nil {
				return fmt.Errorf("reservation %q: %w", rec.Name, err)
			}
			s.resByName[o.Name] = &o
			s.resByMAC[o.MAC] = &o
			s.resByIP[ip] = &o
		}
	case api.KindMachine:
		for _, mac := range s.machineMACs[rec.Name] {
			if s.knownMACs[mac] == rec.Name {
				delete(s.knownMACs, mac)
			}
		}
		delete(s.machineMACs, rec.Name)
		if !del {
			var m struct {
				Status struct {
					Inventory *api.Inventory `json:"inventory"`
				} `json:"status"`
			}
			if err := json.Unmarshal(rec.Data, &m); err != nil {
				return fmt.Errorf("machine %q: %w", rec.Name, err)
			}
			if inv := m.Status.Inventory; inv != nil {
				macs := inv.MACs()
				s.machineMACs[rec.Name] = macs
				for _, mac := range macs {
					s.knownMACs[mac] = rec.Name
				}
			}
		}
	case api.KindLease:
		ip, err := netip.ParseAddr(rec.Name)
		if err != nil {
			return nil
		}
		cur := s.leases[ip]
		if cur != nil && (cur.pending > 0 || ev.Revision <= cur.rev) {
			return nil
		}
		if del {
			if cur != nil {
				s.dropLease(cur)
			}
			return nil
		}
		var o api.Lease
		if err := model.Decode(rec, &o); err != nil {
			return err
		}
		if cur != nil {
			s.dropLease(cur)
		}
		s.putLease(&lease{ip: ip, mac: o.MAC, subnet: o.Subnet, hostname: o.Hostname, expires: o.ExpiresAt, state: o.State, rev: ev.Revision})
	}
	return nil
}

func (s *state) sortSubnets() {
	s.subnets = s.subnets[:0]
	for _, sn := range s.byName {
		s.subnets = append(s.subnets, sn)
	}
	sort.Slice(s.subnets, func(i, j int) bool { return s.subnets[i].name < s.subnets[j].name })
}

func (s *state) putLease(l *lease) {
	s.leases[l.ip] = l
	s.leaseByMAC[macKey{l.subnet, l.mac}] = l.ip
}

func (s *state) dropLease(l *lease) {
	if s.leases[l.ip] == l {
		delete(s.leases, l.ip)
	}
	k := macKey{l.subnet, l.mac}
	if s.leaseByMAC[k] == l.ip {
		delete(s.leaseByMAC, k)
	}
}

func (s *state) dropOffer(ip netip.Addr) {
	o := s.offers[ip]
	if o == nil {
		return
	}
	delete(s.offers, ip)
	if k := (macKey{o.subnet, o.mac}); s.offerByMAC[k] == ip {
		delete(s.offerByMAC, k)
	}
}

// expireOffers forgets offers past their time.
func (s *state) expireOffers(now time.Time) {
	for k, ip := range s.offerByMAC {
		if o := s.offers[ip]; o == nil || !now.Before(o.expires) {
			delete(s.offerByMAC, k)
			delete(s.offers, ip)
		}
	}
	for ip, o := range s.offers {
		if !now.Before(o.expires) {
			delete(s.offers, ip)
		}
	}
}

// subnetFor is the subnet that holds addr (a relay's giaddr or an address
// of the receiving interface).
func (s *state) subnetFor(addr netip.Addr) *subnet {
	for _, sn := range s.subnets {
		if sn.prefix.Contains(addr) {
			return sn
		}
	}
	return nil
}
