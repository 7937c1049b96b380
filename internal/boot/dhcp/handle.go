package dhcp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Ports.
const (
	serverPort = 67
	clientPort = 68
)

// outcome is what handling one request produced: a reply to send now, or
// a lease to write first and the reply to send once it is stored.
type outcome struct {
	reply  *dhcpv4.DHCPv4
	to     netip.AddrPort
	commit *lease
}

// handlePacket answers one packet received on l. Anything that does not
// parse as a DHCP request from an Ethernet client is dropped unanswered.
func (s *Server) handlePacket(l *link, data []byte, peer netip.AddrPort) {
	if b, to := s.process(l, data, peer); b != nil {
		s.send(l, b, to)
	}
}

// process handles one packet: it returns a reply to send now, or queues
// a lease write whose reply is sent once the lease is stored.
func (s *Server) process(l *link, data []byte, peer netip.AddrPort) ([]byte, netip.AddrPort) {
	s.Stats.Received.Add(1)
	req := s.parse(data)
	if req == nil {
		return nil, netip.AddrPort{}
	}
	out := s.handle(l, req, peer)
	if out == nil || out.reply == nil && out.commit == nil {
		s.Stats.Ignored.Add(1)
		return nil, netip.AddrPort{}
	}
	var b []byte
	if out.reply != nil {
		b = out.reply.ToBytes()
	}
	if out.commit == nil {
		return b, out.to
	}
	lbls, data, err := encodeLease(out.commit)
	if err != nil {
		s.mu.Lock()
		out.commit.pending--
		s.mu.Unlock()
		s.log.Error("dhcp: encode lease", "err", err)
		return nil, netip.AddrPort{}
	}
	s.commits <- &commit{l: out.commit, op: data, lbls: lbls, reply: b, link: l, to: out.to}
	return nil, netip.AddrPort{}
}

// parse reads a DHCP request from an Ethernet client; anything else is
// counted as malformed and gives nil.
func (s *Server) parse(data []byte) *dhcpv4.DHCPv4 {
	req, err := dhcpv4.FromBytes(data)
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 || req.HopCount > 16 {
		s.Stats.Malformed.Add(1)
		return nil
	}
	return req
}

// handle decides the answer to a parsed request. A lease it returns has
// been updated in memory (with a pending write counted) and must be
// queued for writing.
func (s *Server) handle(l *link, req *dhcpv4.DHCPv4, peer netip.AddrPort) *outcome {
	now := s.now()
	mac := req.ClientHWAddr.String()
	giaddr := addr4(req.GatewayIPAddr)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	sn, serverID := s.pick(l, giaddr)
	if sn == nil || !serverID.IsValid() {
		return nil
	}
	known := st.knownMACs[mac] != "" || st.resByMAC[mac] != nil
	if s.cfg.OnlyKnown && !known {
		return nil
	}
	if sn.proxy {
		return s.proxyReply(req, sn, serverID, mac, peer)
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip := s.allocate(sn, mac, addr4(req.RequestedIPAddress()), now)
		if !ip.IsValid() {
			s.log.Warn("dhcp: no free address", "subnet", sn.name, "mac", mac)
			return nil
		}
		st.dropOffer(ip)
		st.offers[ip] = &offer{subnet: sn.name, mac: mac, expires: now.Add(offerHold)}
		st.offerByMAC[macKey{sn.name, mac}] = ip
		s.Stats.Offers.Add(1)
		return &outcome{reply: s.reply(req, dhcpv4.MessageTypeOffer, sn, serverID, ip, mac, true), to: replyTo(req, false)}

	case dhcpv4.MessageTypeRequest:
		return s.request(req, sn, serverID, mac, now)

	case dhcpv4.MessageTypeRelease:
		ip := addr4(req.ClientIPAddr)
		if le := st.leases[ip]; le != nil && le.mac == mac && le.subnet == sn.name && le.state == api.LeaseBound {
			le.state, le.expires = api.LeaseReleased, now
			le.pending++
			s.Stats.Releases.Add(1)
			return &outcome{commit: le}
		}
		return nil

	case dhcpv4.MessageTypeDecline:
		ip := addr4(req.RequestedIPAddress())
		if !ip.IsValid() || !sn.prefix.Contains(ip) {
			return nil
		}
		le := st.leases[ip]
		held := le != nil && le.mac == mac
		if o := st.offers[ip]; o != nil && o.mac == mac {
			held = true
		}
		if !held {
			return nil
		}
		st.dropOffer(ip)
		if le == nil {
			le = &lease{ip: ip, mac: mac, subnet: sn.name}
		} else {
			st.dropLease(le)
		}
		le.state, le.expires = api.LeaseDeclined, now.Add(declineHold)
		le.pending++
		st.putLease(le)
		s.Stats.Declines.Add(1)
		s.log.Warn("dhcp: client declined its address (in use by another host?)", "ip", ip, "mac", mac)
		return &outcome{commit: le}

	case dhcpv4.MessageTypeInform:
		if !addr4(req.ClientIPAddr).IsValid() {
			return nil
		}
		s.Stats.Inform.Add(1)
		r := s.reply(req, dhcpv4.MessageTypeAck, sn, serverID, netip.Addr{}, mac, false)
		return &outcome{reply: r, to: replyTo(req, false)}
	}
	return nil
}

