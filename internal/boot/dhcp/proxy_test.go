package dhcp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func proxySubnet() *api.Subnet {
	return &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "office"}, CIDR: "10.0.0.0/24", Proxy: true}
}

var pxeClient = dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))

// pxeRequest is what a PXE client sends to the proxy's port 4011 once it
// has its address from the network's DHCP server.
func pxeRequest(mac string, ip string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	r, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mustMAC(mac)),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.ParseIP(ip)),
	}, mods...)...)
	if err != nil {
		panic(err)
	}
	return r
}

// proxyExchange sends req to the proxy port from peer and returns the
// reply and where it went (nil when none came within wait).
func (h *harness) proxyExchange(req *dhcpv4.DHCPv4, peer netip.AddrPort, wait time.Duration) (*dhcpv4.DHCPv4, netip.AddrPort) {
	h.srv.handleProxyPacket(h.link, req.ToBytes(), peer)
	return h.reply(wait)
}

// A PXE client asking on port 4011 gets a DHCPACK with the boot file port
// 67 chose for it, no address, the PXE options, sent back to where it
// asked from.
func TestProxyPortAnswersPXEClients(t *testing.T) {
	h := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1"), BootURL: "http://10.0.0.1:8080"}, proxySubnet())
	ipxe := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	for i, c := range []struct {
		name string
		mods []dhcpv4.Modifier
		file string
	}{
		{"bios", []dhcpv4.Modifier{pxeClient, withArch(iana.INTEL_X86PC)}, "undionly.kpxe"},
		{"uefi", []dhcpv4.Modifier{pxeClient, withArch(iana.EFI_X86_64)}, "ipxe.efi"},
		{"ipxe", []dhcpv4.Modifier{pxeClient, ipxe, withArch(iana.INTEL_X86PC)}, "http://10.0.0.1:8080/boot/52:54:00:00:01:02.ipxe"},
	} {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		// Port 67 first, as the client does: the proxy offer.
		offer := h.exchange(discover(mac, c.mods...))
		if offer == nil || offer.BootFileName != c.file {
			t.Fatalf("%s: proxy offer %v, want file %q", c.name, offer, c.file)
		}
		peer := netip.MustParseAddrPort("10.0.0.57:68")
		ack, to := h.proxyExchange(pxeRequest(mac, "10.0.0.57", c.mods...), peer, 2*time.Second)
		if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("%s: port 4011 answer %v, want an ACK", c.name, ack)
		}
		if ack.BootFileName != offer.BootFileName || !ack.ServerIPAddr.Equal(offer.ServerIPAddr) || ack.ClassIdentifier() != "PXEClient" {
			t.Errorf("%s: ACK file %q siaddr %s class %q; the offer on port 67 had %q %s", c.name, ack.BootFileName, ack.ServerIPAddr, ack.ClassIdentifier(), offer.BootFileName, offer.ServerIPAddr)
		}
		if !ack.YourIPAddr.IsUnspecified() || ack.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
			t.Errorf("%s: the ACK hands out an address (%s) or a lease", c.name, ack.YourIPAddr)
		}
		if !ack.ClientIPAddr.Equal(net.ParseIP("10.0.0.57")) || ack.ServerIdentifier().String() != "10.0.0.1" {
			t.Errorf("%s: ciaddr %s server id %s", c.name, ack.ClientIPAddr, ack.ServerIdentifier())
		}
		if !bytes.Equal(ack.Options.Get(dhcpv4.OptionVendorSpecificInformation), []byte{6, 1, 8, 255}) {
			t.Errorf("%s: PXE options %x", c.name, ack.Options.Get(dhcpv4.OptionVendorSpecificInformation))
		}
		if to != peer {
			t.Errorf("%s: the ACK went to %s, want the client's %s", c.name, to, peer)
		}
	}
	if n := h.srv.Stats.ProxyAcks.Load(); n != 3 {
		t.Errorf("ProxyAcks = %d, want 3", n)
	}
	peer := netip.MustParseAddrPort("10.0.0.58:68")
	if _, ok := h.storedLease(t, "10.0.0.57"); ok {
		t.Error("the proxy port stored a lease")
	}
	// Boot server discovery names a boot item (PXE vendor option 71,
	// type and layer): the answer carries it back, or the client drops it.
	// A truncated or absent one is ignored.
	for _, c := range []struct{ sent, want []byte }{
		{[]byte{71, 4, 0x80, 0x01, 0, 0, 255}, []byte{6, 1, 8, 71, 4, 0x80, 0x01, 0, 0, 255}},
		{[]byte{0, 6, 1, 3, 71, 4, 0, 0, 0, 0}, []byte{6, 1, 8, 71, 4, 0, 0, 0, 0, 255}},
		{[]byte{71, 4, 0x80, 0x01}, []byte{6, 1, 8, 255}},
		{[]byte{71, 2, 0x80, 0x01, 255}, []byte{6, 1, 8, 255}},
		{[]byte{6}, []byte{6, 1, 8, 255}},
	} {
		item := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, c.sent))
		ack, _ := h.proxyExchange(pxeRequest("52:54:00:00:01:08", "10.0.0.58", pxeClient, item), peer, 2*time.Second)
		if ack == nil || !bytes.Equal(ack.Options.Get(dhcpv4.OptionVendorSpecificInformation), c.want) {
			t.Errorf("request with PXE options %x: answer %v, want PXE options %x", c.sent, ack, c.want)
		}
	}

	// A client that sends without a source address gets a broadcast.
	_, to := h.proxyExchange(pxeRequest("52:54:00:00:01:09", "0.0.0.0", pxeClient), clientPeer, 2*time.Second)
	if to.String() != "255.255.255.255:68" {
		t.Errorf("reply to a client without address went to %s", to)
	}
}

