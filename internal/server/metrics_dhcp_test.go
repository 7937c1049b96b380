package server

import (
	"strings"
	"testing"

	"github.com/drover-project/drover/internal/boot/dhcp"
)

func TestDHCPMetrics(t *testing.T) {
	var st dhcp.Stats
	st.Received.Add(7)
	st.Offers.Add(3)
	st.Acks.Add(2)
	st.LeaseWrites.Add(2)
	st.ProxyAcks.Add(4)
	var b strings.Builder
	writeDHCPMetrics(&b, &st)
	for _, want := range []string{
		"drover_dhcp_packets_received_total 7\n",
		`drover_dhcp_replies_total{type="offer"} 3` + "\n",
		`drover_dhcp_replies_total{type="ack"} 2` + "\n",
		`drover_dhcp_replies_total{type="proxy_ack"} 4` + "\n",
		"drover_dhcp_lease_writes_total 2\n",
		"# TYPE drover_dhcp_replies_total counter\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
	// A server without DHCP says nothing about it.
	e := startServer(t, nil)
	code, body := e.raw(e.admin.Token, "GET", "/metrics", "", nil)
	if code != 200 || strings.Contains(string(body), "drover_dhcp_") {
		t.Fatalf("metrics without DHCP: %d\n%s", code, body)
	}
}