// request answers a REQUEST: ACK with a lease to write, NAK, or nothing
// when the client chose another server.
func (s *Server) request(req *dhcpv4.DHCPv4, sn *subnet, serverID netip.Addr, mac string, now time.Time) *outcome {
	st := s.state
	var ip netip.Addr
	switch sid := addr4(req.ServerIdentifier()); {
	case sid.IsValid():
		// SELECTING: the client answers an offer, ours or another's.
		if !s.ours[sid] {
			if oip, ok := st.offerByMAC[macKey{sn.name, mac}]; ok {
				st.dropOffer(oip)
			}
			return nil
		}
		ip = addr4(req.RequestedIPAddress())
	case addr4(req.ClientIPAddr).IsValid():
		// RENEWING or REBINDING.
		ip = addr4(req.ClientIPAddr)
	default:
		// INIT-REBOOT: a client checking the address it remembers.
		ip = addr4(req.RequestedIPAddress())
	}
	if !ip.IsValid() {
		return nil
	}
	if !s.leasable(sn, ip, mac, now) {
		s.Stats.Naks.Add(1)
		return &outcome{reply: s.nak(req, serverID), to: replyTo(req, true)}
	}
	le := st.leases[ip]
	if le != nil && le.mac != mac {
		st.dropLease(le)
		le = nil
	}
	if le == nil {
		le = &lease{ip: ip, mac: mac, subnet: sn.name}
	}
	if o := st.offers[ip]; o != nil && o.mac == mac {
		st.dropOffer(ip)
	}
	le.subnet = sn.name
	le.hostname = s.hostname(req, mac)
	le.state = api.LeaseBound
	le.expires = now.Add(sn.leaseTime)
	le.pending++
	st.putLease(le)
	s.Stats.Acks.Add(1)
	return &outcome{reply: s.reply(req, dhcpv4.MessageTypeAck, sn, serverID, ip, mac, true), to: replyTo(req, false), commit: le}
}

// pick chooses the subnet of a request and the server identifier to
// answer with: by the relay's address when relayed, else by the addresses
// of the interface it came in on.
func (s *Server) pick(l *link, giaddr netip.Addr) (*subnet, netip.Addr) {
	id := s.cfg.BootAddress
	if len(l.addrs) > 0 {
		id = l.addrs[0].Addr()
	}
	if giaddr.IsValid() {
		return s.state.subnetFor(giaddr), id
	}
	for _, p := range l.addrs {
		if sn := s.state.subnetFor(p.Addr()); sn != nil {
			return sn, p.Addr()
		}
	}
	return nil, id
}

