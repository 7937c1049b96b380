package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkDORA measures whole relayed exchanges through the handler and
// the store (a real bolt file), as perfdhcp drives them, without sockets.
func BenchmarkDORA(b *testing.B) {
	sn := &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "bench"}, CIDR: "10.214.0.0/16",
		Range: &api.IPRange{Start: "10.214.1.0", End: "10.214.254.255"}, Router: "10.214.0.1"}
	h := newHarness(b, Config{}, sn)
	h.now = time.Now()
	relay := net.ParseIP("10.214.0.2")
	peer := netip.MustParseAddrPort("10.214.0.2:67")
	// Replies are read by a separate goroutine, as perfdhcp would.
	acks := make(chan struct{}, 4096)
	go func() {
		for p := range h.conn.out {
			if r, err := dhcpv4.FromBytes(p.data); err == nil && r.MessageType() == dhcpv4.MessageTypeOffer {
				req := requestFor(r)
				req.GatewayIPAddr = relay
				h.srv.handlePacket(h.link, req.ToBytes(), peer)
			} else {
				acks <- struct{}{}
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := 0; i < b.N; i++ {
			mac := make(net.HardwareAddr, 6)
			binary.BigEndian.PutUint32(mac[2:], uint32(i%60000))
			d, _ := dhcpv4.NewDiscovery(mac)
			d.GatewayIPAddr = relay
			h.srv.handlePacket(h.link, d.ToBytes(), peer)
		}
	}()
	for i := 0; i < b.N; i++ {
		<-acks
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "DORA/s")
}
