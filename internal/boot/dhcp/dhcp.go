// Package dhcp is drover's DHCPv4 server: addresses from the store's
// Subnet objects, fixed ones from Reservation objects, and every lease
// written to the store as a Lease object before the client is
// acknowledged. It follows the store's event stream, so subnet,
// reservation and machine changes take effect without a restart.
//
// Packets are parsed and built with github.com/insomniacslk/dhcp/dhcpv4;
// sockets are our own (one UDP socket per interface, SO_BINDTODEVICE), see
// docs/decisions.md.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/netns"
	"github.com/drover-project/drover/internal/store"
	"golang.org/x/net/ipv4"
)

// Config configures the DHCP server.
type Config struct {
	// Interfaces are the network interfaces to serve on. The server is off
	// without any.
	Interfaces []string
	// OnlyKnown ignores clients whose MAC is neither a NIC of a machine in
	// the inventory nor reserved.
	OnlyKnown bool
	// BootAddress is the address advertised to machines: next-server
	// (siaddr) for TFTP unless a subnet names another, and the host of
	// BootURL when that is empty.
	BootAddress netip.Addr
	// BootURL is the base of the HTTP boot server ("http://10.0.0.1:8080"):
	// iPXE clients get BootURL/boot/<mac>.ipxe, UEFI HTTP boot clients
	// BootURL/<HTTPBootFile>.
	BootURL string
	// HTTPBootFile is the file UEFI HTTP boot clients load; default
	// ipxe.efi.
	HTTPBootFile string
	Logger       *slog.Logger
	// Port is the server port to listen on; default 67 (tests use others).
	Port int
	// ProxyPort is the PXE boot server port, open while a subnet is in
	// proxy mode; default DefaultProxyPort (4011).
	ProxyPort int
}

// Timing.
const (
	// offerHold is how long an offered address is kept for the client.
	offerHold = 60 * time.Second
	// declineHold keeps an address a client declined (found in use) from
	// being handed out again for this long.
	declineHold = time.Hour
	// maxBatch bounds the leases written in one store transaction.
	maxBatch = 1024
	// readers is how many goroutines read each socket.
	readers = 2
)

// Stats counts what the server did (for /metrics and tests).
type Stats struct {
	Received, Malformed, Ignored                   atomic.Int64
	Offers, Acks, Naks, Releases, Declines, Inform atomic.Int64
	LeaseWrites, LeaseWriteErrors                  atomic.Int64
	// ProxyAcks are the DHCPACKs sent on the PXE boot server port.
	ProxyAcks atomic.Int64
}

// Server is a DHCPv4 server driven by the store.
type Server struct {
	cfg Config
	st  store.Store
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex
	state *state
	links []*link
	// ours are the addresses clients may name as server identifier.
	ours map[netip.Addr]bool

	commits chan *commit
	ready   chan struct{}
	Stats   Stats

	// ns is the network namespace Listen ran in, where the proxy port is
	// opened later; proxy is that port while a subnet is in proxy mode.
	ns      *netns.Handle
	proxyMu sync.Mutex
	proxy   *proxyPort
}

// link is one interface the server answers on.
type link struct {
	name  string
	addrs []netip.Prefix
	conn  packetConn
}

// packetConn is what the server needs of a UDP socket.
type packetConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	Close() error
}

// batchWriter sends many datagrams in one system call (sendmmsg).
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// udpConn is a socket with batched writes.
type udpConn struct {
	*net.UDPConn
	pc *ipv4.PacketConn
}

func (c udpConn) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	return c.pc.WriteBatch(ms, flags)
}

func (c udpConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	return c.pc.ReadBatch(ms, flags)
}