// allocate picks the address to offer: the client's reservation, the
// address already offered to it or leased to it, the one it asks for if
// free, then the next address of the range that nobody ever had, then
// one whose lease ended.
func (s *Server) allocate(sn *subnet, mac string, requested netip.Addr, now time.Time) netip.Addr {
	st := s.state
	k := macKey{sn.name, mac}
	if r := st.resByMAC[mac]; r != nil {
		if ip, err := netip.ParseAddr(r.IP); err == nil && sn.prefix.Contains(ip) {
			if s.free(sn, ip, mac, now) {
				return ip
			}
			s.log.Warn("dhcp: reserved address is leased to another client; offering a dynamic one meanwhile", "reservation", r.Name, "ip", ip)
		}
	}
	if ip, ok := st.offerByMAC[k]; ok && s.free(sn, ip, mac, now) {
		return ip
	}
	if ip, ok := st.leaseByMAC[k]; ok && sn.inRange(ip) && s.free(sn, ip, mac, now) {
		return ip
	}
	if requested.IsValid() && sn.inRange(requested) && s.free(sn, requested, mac, now) {
		if le := st.leases[requested]; le == nil || le.mac == mac {
			return requested
		}
	}
	if !sn.hasRange {
		return netip.Addr{}
	}
	size := sn.end - sn.start + 1
	// First pass: addresses with no lease record, so that clients coming
	// back find their old address still theirs.
	for pass := 0; pass < 2; pass++ {
		v := sn.next
		if v < sn.start || v > sn.end {
			v = sn.start
		}
		for i := uint32(0); i < size; i++ {
			ip := addrOf(v)
			if v == sn.end {
				v = sn.start
			} else {
				v++
			}
			if pass == 0 && st.leases[ip] != nil {
				continue
			}
			if s.free(sn, ip, mac, now) {
				sn.next = v
				return ip
			}
		}
	}
	return netip.Addr{}
}

// free reports whether ip may be given to mac now: not one of the
// server's or the router's addresses, not reserved for another client,
// not leased, declined or offered to another client.
func (s *Server) free(sn *subnet, ip netip.Addr, mac string, now time.Time) bool {
	st := s.state
	if s.ours[ip] || ip == sn.prefix.Addr() || ip == lastOf(sn.prefix) {
		return false
	}
	if r, ok := sn.options[3]; ok && bytes.Equal(r, ip.AsSlice()) {
		return false
	}
	if r := st.resByIP[ip]; r != nil && r.MAC != mac {
		return false
	}
	if le := st.leases[ip]; le != nil && le.holds(now) && (le.mac != mac || le.state == api.LeaseDeclined) {
		return false
	}
	if o := st.offers[ip]; o != nil && o.mac != mac && now.Before(o.expires) {
		return false
	}
	return true
}

// leasable reports whether a client may have the address it requests.
func (s *Server) leasable(sn *subnet, ip netip.Addr, mac string, now time.Time) bool {
	st := s.state
	if !sn.prefix.Contains(ip) {
		return false
	}
	if r := st.resByMAC[mac]; r != nil {
		if rip, err := netip.ParseAddr(r.IP); err == nil && sn.prefix.Contains(rip) && rip != ip && s.free(sn, rip, mac, now) {
			// Move the client to its reservation.
			return false
		}
	}
	if r := st.resByIP[ip]; r == nil || r.MAC != mac {
		if !sn.inRange(ip) {
			return false
		}
	}
	return s.free(sn, ip, mac, now)
}

// hostname is the name given to a client: its reservation's, its
// machine's, or the one it sent.
func (s *Server) hostname(req *dhcpv4.DHCPv4, mac string) string {
	if r := s.state.resByMAC[mac]; r != nil && r.Hostname != "" {
		return r.Hostname
	}
	if m := s.state.knownMACs[mac]; m != "" && validHostname(m) {
		return m
	}
	if h := req.HostName(); validHostname(h) {
		return h
	}
	return ""
}

func validHostname(h string) bool {
	if h == "" || len(h) > 63 {
		return false
	}
	for i, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(h)-1) {
			return false
		}
	}
	return true
}

