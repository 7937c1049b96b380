package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DefaultProxyPort is the PXE boot server port (PXE 2.1, section 2.2.1).
// A PXE client that took its address from another DHCP server and boot
// information from a proxy DHCP offer asks the proxy again there: a
// DHCPREQUEST, unicast, with its new address in ciaddr, answered by a
// DHCPACK with the boot file.
const DefaultProxyPort = 4011

// proxyPort is the port 4011 sockets, one per interface, open while a
// subnet is in proxy mode.
type proxyPort struct {
	links []*link
	done  chan struct{} // closed when every reader has returned
}

// syncProxy opens the PXE boot server port when a subnet is in proxy
// mode and closes it when none is. The sockets are opened in the network
// namespace Listen ran in, whatever goroutine asks.
func (s *Server) syncProxy(ctx context.Context) {
	s.mu.Lock()
	want := false
	for _, sn := range s.state.subnets {
		want = want || sn.proxy
	}
	s.mu.Unlock()
	s.proxyMu.Lock()
	defer s.proxyMu.Unlock()
	switch {
	case want && s.proxy == nil && s.ns != nil && ctx.Err() == nil:
		p, err := s.openProxy()
		if err != nil {
			s.log.Error("dhcp: cannot open the PXE boot server port for proxy DHCP: PXE clients that ask there after the proxy offer will not boot (is another PXE server using the port?); retried at the next subnet change",
				"port", s.cfg.ProxyPort, "err", err)
			return
		}
		s.proxy = p
		s.log.Info("dhcp: answering proxy DHCP clients' PXE boot requests", "port", s.cfg.ProxyPort, "interfaces", s.cfg.Interfaces)
	case !want && s.proxy != nil:
		s.closeProxy()
		s.log.Info("dhcp: no subnet in proxy mode: PXE boot server port closed", "port", s.cfg.ProxyPort)
	}
}

// openProxy opens one socket per interface on the proxy port and starts
// their readers. It runs the opening on a thread of its own: entering
// the namespace must never leave a thread of the caller behind in it.
func (s *Server) openProxy() (*proxyPort, error) {
	p := &proxyPort{done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		errc <- s.ns.Do(func() error {
			for _, l := range s.links {
				conn, err := listenUDP(l.name, s.cfg.ProxyPort)
				if err != nil {
					return fmt.Errorf("listen on %s port %d: %w", l.name, s.cfg.ProxyPort, err)
				}
				p.links = append(p.links, &link{name: l.name, addrs: l.addrs, conn: conn})
			}
			return nil
		})
	}()
	if err := <-errc; err != nil {
		for _, l := range p.links {
			l.conn.Close()
		}
		return nil, err
	}
	readers := make(chan struct{}, len(p.links))
	for _, l := range p.links {
		go func() {
			defer func() { readers <- struct{}{} }()
			s.proxyReadLoop(l)
		}()
	}
	go func() {
		for range p.links {
			<-readers
		}
		close(p.done)
	}()
	return p, nil
}

// closeProxy closes the proxy port's sockets and waits for their readers.
// The caller holds proxyMu.
func (s *Server) closeProxy() {
	if s.proxy == nil {
		return
	}
	for _, l := range s.proxy.links {
		l.conn.Close()
	}
	<-s.proxy.done
	s.proxy = nil
}

// proxyReadLoop answers the requests of one proxy port socket until it is
// closed. PXE clients ask once per boot: no batching here.
func (s *Server) proxyReadLoop(l *link) {
	buf := make([]byte, 4096)
	for {
		n, peer, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dhcp read", "interface", l.name, "port", s.cfg.ProxyPort, "err", err)
			continue
		}
		s.handleProxyPacket(l, buf[:n], peer)
	}
}

// handleProxyPacket answers one packet received on the PXE boot server
// port.
func (s *Server) handleProxyPacket(l *link, data []byte, peer netip.AddrPort) {
	if b, to := s.processProxy(l, data, peer); b != nil {
		s.send(l, b, to)
	}
}