// batchReader receives many datagrams in one system call (recvmmsg).
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// New makes a server; Listen opens its sockets and Run serves.
func New(st store.Store, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Port == 0 {
		cfg.Port = 67
	}
	if cfg.ProxyPort == 0 {
		cfg.ProxyPort = DefaultProxyPort
	}
	if cfg.HTTPBootFile == "" {
		cfg.HTTPBootFile = "ipxe.efi"
	}
	cfg.BootURL = strings.TrimRight(cfg.BootURL, "/")
	if cfg.BootURL == "" && cfg.BootAddress.IsValid() {
		cfg.BootURL = "http://" + cfg.BootAddress.String()
	}
	return &Server{
		cfg:     cfg,
		st:      st,
		log:     cfg.Logger.With("service", "dhcp"),
		now:     time.Now,
		state:   newState(),
		ours:    map[netip.Addr]bool{},
		commits: make(chan *commit, 4*maxBatch),
		ready:   make(chan struct{}),
	}
}

// Listen opens one socket per configured interface and reads the
// interfaces' IPv4 addresses (which pick the subnet of requests that are
// not relayed). Sockets and addresses belong to the network namespace of
// the calling thread; the proxy port (4011) is opened later in the same
// one, while a subnet is in proxy mode.
func (s *Server) Listen() error {
	if len(s.cfg.Interfaces) == 0 {
		return errors.New("dhcp: no interface to serve on (--dhcp-interface)")
	}
	for _, name := range s.cfg.Interfaces {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			s.closeLinks()
			return fmt.Errorf("dhcp: interface %q: %w", name, err)
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			s.closeLinks()
			return fmt.Errorf("dhcp: addresses of %q: %w", name, err)
		}
		var prefixes []netip.Prefix
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && ipn.IP.To4() != nil {
					ones, _ := ipn.Mask.Size()
					prefixes = append(prefixes, netip.PrefixFrom(ip, ones))
				}
			}
		}
		if len(prefixes) == 0 {
			s.log.Warn("interface has no IPv4 address: only relayed requests will be answered on it", "interface", name)
		}
		conn, err := listenUDP(name, s.cfg.Port)
		if err != nil {
			s.closeLinks()
			return fmt.Errorf("dhcp: listen on %s port %d: %w", name, s.cfg.Port, err)
		}
		s.addLink(&link{name: name, addrs: prefixes, conn: udpConn{conn, ipv4.NewPacketConn(conn)}})
	}
	ns, err := netns.Current()
	if err != nil {
		s.closeLinks()
		return fmt.Errorf("dhcp: %w", err)
	}
	s.ns = ns
	return nil
}

func (s *Server) addLink(l *link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.links = append(s.links, l)
	for _, p := range l.addrs {
		s.ours[p.Addr()] = true
	}
	if s.cfg.BootAddress.IsValid() {
		s.ours[s.cfg.BootAddress] = true
	}
}

func (s *Server) closeLinks() {
	for _, l := range s.links {
		l.conn.Close()
	}
}

// closeAll closes every socket: port 67's, the proxy port's, and the
// namespace handle.
func (s *Server) closeAll() {
	s.closeLinks()
	s.proxyMu.Lock()
	s.closeProxy()
	if s.ns != nil {
		s.ns.Close()
		s.ns = nil
	}
	s.proxyMu.Unlock()
}

// Ready is closed once the server has loaded the store and answers.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run loads subnets, reservations, machines and leases from the store,
// then answers requests until ctx ends. Lease writes under way when ctx
// ends are finished or abandoned (never acknowledged).
func (s *Server) Run(ctx context.Context) error {
	defer s.closeAll()
	st, from, err := load(ctx, s.st, nil)
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	subnets, leases := len(st.subnets), len(st.leases)
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	close(s.ready)
	s.log.Info("dhcp server ready", "interfaces", s.cfg.Interfaces, "subnets", subnets, "leases", leases, "bootAddress", s.cfg.BootAddress, "bootURL", s.cfg.BootURL)
	s.syncProxy(ctx)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.follow(ctx, from)
	}()
	go func() {
		defer wg.Done()
		s.commitLoop(ctx)
	}()
	// Readers parse and build packets in parallel; only the decisions
	// are serialized (under mu).
	for _, l := range s.links {
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.readLoop(ctx, l)
			}()
		}
	}
	<-ctx.Done()
	s.closeLinks()
	wg.Wait()
	return nil
}

