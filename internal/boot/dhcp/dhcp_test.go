package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func TestDORAGivesSubnetSettings(t *testing.T) {
	h := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1")}, labSubnet())
	ack := h.dora("52:54:00:00:00:01")
	if got := ack.YourIPAddr.String(); got != "10.0.0.100" {
		t.Errorf("yiaddr %s, want the first of the range", got)
	}
	if r := ack.Router(); len(r) != 1 || r[0].String() != "10.0.0.1" {
		t.Errorf("router %v", r)
	}
	if d := ack.DNS(); len(d) != 1 || d[0].String() != "10.0.0.53" {
		t.Errorf("dns %v", d)
	}
	if ack.DomainName() != "lab.example" || ack.SubnetMask().String() != "ffffff00" {
		t.Errorf("domain %q mask %s", ack.DomainName(), ack.SubnetMask())
	}
	if lt := ack.IPAddressLeaseTime(0); lt != time.Hour {
		t.Errorf("lease time %s", lt)
	}
	if ack.ServerIdentifier().String() != "10.0.0.1" || ack.ServerIPAddr.String() != "10.0.0.1" {
		t.Errorf("server id %s siaddr %s", ack.ServerIdentifier(), ack.ServerIPAddr)
	}
	l, ok := h.storedLease(t, "10.0.0.100")
	if !ok || l.MAC != "52:54:00:00:00:01" || l.State != api.LeaseBound || l.Subnet != "lab" || !l.ExpiresAt.Equal(h.now.Add(time.Hour)) {
		t.Errorf("stored lease %+v", l)
	}
}

// No address is ever handed to two clients; the pool runs out cleanly.
func TestAllocationUniqueAndExhaustion(t *testing.T) {
	h := newHarness(t, Config{}, labSubnet())
	seen := map[string]string{}
	for i := 0; i < 10; i++ {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		ip := h.dora(mac).YourIPAddr.String()
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s given to %s and %s", ip, other, mac)
		}
		seen[ip] = mac
	}
	h.noReply(discover("52:54:00:00:01:ff"))
	// The same client asking again keeps its address.
	if ip := h.dora("52:54:00:00:01:03").YourIPAddr.String(); seen[ip] != "52:54:00:00:01:03" {
		t.Errorf("returning client got %s (had another)", ip)
	}
	// An offer is held: a second client does not get the offered address.
	h2 := newHarness(t, Config{}, labSubnet())
	o1 := h2.exchange(discover("52:54:00:00:02:01"))
	o2 := h2.exchange(discover("52:54:00:00:02:02"))
	if o1.YourIPAddr.Equal(o2.YourIPAddr) {
		t.Errorf("both offered %s", o1.YourIPAddr)
	}
	// Requesting another client's address is refused.
	req := requestFor(o1)
	req.ClientHWAddr = mustMAC("52:54:00:00:02:02")
	if r := h2.exchange(req); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("stealing an offered address: %v", r)
	}
}

func TestReservations(t *testing.T) {
	res := &api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: "n1"}, MAC: "52:54:00:00:00:aa", IP: "10.0.0.50", Hostname: "node1"}
	h := newHarness(t, Config{}, labSubnet(), res)
	ack := h.dora("52:54:00:00:00:aa")
	if ack.YourIPAddr.String() != "10.0.0.50" || ack.HostName() != "node1" {
		t.Errorf("reserved client got %s %q", ack.YourIPAddr, ack.HostName())
	}
	// A reservation made later takes effect without restart: the client
	// is NAKed off its dynamic address and then gets its fixed one.
	dyn := h.dora("52:54:00:00:00:bb")
	h.put(t, &api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: "n2"}, MAC: "52:54:00:00:00:bb", IP: "10.0.0.60"})
	h.settle(t)
	renew, _ := dhcpv4.NewRenewFromAck(dyn)
	if r := h.exchange(renew); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("renew after reservation: %v", r)
	}
	if ip := h.dora("52:54:00:00:00:bb").YourIPAddr.String(); ip != "10.0.0.60" {
		t.Errorf("after reservation got %s", ip)
	}
	// A reserved address inside the range is never given to others.
	h.put(t, &api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: "n3"}, MAC: "52:54:00:00:00:cc", IP: "10.0.0.102"})
	h.settle(t)
	for i := 0; i < 7; i++ {
		if ip := h.dora(fmt.Sprintf("52:54:00:00:03:%02x", i)).YourIPAddr.String(); ip == "10.0.0.102" {
			t.Fatalf("reserved address given to another client")
		}
	}
}