func (s *Server) processProxy(l *link, data []byte, peer netip.AddrPort) ([]byte, netip.AddrPort) {
	s.Stats.Received.Add(1)
	req := s.parse(data)
	if req == nil {
		return nil, netip.AddrPort{}
	}
	r, to := s.bootServerReply(l, req, peer)
	if r == nil {
		s.Stats.Ignored.Add(1)
		return nil, netip.AddrPort{}
	}
	return r.ToBytes(), to
}

// bootServerReply answers a PXE client's DHCPREQUEST on the proxy port:
// a DHCPACK with the boot file port 67 would have chosen, for clients of
// a subnet in proxy mode. Anything else (not PXE, not a REQUEST, a subnet
// drover hands addresses in) gets nothing.
func (s *Server) bootServerReply(l *link, req *dhcpv4.DHCPv4, peer netip.AddrPort) (*dhcpv4.DHCPv4, netip.AddrPort) {
	if req.MessageType() != dhcpv4.MessageTypeRequest || !isPXE(req) {
		return nil, netip.AddrPort{}
	}
	mac := req.ClientHWAddr.String()
	ci := addr4(req.ClientIPAddr)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	if s.cfg.OnlyKnown && st.knownMACs[mac] == "" && st.resByMAC[mac] == nil {
		return nil, netip.AddrPort{}
	}
	// The request is unicast from an address the client has: its subnet
	// is the relay's, else the one holding that address, else the
	// receiving interface's.
	sn, serverID := s.pick(l, addr4(req.GatewayIPAddr))
	if !addr4(req.GatewayIPAddr).IsValid() && ci.IsValid() {
		if c := st.subnetFor(ci); c != nil {
			sn = c
			for _, p := range l.addrs {
				if c.prefix.Contains(p.Addr()) {
					serverID = p.Addr()
				}
			}
		}
	}
	if sn == nil || !sn.proxy || !serverID.IsValid() {
		return nil, netip.AddrPort{}
	}
	r := s.pxeReply(req, dhcpv4.MessageTypeAck, sn, serverID, mac)
	if r == nil {
		return nil, netip.AddrPort{}
	}
	if item := pxeBootItem(req.Options.Get(dhcpv4.OptionVendorSpecificInformation)); item != nil {
		// A boot server discovery request names the boot item (type and
		// layer) it wants; clients take only an answer for that item.
		r.Options[43] = append([]byte{6, 1, 8, 71, 4}, append(item, 255)...)
	}
	s.Stats.ProxyAcks.Add(1)
	file := r.BootFileName
	if file == "" {
		file = string(r.Options[67])
	}
	s.log.Info("dhcp: PXE boot file on the proxy port", "mac", mac, "client", peer, "file", file)
	// Back where the request came from (the client's address and port);
	// a client that sent without an address gets a broadcast.
	to := peer
	if a := peer.Addr(); !a.IsValid() || a.IsUnspecified() || peer.Port() == 0 {
		to = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), clientPort)
		if ci.IsValid() {
			to = netip.AddrPortFrom(ci, clientPort)
		}
	}
	return r, to
}

// pxeBootItem is the PXE_BOOT_ITEM sub-option (71: type and layer, two
// bytes each) of a request's PXE vendor options, or nil.
func pxeBootItem(opts []byte) []byte {
	for i := 0; i < len(opts); {
		tag := opts[i]
		if tag == 255 {
			return nil
		}
		if tag == 0 {
			i++
			continue
		}
		if i+1 >= len(opts) {
			return nil
		}
		n := int(opts[i+1])
		if i+2+n > len(opts) {
			return nil
		}
		if tag == 71 && n == 4 {
			return append([]byte(nil), opts[i+2:i+6]...)
		}
		i += 2 + n
	}
	return nil
}