func (s *Server) readLoop(ctx context.Context, l *link) {
	if br, ok := l.conn.(batchReader); ok {
		s.readBatches(ctx, l, br)
		return
	}
	buf := make([]byte, 4096)
	for {
		n, peer, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dhcp read", "interface", l.name, "err", err)
			continue
		}
		s.handlePacket(l, buf[:n], peer)
	}
}

// readBatches reads up to 32 datagrams per system call.
func (s *Server) readBatches(ctx context.Context, l *link, br batchReader) {
	msgs := make([]ipv4.Message, 32)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	bw, _ := l.conn.(batchWriter)
	var replies []ipv4.Message
	for {
		n, err := br.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dhcp read", "interface", l.name, "err", err)
			continue
		}
		// Replies that need no lease write (OFFERs, NAKs) go out together
		// once the batch is handled.
		replies = replies[:0]
		for _, m := range msgs[:n] {
			var peer netip.AddrPort
			if ua, ok := m.Addr.(*net.UDPAddr); ok {
				peer = ua.AddrPort()
			}
			b, to := s.process(l, m.Buffers[0][:m.N], peer)
			if b == nil {
				continue
			}
			if bw == nil {
				s.send(l, b, to)
				continue
			}
			replies = append(replies, ipv4.Message{Buffers: [][]byte{b}, Addr: net.UDPAddrFromAddrPort(to)})
		}
		s.writeAll(l, bw, replies)
	}
}

// writeAll sends msgs with as few system calls as the socket allows.
func (s *Server) writeAll(l *link, bw batchWriter, msgs []ipv4.Message) {
	for len(msgs) > 0 {
		n, err := bw.WriteBatch(msgs, 0)
		if err != nil {
			s.log.Debug("dhcp send", "interface", l.name, "err", err)
			n = max(n, 1)
		}
		msgs = msgs[n:]
	}
}