func TestSubnetChangesFollowed(t *testing.T) {
	h := newHarness(t, Config{})
	h.noReply(discover("52:54:00:00:00:01"))
	sn := labSubnet()
	h.put(t, sn)
	h.settle(t)
	if ack := h.dora("52:54:00:00:00:01"); ack.Router()[0].String() != "10.0.0.1" {
		t.Errorf("router %v", ack.Router())
	}
	sn.Router = "10.0.0.254"
	sn.LeaseTime = "2h"
	h.put(t, sn)
	h.settle(t)
	ack := h.dora("52:54:00:00:00:01")
	if ack.Router()[0].String() != "10.0.0.254" || ack.IPAddressLeaseTime(0) != 2*time.Hour {
		t.Errorf("after update: router %v lease %s", ack.Router(), ack.IPAddressLeaseTime(0))
	}
}

func TestRelayPicksSubnetByGiaddr(t *testing.T) {
	remote := &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "remote"}, CIDR: "192.168.7.0/24",
		Range: &api.IPRange{Start: "192.168.7.10", End: "192.168.7.20"}, Router: "192.168.7.1"}
	h := newHarness(t, Config{}, labSubnet(), remote)
	relay := func(d *dhcpv4.DHCPv4) { d.GatewayIPAddr = net.ParseIP("192.168.7.1"); d.HopCount = 1 }
	peer := netip.MustParseAddrPort("192.168.7.1:67")
	offer, to := h.exchangeFrom(discover("52:54:00:00:00:01", relay), peer, 2*time.Second)
	if offer == nil || offer.YourIPAddr.String() != "192.168.7.10" {
		t.Fatalf("relayed offer %v", offer)
	}
	if to.String() != "192.168.7.1:67" || !offer.GatewayIPAddr.Equal(net.ParseIP("192.168.7.1")) {
		t.Errorf("reply went to %s with giaddr %s, want the relay on port 67", to, offer.GatewayIPAddr)
	}
	ack, to := h.exchangeFrom(requestFor(offer, relay), peer, 2*time.Second)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || to.String() != "192.168.7.1:67" {
		t.Fatalf("relayed ack %v to %s", ack, to)
	}
	// A relay on a network drover has no subnet for gets no answer.
	other := func(d *dhcpv4.DHCPv4) { d.GatewayIPAddr = net.ParseIP("172.16.0.1") }
	h.noReply(discover("52:54:00:00:00:02", other))
}

func TestProxyMode(t *testing.T) {
	sn := &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "lab"}, CIDR: "10.0.0.0/24", Proxy: true}
	h := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1")}, sn)
	// Not PXE: someone else's business.
	h.noReply(discover("52:54:00:00:00:01"))
	pxe := dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))
	offer := h.exchange(discover("52:54:00:00:00:01", pxe, withArch(iana.INTEL_X86PC)))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("proxy offer %v", offer)
	}
	if !offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "undionly.kpxe" || offer.ServerIPAddr.String() != "10.0.0.1" || offer.ClassIdentifier() != "PXEClient" {
		t.Errorf("proxy offer: yiaddr %s file %q siaddr %s class %q", offer.YourIPAddr, offer.BootFileName, offer.ServerIPAddr, offer.ClassIdentifier())
	}
	if _, ok := h.storedLease(t, "10.0.0.100"); ok || offer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Error("proxy mode leased an address")
	}
}

