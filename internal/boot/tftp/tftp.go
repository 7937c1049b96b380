// Package tftp is drover's read-only TFTP server: it hands the iPXE
// binaries (undionly.kpxe, ipxe.efi, snponly.efi) to PXE firmware, which
// then chains to the HTTP boot server. Only regular files inside one
// directory are served; writes are refused.
package tftp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/drover-project/drover/internal/boot/bootfiles"
	"github.com/pin/tftp/v3"
)

// DefaultDir is where Debian's ipxe package installs the iPXE binaries.
const DefaultDir = "/usr/lib/ipxe"

// Config configures the TFTP server.
type Config struct {
	// Listen is the UDP address ("0.0.0.0:69", ":69").
	Listen string
	// Dir holds the files served. Symbolic links in it are followed
	// (Debian's ipxe.efi is one, to /boot/ipxe.efi): whoever can write to
	// the directory chooses what is served anyway.
	Dir string
	// Timeout is how long to wait for a client's acknowledgement before
	// sending again (default 5s; PXE ROMs are slow).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Server serves files of Dir over TFTP.
type Server struct {
	cfg  Config
	log  *slog.Logger
	conn net.PacketConn
	srv  *tftp.Server

	mu        sync.Mutex
	transfers int64 // completed, for tests and logs
}

// New checks the configuration; Listen binds the address.
func New(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	st, err := os.Stat(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("tftp directory: %w (install Debian's ipxe package for %s, or give --tftp-dir)", err, DefaultDir)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("tftp directory %s is not a directory", cfg.Dir)
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "tftp")}
	s.srv = tftp.NewServer(s.read, nil) // nil: write requests are answered with an error
	s.srv.SetTimeout(cfg.Timeout)
	return s, nil
}

// Listen binds the UDP address, so that errors come before Serve and Addr
// is known (a port of 0 picks a free one).
func (s *Server) Listen() error {
	addr, err := net.ResolveUDPAddr("udp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("--tftp-listen %s: %w", s.cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return fmt.Errorf("tftp listen %s: %w", s.cfg.Listen, err)
	}
	s.conn = conn
	return nil
}

// Addr is the bound address, once Listen has run.
func (s *Server) Addr() string {
	if s.conn == nil {
		return ""
	}
	return s.conn.LocalAddr().String()
}

// Serve answers requests until ctx ends, then waits for transfers under
// way to finish or time out.
func (s *Server) Serve(ctx context.Context) error {
	if s.conn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.conn) }()
	s.log.Info("tftp server listening", "addr", s.Addr(), "dir", s.cfg.Dir)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.srv.Shutdown()
	if err == nil {
		err = <-errc
	}
	return err
}

// Transfers counts the files sent whole.
func (s *Server) Transfers() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transfers
}

func (s *Server) read(name string, rf io.ReaderFrom) error {
	remote := ""
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		addr := ot.RemoteAddr()
		remote = addr.String()
	}
	f, st, err := bootfiles.Open(s.cfg.Dir, name)
	if err != nil {
		s.log.Warn("tftp request refused", "file", name, "client", remote, "err", err)
		return err
	}
	defer f.Close()
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(st.Size()) // PXE ROMs ask for tsize first
	}
	n, err := rf.ReadFrom(f)
	if err != nil {
		s.log.Warn("tftp transfer failed", "file", name, "client", remote, "sent", n, "err", err)
		return err
	}
	s.mu.Lock()
	s.transfers++
	s.mu.Unlock()
	s.log.Info("tftp sent", "file", name, "client", remote, "bytes", n)
	return nil
}
