package dhcp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenUDP opens a UDP socket on port bound to one interface
// (SO_BINDTODEVICE): it receives the broadcasts of that link only, and
// what it sends leaves through it. SO_REUSEADDR lets one socket per
// interface share the port; SO_BROADCAST allows replies to clients that
// have no address yet.
func listenUDP(iface string, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []struct {
				name     string
				opt, val int
			}{
				{"SO_REUSEADDR", unix.SO_REUSEADDR, 1},
				{"SO_BROADCAST", unix.SO_BROADCAST, 1},
				// Bursts of thousands of clients (a rack powering on, a
				// benchmark) must not overflow the default buffer while
				// a lease batch is written.
				{"SO_RCVBUF", unix.SO_RCVBUF, 4 << 20},
			} {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.opt, o.val); err != nil {
					serr = fmt.Errorf("%s: %w", o.name, err)
					return
				}
			}
			if err := unix.BindToDevice(int(fd), iface); err != nil {
				serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, err)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