// reply builds an OFFER or ACK (yiaddr ip; none for INFORM) with the
// subnet's options, boot information and, with withLease, lease times.
func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, sn *subnet, serverID, ip netip.Addr, mac string, withLease bool) *dhcpv4.DHCPv4 {
	r := newReply(req, mt, serverID)
	if ip.IsValid() {
		r.YourIPAddr = net.IP(ip.AsSlice())
	}
	for code, v := range sn.options {
		r.Options[code] = v
	}
	if withLease {
		secs := uint32(sn.leaseTime / time.Second)
		r.Options[51] = be32(secs)
		r.Options[58] = be32(secs / 2)
		r.Options[59] = be32(secs / 8 * 7)
	}
	if h := s.hostname(req, mac); h != "" {
		r.Options[12] = []byte(h)
	}
	s.addBoot(r, req, sn, mac)
	if _, set := r.Options[175]; set || !isIPXE(req) || r.BootFileName == "" && r.Options[67] == nil {
		return r
	}
	// iPXE waits 2-3 s after an offer for ProxyDHCP offers that might
	// say where to boot, unless the offer tells it there are none (iPXE's
	// option 175, sub-option 176 "no-pxedhcp"): this one does.
	r.Options[175] = []byte{176, 1, 1}
	return r
}

// addBoot adds what a network-booting client needs: next-server and the
// boot file for its architecture.
func (s *Server) addBoot(r, req *dhcpv4.DHCPv4, sn *subnet, mac string) {
	file, httpClient := s.bootFile(req, mac)
	if file == "" {
		return
	}
	next := s.cfg.BootAddress
	if sn.nextServer.IsValid() {
		next = sn.nextServer
	}
	if next.IsValid() {
		r.ServerIPAddr = net.IP(next.AsSlice())
	}
	if len(file) < 128 {
		r.BootFileName = file
	} else {
		r.Options[67] = []byte(file)
	}
	if httpClient {
		// UEFI HTTP boot takes only offers that say they are for it.
		r.Options[60] = []byte("HTTPClient")
	}
}

// Client architectures (option 93, RFC 4578 and IANA's registry).
const (
	archBIOS       = 0
	archEFIBC      = 7
	archEFIx8664   = 9
	archEFIHTTPx64 = 16
)

// bootFile chooses the boot file for a client: iPXE gets the URL of its
// machine's script, UEFI HTTP boot clients an iPXE binary over HTTP, PXE
// firmware an iPXE binary over TFTP by architecture. httpClient says the
// client is UEFI HTTP boot.
func (s *Server) bootFile(req *dhcpv4.DHCPv4, mac string) (file string, httpClient bool) {
	if isIPXE(req) {
		if s.cfg.BootURL == "" {
			return "", false
		}
		return s.cfg.BootURL + "/boot/" + mac + ".ipxe", false
	}
	arch, hasArch := clientArch(req)
	vendor := string(req.Options.Get(dhcpv4.OptionClassIdentifier))
	if hasPrefix(vendor, "HTTPClient") || hasArch && arch == archEFIHTTPx64 {
		if s.cfg.BootURL == "" {
			return "", false
		}
		return s.cfg.BootURL + "/" + s.cfg.HTTPBootFile, true
	}
	if !hasArch {
		return "undionly.kpxe", false
	}
	switch arch {
	case archBIOS:
		return "undionly.kpxe", false
	case archEFIBC, archEFIx8664:
		return "ipxe.efi", false
	}
	return "", false
}

// isIPXE: iPXE sends user class "iPXE" (option 77, raw or RFC 3004
// length-prefixed).
func isIPXE(req *dhcpv4.DHCPv4) bool {
	uc := req.Options.Get(dhcpv4.OptionUserClassInformation)
	return bytes.Equal(uc, []byte("iPXE")) || len(uc) == 5 && uc[0] == 4 && bytes.Equal(uc[1:], []byte("iPXE"))
}

func clientArch(req *dhcpv4.DHCPv4) (uint16, bool) {
	b := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType)
	if len(b) < 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(b), true
}