// What is not a PXE client's DHCPREQUEST for a proxy subnet gets nothing
// on port 4011.
func TestProxyPortIgnores(t *testing.T) {
	full := labSubnet()
	full.CIDR, full.Range, full.Router, full.DNS = "10.9.0.0/24", nil, "", nil
	h := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1")}, proxySubnet(), full)
	peer := netip.MustParseAddrPort("10.0.0.57:68")
	relayedFromFull := func(d *dhcpv4.DHCPv4) { d.GatewayIPAddr = net.ParseIP("10.9.0.1") }
	for _, c := range []struct {
		name string
		req  *dhcpv4.DHCPv4
	}{
		{"not PXE", pxeRequest("52:54:00:00:02:01", "10.0.0.57")},
		{"iPXE without PXEClient", pxeRequest("52:54:00:00:02:02", "10.0.0.57", dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))))},
		{"DISCOVER", discover("52:54:00:00:02:03", pxeClient)},
		{"INFORM", pxeRequest("52:54:00:00:02:04", "10.0.0.57", pxeClient, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform))},
		{"a subnet drover leases in", pxeRequest("52:54:00:00:02:05", "10.9.0.57", pxeClient, relayedFromFull)},
		{"an address in no subnet, relayed from none", pxeRequest("52:54:00:00:02:06", "172.16.0.5", pxeClient, func(d *dhcpv4.DHCPv4) { d.GatewayIPAddr = net.ParseIP("172.16.0.1") })},
		{"arm64 UEFI: no boot file", pxeRequest("52:54:00:00:02:07", "10.0.0.57", pxeClient, withArch(iana.Arch(11)))},
	} {
		if r, _ := h.proxyExchange(c.req, peer, 100*time.Millisecond); r != nil {
			t.Errorf("%s: answered %s", c.name, r.Summary())
		}
	}
	if n := h.srv.Stats.ProxyAcks.Load(); n != 0 {
		t.Errorf("ProxyAcks = %d", n)
	}

	// --dhcp-only-known: unknown MACs are left alone here too.
	known := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1"), OnlyKnown: true}, proxySubnet(),
		&api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: "r"}, MAC: "52:54:00:00:02:10", IP: "10.0.0.20"})
	if r, _ := known.proxyExchange(pxeRequest("52:54:00:00:02:11", "10.0.0.57", pxeClient), peer, 100*time.Millisecond); r != nil {
		t.Errorf("only-known: answered an unknown MAC: %s", r.Summary())
	}
	if r, _ := known.proxyExchange(pxeRequest("52:54:00:00:02:10", "10.0.0.20", pxeClient), peer, 2*time.Second); r == nil {
		t.Error("only-known: no answer to a reserved MAC")
	}
}

// iPXE is told not to wait for ProxyDHCP offers (iPXE's option 175.176)
// when drover's own offer names its boot file; proxy offers, other
// clients and subnets with their own option 175 are left alone.
func TestIPXENoProxyWait(t *testing.T) {
	ipxe := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	own := labSubnet()
	own.Name, own.CIDR, own.Range, own.Router, own.DNS = "own", "10.1.0.0/24", &api.IPRange{Start: "10.1.0.100", End: "10.1.0.110"}, "", nil
	own.Options = map[string]string{"175": "hex:b00100"}
	h := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1"), BootURL: "http://10.0.0.1:8080"}, labSubnet(), own)
	noProxyWait := []byte{176, 1, 1}
	offer := h.exchange(discover("52:54:00:00:04:01", ipxe))
	for _, r := range []*dhcpv4.DHCPv4{offer, h.exchange(requestFor(offer, ipxe))} {
		if got := r.Options.Get(dhcpv4.GenericOptionCode(175)); !bytes.Equal(got, noProxyWait) {
			t.Errorf("iPXE %s: option 175 %x, want %x", r.MessageType(), got, noProxyWait)
		}
	}
	if got := h.dora("52:54:00:00:04:02", pxeClient).Options.Get(dhcpv4.GenericOptionCode(175)); got != nil {
		t.Errorf("PXE firmware got option 175 %x", got)
	}
	relayed := func(d *dhcpv4.DHCPv4) { d.GatewayIPAddr = net.ParseIP("10.1.0.1") }
	if got := h.dora("52:54:00:00:04:03", ipxe, relayed).Options.Get(dhcpv4.GenericOptionCode(175)); !bytes.Equal(got, []byte{0xb0, 1, 0}) {
		t.Errorf("a subnet's own option 175 became %x", got)
	}
	proxy := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1"), BootURL: "http://10.0.0.1:8080"}, proxySubnet())
	if got := proxy.exchange(discover("52:54:00:00:04:04", ipxe, pxeClient)).Options.Get(dhcpv4.GenericOptionCode(175)); got != nil {
		t.Errorf("proxy offer to iPXE has option 175 %x", got)
	}
}
