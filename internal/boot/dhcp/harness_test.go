package dhcp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/store/bolt"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// sent is one packet the server wrote.
type sent struct {
	data []byte
	to   netip.AddrPort
}

// fakeConn stands in for a socket: reads block until Close, writes are
// recorded.
type fakeConn struct {
	closed chan struct{}
	once   sync.Once
	out    chan sent
	// onSend, when set, runs as the server sends (before the packet is
	// handed to the test).
	onSend func(sent)
}

func newFakeConn() *fakeConn {
	return &fakeConn{closed: make(chan struct{}), out: make(chan sent, 1<<17)}
}

func (f *fakeConn) ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error) {
	<-f.closed
	return 0, netip.AddrPort{}, net.ErrClosed
}

func (f *fakeConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	p := sent{data: append([]byte(nil), b...), to: to}
	if f.onSend != nil {
		f.onSend(p)
	}
	f.out <- p
	return len(b), nil
}

func (f *fakeConn) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// harness runs a server on a fake link 10.0.0.1/24 ("eth-test") over a
// bolt store in a temp dir.
type harness struct {
	t      *testing.T
	dir    string
	st     *bolt.Store
	srv    *Server
	link   *link
	conn   *fakeConn
	cfg    Config
	cancel context.CancelFunc
	done   chan error
	now    time.Time
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newHarness(t testing.TB, cfg Config, objs ...api.Object) *harness {
	h := &harness{dir: t.TempDir(), cfg: cfg, now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	if tt, ok := t.(*testing.T); ok {
		h.t = tt
	}
	st, err := bolt.Open(filepath.Join(h.dir, "drover.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	t.Cleanup(func() { h.stop(); h.st.Close() })
	for _, o := range objs {
		h.put(t, o)
	}
	h.start(t)
	return h
}

func (h *harness) put(t testing.TB, o api.Object) {
	t.Helper()
	if err := model.Validate(o); err != nil {
		t.Fatalf("%s %s: %v", o.GetMeta().Kind, o.GetMeta().Name, err)
	}
	lbls, data, err := model.Encode(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(context.Background(), h.st, o.GetMeta().Kind, o.GetMeta().Name, lbls, data, 0); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) start(t testing.TB) {
	cfg := h.cfg
	cfg.Logger = quiet
	h.srv = New(h.st, cfg)
	h.srv.now = func() time.Time { return h.now }
	h.conn = newFakeConn()
	h.link = &link{name: "eth-test", addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}, conn: h.conn}
	h.srv.addLink(h.link)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.srv.Run(ctx) }()
	select {
	case <-h.srv.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready")
	}
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// restart stops the server, closes and reopens the store, and starts a
// new server on it.
func (h *harness) restart(t testing.TB) {
	h.stop()
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(h.dir, "drover.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	h.start(t)
}

// waitApplied waits until the server has seen the store's current revision.
func (h *harness) settle(t testing.TB) {
	t.Helper()
	rev, _ := h.st.Revision(context.Background())
	ch, err := h.st.Watch(context.Background(), rev-1)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	// The server's watcher got the same event; give it a moment to apply.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		if len(h.srv.commits) == 0 {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
}

// exchange sends req from peer and returns the reply (nil if none came
// within wait).
func (h *harness) exchangeFrom(req *dhcpv4.DHCPv4, peer netip.AddrPort, wait time.Duration) (*dhcpv4.DHCPv4, netip.AddrPort) {
	h.srv.handlePacket(h.link, req.ToBytes(), peer)
	return h.reply(wait)
}

// reply is the next packet the server sent and where to, or nil if none
// came within wait.
func (h *harness) reply(wait time.Duration) (*dhcpv4.DHCPv4, netip.AddrPort) {
	select {
	case p := <-h.conn.out:
		r, err := dhcpv4.FromBytes(p.data)
		if err != nil {
			h.t.Fatalf("server sent a packet that does not parse: %v", err)
		}
		return r, p.to
	case <-time.After(wait):
		return nil, netip.AddrPort{}
	}
}

var clientPeer = netip.MustParseAddrPort("0.0.0.0:68")

func (h *harness) exchange(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	r, _ := h.exchangeFrom(req, clientPeer, 2*time.Second)
	return r
}

func (h *harness) noReply(req *dhcpv4.DHCPv4) {
	h.t.Helper()
	if r, _ := h.exchangeFrom(req, clientPeer, 100*time.Millisecond); r != nil {
		h.t.Fatalf("unexpected reply: %s", r.Summary())
	}
}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func discover(mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d, err := dhcpv4.NewDiscovery(mustMAC(mac), mods...)
	if err != nil {
		panic(err)
	}
	return d
}

func requestFor(offer *dhcpv4.DHCPv4, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	r, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		panic(err)
	}
	return r
}

// dora runs a whole exchange and returns the ACK.
func (h *harness) dora(mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	h.t.Helper()
	offer := h.exchange(discover(mac, mods...))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		h.t.Fatalf("%s: no offer (got %v)", mac, offer)
	}
	ack := h.exchange(requestFor(offer, mods...))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		h.t.Fatalf("%s: no ack (got %v)", mac, ack)
	}
	return ack
}

func (h *harness) storedLease(t testing.TB, ip string) (*api.Lease, bool) {
	rec, err := h.st.Get(context.Background(), api.KindLease, ip)
	if err != nil {
		return nil, false
	}
	var l api.Lease
	if err := model.Decode(rec, &l); err != nil {
		t.Fatal(err)
	}
	return &l, true
}

func labSubnet() *api.Subnet {
	return &api.Subnet{
		Meta:   api.Meta{Kind: api.KindSubnet, Name: "lab"},
		CIDR:   "10.0.0.0/24",
		Range:  &api.IPRange{Start: "10.0.0.100", End: "10.0.0.109"},
		Router: "10.0.0.1",
		DNS:    []string{"10.0.0.53"},
		Domain: "lab.example",
	}
}

func withArch(a iana.Arch) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClientArch(a))
}

func openBolt(dir string) (*bolt.Store, error) {
	return bolt.Open(filepath.Join(dir, "drover.db"), bolt.Options{})
}