func isPXE(req *dhcpv4.DHCPv4) bool {
	return hasPrefix(string(req.Options.Get(dhcpv4.OptionClassIdentifier)), "PXEClient")
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// proxyReply answers a PXE client in proxy DHCP mode: boot information
// and no address, leaving addresses to the network's DHCP server.
func (s *Server) proxyReply(req *dhcpv4.DHCPv4, sn *subnet, serverID netip.Addr, mac string, peer netip.AddrPort) *outcome {
	if !isPXE(req) && !isIPXE(req) {
		return nil
	}
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// On port 67 a REQUEST is for the address server, unless it names us.
		if sid := addr4(req.ServerIdentifier()); !s.ours[sid] {
			return nil
		}
		mt = dhcpv4.MessageTypeAck
	default:
		return nil
	}
	r := s.pxeReply(req, mt, sn, serverID, mac)
	if r == nil {
		return nil
	}
	if mt == dhcpv4.MessageTypeOffer {
		s.Stats.Offers.Add(1)
	} else {
		s.Stats.Acks.Add(1)
	}
	return &outcome{reply: r, to: replyTo(req, false)}
}

// pxeReply is a proxy DHCP answer: boot information, no address, and the
// PXE vendor options; nil when the client gets no boot file.
func (s *Server) pxeReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, sn *subnet, serverID netip.Addr, mac string) *dhcpv4.DHCPv4 {
	r := newReply(req, mt, serverID)
	s.addBoot(r, req, sn, mac)
	if r.BootFileName == "" && len(r.Options[67]) == 0 {
		return nil
	}
	r.Options[60] = []byte("PXEClient")
	// PXE vendor options: discovery control 8 = boot the file in this
	// offer, no boot server discovery.
	r.Options[43] = []byte{6, 1, 8, 255}
	return r
}

func newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, serverID netip.Addr) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  req.ClientIPAddr,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       make(dhcpv4.Options, 16),
	}
	r.Options[uint8(dhcpv4.OptionDHCPMessageType)] = []byte{byte(mt)}
	r.Options[uint8(dhcpv4.OptionServerIdentifier)] = serverID.AsSlice()
	// RFC 6842: echo the client identifier; RFC 3046: echo relay info.
	if v := req.Options.Get(dhcpv4.OptionClientIdentifier); v != nil {
		r.Options[uint8(dhcpv4.OptionClientIdentifier)] = v
	}
	if v := req.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil {
		r.Options[uint8(dhcpv4.OptionRelayAgentInformation)] = v
	}
	return r
}

func (s *Server) nak(req *dhcpv4.DHCPv4, serverID netip.Addr) *dhcpv4.DHCPv4 {
	r := newReply(req, dhcpv4.MessageTypeNak, serverID)
	r.ClientIPAddr = nil
	if addr4(req.GatewayIPAddr).IsValid() {
		// The relay must broadcast it: the client's address is wrong.
		r.SetBroadcast()
	}
	return r
}

// replyTo is where a reply goes (RFC 2131 4.1): to the relay when
// relayed, else to the client's address when it has one, else broadcast.
// A client without an address cannot be reached by unicast before it has
// answered ARP, which a UDP socket cannot work around, so it gets
// broadcasts (which every client accepts).
func replyTo(req *dhcpv4.DHCPv4, nak bool) netip.AddrPort {
	if gi := addr4(req.GatewayIPAddr); gi.IsValid() {
		return netip.AddrPortFrom(gi, serverPort)
	}
	if ci := addr4(req.ClientIPAddr); ci.IsValid() && !nak {
		return netip.AddrPortFrom(ci, clientPort)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), clientPort)
}

// addr4 converts an IPv4 address; the unspecified address and anything
// else than IPv4 give the zero Addr.
func addr4(ip net.IP) netip.Addr {
	v4 := ip.To4()
	if v4 == nil {
		return netip.Addr{}
	}
	a := netip.AddrFrom4([4]byte(v4))
	if a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