// follow applies the store's events to the state, re-listing when the
// watch cannot resume.
func (s *Server) follow(ctx context.Context, from int64) {
	for ctx.Err() == nil {
		ch, err := s.st.Watch(ctx, from)
		if errors.Is(err, store.ErrCompacted) {
			s.mu.Lock()
			old := s.state
			s.mu.Unlock()
			st, rev, lerr := load(ctx, s.st, old)
			if lerr != nil {
				s.log.Warn("dhcp: reload from store", "err", lerr)
				sleep(ctx, time.Second)
				continue
			}
			s.mu.Lock()
			// Offers and leases being written were carried over by load.
			s.state = st
			s.mu.Unlock()
			s.syncProxy(ctx)
			from = rev
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("dhcp: watch store", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for ev := range ch {
			if !watched(ev.Record.Kind) {
				from = ev.Revision
				continue
			}
			s.mu.Lock()
			if err := s.state.apply(ev); err != nil {
				s.log.Warn("dhcp: ignoring unreadable object", "kind", ev.Record.Kind, "name", ev.Record.Name, "err", err)
			}
			s.mu.Unlock()
			if ev.Record.Kind == api.KindSubnet {
				s.syncProxy(ctx)
			}
			from = ev.Revision
		}
	}
}

func watched(kind string) bool {
	for _, k := range watchedKinds {
		if k == kind {
			return true
		}
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// commit is a lease write and the reply that must wait for it.
type commit struct {
	l     *lease
	op    []byte // the lease's JSON
	lbls  map[string]string
	reply []byte
	link  *link
	to    netip.AddrPort
}

// commitLoop writes leases in batches: everything queued while the
// previous transaction was being made durable goes into the next one, so
// the store's fsync is shared by as many clients as arrive meanwhile.
// Replies go out only after their transaction committed.
func (s *Server) commitLoop(ctx context.Context) {
	batch := make([]*commit, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case c := <-s.commits:
			batch = append(batch, c)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case c := <-s.commits:
				batch = append(batch, c)
			default:
				break more
			}
		}
		s.writeBatch(ctx, batch)
	}
}

func (s *Server) writeBatch(ctx context.Context, batch []*commit) {
	// One op per address: a later write of the same lease in the batch
	// holds the newer state.
	last := make(map[*lease]int, len(batch))
	for i, c := range batch {
		last[c.l] = i
	}
	ops := make([]store.Op, 0, len(last))
	for i, c := range batch {
		if last[c.l] == i {
			ops = append(ops, store.Op{Type: store.OpPut, Kind: "Lease", Name: c.l.ip.String(), Labels: c.lbls, Data: c.op})
		}
	}
	_, rev, err := s.st.Txn(ctx, ops)
	s.mu.Lock()
	for _, c := range batch {
		c.l.pending--
		if err == nil && rev > c.l.rev {
			c.l.rev = rev
		}
	}
	s.mu.Unlock()
	if err != nil {
		s.Stats.LeaseWriteErrors.Add(1)
		if ctx.Err() == nil {
			s.log.Error("dhcp: writing leases failed; clients were not acknowledged and will retry", "leases", len(ops), "err", err)
		}
		return
	}
	s.Stats.LeaseWrites.Add(int64(len(ops)))
	s.sendBatch(batch)
}

// sendBatch sends the replies of a written batch, with one system call
// per link and up to 64 packets where the socket allows it.
func (s *Server) sendBatch(batch []*commit) {
	var msgs []ipv4.Message
	for i := 0; i < len(batch); {
		c := batch[i]
		bw, ok := c.link.conn.(batchWriter)
		if !ok {
			if c.reply != nil {
				s.send(c.link, c.reply, c.to)
			}
			i++
			continue
		}
		msgs = msgs[:0]
		j := i
		for ; j < len(batch) && batch[j].link == c.link && len(msgs) < 64; j++ {
			if b := batch[j].reply; b != nil {
				msgs = append(msgs, ipv4.Message{Buffers: [][]byte{b}, Addr: net.UDPAddrFromAddrPort(batch[j].to)})
			}
		}
		s.writeAll(c.link, bw, msgs)
		i = j
	}
}

func (s *Server) send(l *link, b []byte, to netip.AddrPort) {
	if _, err := l.conn.WriteToUDPAddrPort(b, to); err != nil {
		s.log.Debug("dhcp send", "interface", l.name, "to", to, "err", err)
	}
}

// encodeLease is the store form of a lease: what model.Encode makes of
// l.object(), written directly (it is done for every ACK).
func encodeLease(l *lease) (map[string]string, []byte, error) {
	o := l.object()
	if !jsonSafe(o.Subnet) || !jsonSafe(o.Hostname) || !jsonSafe(o.MAC) {
		return model.Encode(o)
	}
	b := make([]byte, 0, 256)
	b = append(b, `{"kind":"Lease","name":"`...)
	b = append(b, o.Name...)
	b = append(b, `","labels":{"subnet":"`...)
	b = append(b, o.Subnet...)
	b = append(b, `"},"mac":"`...)
	b = append(b, o.MAC...)
	b = append(b, `","ip":"`...)
	b = append(b, o.IP...)
	b = append(b, `","subnet":"`...)
	b = append(b, o.Subnet...)
	if o.Hostname != "" {
		b = append(b, `","hostname":"`...)
		b = append(b, o.Hostname...)
	}
	b = append(b, `","expiresAt":"`...)
	b = o.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","state":"`...)
	b = append(b, o.State...)
	b = append(b, `"}`...)
	return o.Labels, b, nil
}

// jsonSafe reports whether s needs no escaping in a JSON string.
func jsonSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
