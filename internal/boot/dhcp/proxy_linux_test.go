package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/netns"
	"github.com/drover-project/drover/internal/store"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// TestProxyPortSockets: real UDP sockets in two network namespaces. The
// server opens port 4011 once a subnet is in proxy mode (the store's
// event, after Listen, in the namespace Listen ran in) and answers a PXE
// client's unicast DHCPREQUEST there from port 4011; it closes the port
// when no subnet is in proxy mode any more (the client's next request is
// refused: ICMP port unreachable).
func TestProxyPortSockets(t *testing.T) {
	p := newNetnsPair(t, "10.215.0.1/24")
	run(t, "ip", "-n", p.cliNS, "addr", "add", "10.215.0.57/24", "dev", p.cliIf)
	sn := &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "office"}, CIDR: "10.215.0.0/24", Range: &api.IPRange{Start: "10.215.0.100", End: "10.215.0.110"}}
	h := &harness{dir: t.TempDir(), cfg: Config{Interfaces: []string{p.srvIf}, BootAddress: netip.MustParseAddr("10.215.0.1")}, t: t}
	openStore(t, h)
	h.put(t, sn)
	startReal(t, h, p)

	var conn *net.UDPConn
	if err := netns.Do(p.cliNS, func() (err error) {
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.215.0.57"), Port: 68}, &net.UDPAddr{IP: net.ParseIP("10.215.0.1"), Port: DefaultProxyPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := pxeRequest("52:54:00:00:03:01", "10.215.0.57", pxeClient, withArch(iana.INTEL_X86PC))
	// ask sends the request and reports the ACK, or "refused" when
	// nothing listens on the port, or "" when nothing came in time.
	ask := func() (*dhcpv4.DHCPv4, string) {
		if _, err := conn.Write(req.ToBytes()); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return nil, "refused"
			}
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := conn.Read(buf)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, "refused"
		case err != nil:
			return nil, ""
		}
		r, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("the answer does not parse: %v", err)
		}
		return r, "answered"
	}
	waitFor := func(want string) *dhcpv4.DHCPv4 {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		got := ""
		for time.Now().Before(deadline) {
			var r *dhcpv4.DHCPv4
			if r, got = ask(); got == want {
				return r
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("port %d: %q, want %q", DefaultProxyPort, got, want)
		return nil
	}

	// No subnet in proxy mode: nothing listens on 4011.
	waitFor("refused")

	sn.Proxy, sn.Range = true, nil
	update(t, h, sn)
	ack := waitFor("answered")
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "undionly.kpxe" || ack.ServerIPAddr.String() != "10.215.0.1" ||
		ack.ClassIdentifier() != "PXEClient" || !ack.YourIPAddr.IsUnspecified() {
		t.Fatalf("port 4011 answer: %s", ack.Summary())
	}
	// Not a PXE client: no answer, though the port is open.
	plain := pxeRequest("52:54:00:00:03:02", "10.215.0.57")
	if _, err := conn.Write(plain.ToBytes()); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 1500)); err == nil {
		t.Errorf("a client without PXEClient got %d bytes", n)
	}

	// Back to full DHCP: the port closes.
	sn.Proxy, sn.Range = false, &api.IPRange{Start: "10.215.0.100", End: "10.215.0.110"}
	update(t, h, sn)
	waitFor("refused")
	if n := h.srv.Stats.ProxyAcks.Load(); n != 1 {
		t.Errorf("ProxyAcks = %d, want 1", n)
	}
}

// update writes o over its stored version.
func update(t *testing.T, h *harness, o api.Object) {
	t.Helper()
	if err := model.Validate(o); err != nil {
		t.Fatal(err)
	}
	lbls, data, err := model.Encode(o)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := h.st.Get(context.Background(), o.GetMeta().Kind, o.GetMeta().Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(context.Background(), h.st, o.GetMeta().Kind, o.GetMeta().Name, lbls, data, rec.Revision); err != nil {
		t.Fatal(err)
	}
}
