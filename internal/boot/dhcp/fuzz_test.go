package dhcp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/drover-project/drover/api"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzHandle feeds arbitrary bytes to the packet handling of port 67 and
// of the PXE boot server port (4011): it must never panic, and what does
// not parse as a DHCP request gets no answer.
func FuzzHandle(f *testing.F) {
	relayed := discover("52:54:00:00:00:02")
	relayed.GatewayIPAddr = net.ParseIP("10.0.0.254")
	offer, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))
	for _, p := range []*dhcpv4.DHCPv4{
		discover("52:54:00:00:00:01"),
		discover("52:54:00:00:00:01", withArch(iana.EFI_X86_64), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient"))),
		relayed,
		offer,
	} {
		f.Add(p.ToBytes())
	}
	req := requestFor(discover("52:54:00:00:00:01"), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.0.0.1"))))
	f.Add(req.ToBytes())
	f.Add(pxeRequest("52:54:00:00:00:03", "10.0.0.57", pxeClient, withArch(iana.INTEL_X86PC)).ToBytes())
	f.Add([]byte{})
	f.Add([]byte{1, 1, 6, 0})
	sn := labSubnet()
	sn.Range.End = "10.0.0.250"
	h := newHarness(f, Config{BootAddress: netip.MustParseAddr("10.0.0.1")}, sn,
		&api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: "r"}, MAC: "52:54:00:00:00:01", IP: "10.0.0.20"})
	// The proxy port's server: a subnet in proxy mode.
	proxy := newHarness(f, Config{BootAddress: netip.MustParseAddr("10.0.0.1")}, proxySubnet())
	f.Fuzz(func(t *testing.T, data []byte) {
		for len(proxy.conn.out) > 0 {
			<-proxy.conn.out
		}
		proxy.srv.handleProxyPacket(proxy.link, data, netip.MustParseAddrPort("10.0.0.57:68"))
		if _, err := dhcpv4.FromBytes(data); err != nil {
			select {
			case p := <-proxy.conn.out:
				t.Fatalf("port 4011 answered a malformed packet (%v) with %x", err, p.data)
			default:
			}
		}
		// Drain what earlier inputs sent.
		for len(h.conn.out) > 0 {
			<-h.conn.out
		}
		before := h.srv.Stats.LeaseWrites.Load() + h.srv.Stats.LeaseWriteErrors.Load()
		h.srv.handlePacket(h.link, data, clientPeer)
		if _, err := dhcpv4.FromBytes(data); err != nil {
			// Replies that need no lease write are sent before
			// handlePacket returns.
			select {
			case p := <-h.conn.out:
				t.Fatalf("answered a malformed packet (%v) with %x", err, p.data)
			default:
			}
			if h.srv.Stats.LeaseWrites.Load()+h.srv.Stats.LeaseWriteErrors.Load() != before || len(h.srv.commits) > 0 {
				t.Fatal("a malformed packet led to a lease write")
			}
		}
	})
}