func TestBootFileChoice(t *testing.T) {
	h := newHarness(t, Config{BootAddress: netip.MustParseAddr("10.0.0.1"), BootURL: "http://10.0.0.1:8080/"}, labSubnet())
	ipxe := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	ipxeRFC := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("\x04iPXE")))
	httpClient := dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001"))
	cases := []struct {
		name  string
		mods  []dhcpv4.Modifier
		file  string
		class string
	}{
		{"bios", []dhcpv4.Modifier{withArch(iana.INTEL_X86PC)}, "undionly.kpxe", ""},
		{"no arch", nil, "undionly.kpxe", ""},
		{"uefi bc", []dhcpv4.Modifier{withArch(iana.EFI_BC)}, "ipxe.efi", ""},
		{"uefi x86-64", []dhcpv4.Modifier{withArch(iana.EFI_X86_64)}, "ipxe.efi", ""},
		{"http boot by arch", []dhcpv4.Modifier{withArch(iana.Arch(16))}, "http://10.0.0.1:8080/ipxe.efi", "HTTPClient"},
		{"http boot by class", []dhcpv4.Modifier{httpClient, withArch(iana.EFI_X86_64)}, "http://10.0.0.1:8080/ipxe.efi", "HTTPClient"},
		{"ipxe", []dhcpv4.Modifier{ipxe, withArch(iana.EFI_X86_64)}, "http://10.0.0.1:8080/boot/52:54:00:00:00:%02x.ipxe", ""},
		{"ipxe rfc3004", []dhcpv4.Modifier{ipxeRFC}, "http://10.0.0.1:8080/boot/52:54:00:00:00:%02x.ipxe", ""},
		{"arm64 efi", []dhcpv4.Modifier{withArch(iana.Arch(11))}, "", ""},
	}
	for i, c := range cases {
		mac := fmt.Sprintf("52:54:00:00:00:%02x", i)
		ack := h.dora(mac, c.mods...)
		want := c.file
		if want != "" && want[len(want)-1] == 'e' && want[len(want)-5:] == ".ipxe" {
			want = fmt.Sprintf(c.file, i)
		}
		if ack.BootFileName != want || ack.ClassIdentifier() != c.class {
			t.Errorf("%s: file %q class %q, want %q %q", c.name, ack.BootFileName, ack.ClassIdentifier(), want, c.class)
		}
	}
}

// The lease is in the store before the client is acknowledged.
func TestLeaseStoredBeforeAck(t *testing.T) {
	h := newHarness(t, Config{}, labSubnet())
	checked := make(chan error, 16)
	h.conn.onSend = func(p sent) {
		r, err := dhcpv4.FromBytes(p.data)
		if err != nil || r.MessageType() != dhcpv4.MessageTypeAck {
			return
		}
		if l, ok := h.storedLease(t, r.YourIPAddr.String()); !ok || l.MAC != r.ClientHWAddr.String() || l.State != api.LeaseBound {
			checked <- fmt.Errorf("ACK for %s sent before its lease was stored (%+v)", r.YourIPAddr, l)
			return
		}
		checked <- nil
	}
	for i := 0; i < 5; i++ {
		h.dora(fmt.Sprintf("52:54:00:00:04:%02x", i))
		if err := <-checked; err != nil {
			t.Fatal(err)
		}
	}
}

func TestReleaseAndDecline(t *testing.T) {
	h := newHarness(t, Config{}, labSubnet())
	ack := h.dora("52:54:00:00:00:01")
	rel, _ := dhcpv4.NewReleaseFromACK(ack)
	h.noReply(rel)
	h.settle(t)
	if l, _ := h.storedLease(t, ack.YourIPAddr.String()); l == nil || l.State != api.LeaseReleased {
		t.Errorf("after release: %+v", l)
	}
	// A client that finds its address in use declines it: nobody gets it
	// during the hold, not even that client.
	offer := h.exchange(discover("52:54:00:00:00:02"))
	dec, _ := dhcpv4.New(dhcpv4.WithReply(offer), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)), dhcpv4.WithOptionCopied(offer, dhcpv4.OptionServerIdentifier))
	dec.OpCode = dhcpv4.OpcodeBootRequest
	h.noReply(dec)
	h.settle(t)
	if l, _ := h.storedLease(t, offer.YourIPAddr.String()); l == nil || l.State != api.LeaseDeclined {
		t.Fatalf("after decline: %+v", l)
	}
	if again := h.exchange(discover("52:54:00:00:00:02")); again.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Errorf("declined address offered again")
	}
}

func TestRestartKeepsLeases(t *testing.T) {
	h := newHarness(t, Config{}, labSubnet())
	ack := h.dora("52:54:00:00:00:01")
	h.restart(t)
	// The client's address is still its own, and nobody else's.
	for i := 0; i < 9; i++ {
		if ip := h.dora(fmt.Sprintf("52:54:00:00:05:%02x", i)).YourIPAddr; ip.Equal(ack.YourIPAddr) {
			t.Fatalf("after restart %s went to another client", ip)
		}
	}
	renew, _ := dhcpv4.NewRenewFromAck(ack)
	r, to := h.exchangeFrom(renew, netip.MustParseAddrPort(ack.YourIPAddr.String()+":68"), 2*time.Second)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.Equal(ack.YourIPAddr) {
		t.Fatalf("renew after restart: %v", r)
	}
	if to.Addr().String() != ack.YourIPAddr.String() {
		t.Errorf("renewal answered to %s, want the client's address", to)
	}
}

func TestOnlyKnown(t *testing.T) {
	m := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "m1"}, Status: api.MachineStatus{
		Inventory: &api.Inventory{NICs: []api.NIC{{Name: "eth0", MAC: "52:54:00:00:00:01"}}}}}
	h := newHarness(t, Config{OnlyKnown: true}, labSubnet(), m)
	h.noReply(discover("52:54:00:00:00:02"))
	if ack := h.dora("52:54:00:00:00:01"); ack.HostName() != "m1" {
		t.Errorf("known machine's hostname %q", ack.HostName())
	}
	// A machine registering later is served at once.
	m2 := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "m2"}, Status: api.MachineStatus{
		Inventory: &api.Inventory{NICs: []api.NIC{{Name: "eth0", MAC: "52:54:00:00:00:02"}}}}}
	h.put(t, m2)
	h.settle(t)
	h.dora("52:54:00:00:00:02")
}

func TestInform(t *testing.T) {
	h := newHarness(t, Config{}, labSubnet())
	inf, _ := dhcpv4.NewInform(mustMAC("52:54:00:00:00:01"), net.ParseIP("10.0.0.7"))
	r, to := h.exchangeFrom(inf, netip.MustParseAddrPort("10.0.0.7:68"), 2*time.Second)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.IsUnspecified() || r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Fatalf("inform: %v", r)
	}
	if to.String() != "10.0.0.7:68" {
		t.Errorf("inform answered to %s", to)
	}
}

// The hand-written lease encoding is what model.Encode makes.
func TestEncodeLeaseMatchesModel(t *testing.T) {
	for _, l := range []*lease{
		{ip: netip.MustParseAddr("10.0.0.5"), mac: "52:54:00:00:00:01", subnet: "lab", hostname: "n1", state: api.LeaseBound, expires: time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)},
		{ip: netip.MustParseAddr("10.0.0.6"), mac: "52:54:00:00:00:02", subnet: "lab.x_y", state: api.LeaseReleased, expires: time.Date(2030, 1, 2, 3, 4, 5, 0, time.Local)},
		{ip: netip.MustParseAddr("10.0.0.7"), mac: "52:54:00:00:00:03", subnet: "a<b", state: api.LeaseDeclined},
	} {
		lbls, got, err := encodeLease(l)
		wantLbls, want, _ := model.Encode(l.object())
		if err != nil || string(got) != string(want) || lbls["subnet"] != wantLbls["subnet"] {
			t.Errorf("encodeLease:\n got %s %v\nwant %s %v", got, lbls, want, wantLbls)
		}
	}
}
