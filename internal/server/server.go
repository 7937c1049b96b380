// Package server is the site endpoint: the store, the engine and the
// HTTPS API in one process.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/adhoc"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/boot/dhcp"
	"github.com/drover-project/drover/internal/engine"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/pki"
	"github.com/drover-project/drover/internal/secrets"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/store/bolt"
	"golang.org/x/crypto/bcrypt"
)

// Config configures a site endpoint.
type Config struct {
	DataDir string
	Listen  string
	// TLSCert and TLSKey bring your own certificate; otherwise a CA and a
	// server certificate are made under DataDir/tls.
	TLSCert, TLSKey string
	// TLSSANs are extra names for the generated server certificate.
	TLSSANs []string
	// AdminPassword sets the first admin's password on first start; when
	// empty a random one is generated and written to
	// DataDir/initial-admin-password.
	AdminPassword string
	Engine        engine.Config
	Logger        *slog.Logger
	// RetainEvents is how many revisions of history the store keeps for
	// watchers to resume from.
	RetainEvents int
	// PasswordHashCost is the bcrypt cost of new password hashes (0: the
	// default, 10). Lower it only where logins need not resist guessing,
	// such as tests.
	PasswordHashCost int
	// ExpiredTokenGrace is how long an expired login session or join token
	// is kept before it is deleted, so that using it is answered "expired"
	// (default 24h).
	ExpiredTokenGrace time.Duration
	// NoDefaultContent skips installing (or upgrading) the content pack
	// built into the binary at start.
	NoDefaultContent bool
	// BootAddress is the address advertised to machines: DHCP's
	// next-server and the host of boot URLs.
	BootAddress string
	// BootURL is the base URL of the HTTP boot server as machines reach
	// it; default http://BootAddress.
	BootURL string
	// DHCPInterfaces turn the DHCPv4 server on, on these interfaces.
	DHCPInterfaces []string
	// DHCPOnlyKnown ignores DHCP clients that are neither a machine's NIC
	// nor reserved.
	DHCPOnlyKnown bool
	// BootListen turns the plain-HTTP boot server on (iPXE scripts,
	// kernels, rendered installer files); BootFilesDir holds the kernels
	// and initrds it serves under /files/.
	BootListen   string
	BootFilesDir string
	// DiscoveryDir serves the discovery image (vmlinuz, initrd.img) at
	// /files/discovery/ instead of BootFilesDir/discovery.
	DiscoveryDir string
	// TFTPListen turns the TFTP server on, serving the iPXE binaries of
	// TFTPDir (default /usr/lib/ipxe, Debian's ipxe package).
	TFTPListen string
	TFTPDir    string
	// MaxCopyBytes limits the archive of a drover cp (0: 64 MiB).
	MaxCopyBytes int64
	// Version is the drover version this server reports (GET
	// /api/v1/endpoint), which a manager compares with its version sets.
	Version string
}

// Server is a running site endpoint.
type Server struct {
	cfg     Config
	log     *slog.Logger
	st      store.Store
	box     *secrets.Box
	tls     *pki.Bundle
	eng     *engine.Engine
	http    *http.Server
	ln      net.Listener
	started time.Time
	metrics *metrics
	// gate serves people's requests before agents' (priority.go).
	gate *priorityGate
	// lists serve the kinds listed most (machines) from memory.
	lists map[string]*listCache
	// contentMu serializes pack installs and removals.
	contentMu sync.Mutex
	// dhcp is the DHCPv4 server (nil when off).
	dhcp *dhcp.Server
	// boot are the HTTP boot and TFTP servers (boot.go).
	boot *bootServices
	// cmds holds ad-hoc commands (drover run, drover cp) in memory (run.go);
	// cmdSites are the sites they may reach (run_sites.go).
	cmds     *adhoc.Hub
	cmdSites commandSites
	// endpointID is this endpoint's stable id (DATA_DIR/endpoint-id).
	endpointID string
	// sites mirror the sites registered with this endpoint (sites.go).
	sites *siteSet

	// InitialAdminPassword is set when this start generated the admin
	// password (first start without DROVER_ADMIN_PASSWORD).
	InitialAdminPassword string
}

// New opens the data dir, the store and the TLS material, and makes sure an
// admin exists. It does not serve yet.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("--data-dir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if c := cfg.PasswordHashCost; c != 0 && (c < bcrypt.MinCost || c > bcrypt.MaxCost) {
		return nil, fmt.Errorf("password hash cost %d is out of range %d..%d", c, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := bootDefaults(&cfg); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, started: time.Now(), metrics: newMetrics(), gate: newPriorityGate()}
	s.sites = newSiteSet(s)
	var bootAddr netip.Addr
	if cfg.BootAddress != "" {
		a, err := netip.ParseAddr(cfg.BootAddress)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("--boot-address %q: want the IPv4 address machines reach this server at", cfg.BootAddress)
		}
		bootAddr = a
	}
	var err error
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return nil, errors.New("--tls-cert and --tls-key go together")
		}
		s.tls, err = pki.LoadKeyPair(cfg.TLSCert, cfg.TLSKey)
	} else {
		s.tls, err = pki.EnsureServerTLS(filepath.Join(cfg.DataDir, "tls"), append(listenSANs(cfg.Listen), cfg.TLSSANs...))
	}
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	s.box, err = secrets.OpenBox(filepath.Join(cfg.DataDir, "secret.key"))
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if s.endpointID, err = ensureEndpointID(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("endpoint id: %w", err)
	}
	s.st, err = bolt.Open(filepath.Join(cfg.DataDir, "drover.db"), bolt.Options{RetainEvents: cfg.RetainEvents})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := s.bootstrapAdmin(context.Background()); err != nil {
		s.st.Close()
		return nil, err
	}
	if !cfg.NoDefaultContent {
		if err := s.installBuiltin(context.Background()); err != nil {
			s.st.Close()
			return nil, err
		}
	}
	s.eng = engine.New(s.st, cfg.Engine, s.box, s.log)
	s.initCommands()
	if err := s.newBoot(); err != nil {
		s.st.Close()
		return nil, err
	}
	if len(cfg.DHCPInterfaces) > 0 {
		s.dhcp = dhcp.New(s.st, dhcp.Config{
			Interfaces:  cfg.DHCPInterfaces,
			OnlyKnown:   cfg.DHCPOnlyKnown,
			BootAddress: bootAddr,
			BootURL:     cfg.BootURL,
			Logger:      s.log,
		})
	}
	s.lists = map[string]*listCache{
		api.KindMachine: newListCache(api.KindMachine, s.st, s.present, machineViews, s.log),
	}
	return s, nil
}

func listenSANs(listen string) []string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return nil
	}
	return []string{host}
}

// bootstrapAdmin creates the first admin when there is no user at all.
func (s *Server) bootstrapAdmin(ctx context.Context) error {
	users, _, err := s.st.List(ctx, api.KindUser, store.ListOptions{})
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return nil
	}
	password := s.cfg.AdminPassword
	generated := password == ""
	if generated {
		if password, err = auth.RandomPassword(); err != nil {
			return err
		}
	}
	hash, err := auth.HashPasswordCost(password, s.cfg.PasswordHashCost)
	if err != nil {
		return fmt.Errorf("DROVER_ADMIN_PASSWORD: %w", err)
	}
	u := &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "admin"}, Role: api.RoleAdmin, PasswordHash: hash}
	labels, data, err := model.Encode(u)
	if err != nil {
		return err
	}
	if generated {
		path := filepath.Join(s.cfg.DataDir, "initial-admin-password")
		if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		s.InitialAdminPassword = password
	}
	if _, err := store.Create(ctx, s.st, api.KindUser, u.Name, labels, data); err != nil {
		return fmt.Errorf("create admin: %w", err)
	}
	return nil
}

// CACertPEM is what clients should trust.
func (s *Server) CACertPEM() []byte { return s.tls.CACertPEM }

// CAPath is the CA file clients should trust (empty when bringing your own).
func (s *Server) CAPath() string { return s.tls.CAPath }

// Engine exposes the engine (tests, lab).
func (s *Server) Engine() *engine.Engine { return s.eng }

// Store exposes the store (tests, lab).
func (s *Server) Store() store.Store { return s.st }

// Addr is the address the API listens on, once Serve has started.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Listen binds the API address.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	if s.dhcp != nil {
		if err := s.dhcp.Listen(); err != nil {
			ln.Close()
			return err
		}
	}
	if err := s.listenBoot(ln); err != nil {
		ln.Close()
		return err
	}
	s.ln = ln
	return nil
}

// Serve runs the engine and the API until ctx ends, then shuts down.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.eng.Run(ctx)
	}()
	for _, lc := range s.lists {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc.run(ctx)
		}()
	}
	grace := s.cfg.ExpiredTokenGrace
	if grace <= 0 {
		grace = 24 * time.Hour
	}
	for _, x := range []*expiry{
		newExpiry(api.KindToken, grace, s.st, s.log, tokenExpiry),
		newExpiry(api.KindJoinToken, grace, s.st, s.log, joinTokenExpiry),
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.run(ctx)
		}()
	}
	if s.dhcp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.dhcp.Run(ctx); err != nil {
				s.log.Error("dhcp server stopped", "err", err)
			}
		}()
	}
	s.serveBoot(ctx, &wg)
	s.sites.run(ctx, &wg)
	tlsCfg := s.tls.TLSConfig()
	// HTTP/2 lets an agent's long poll, heartbeats and log uploads share one
	// connection.
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	s.http = &http.Server{
		Handler:           s.routes(ctx),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		// Every agent keeps a connection open, so per-connection memory
		// is multiplied by the machine count: HPACK's dynamic tables
		// (4 KiB each way by default) alone cost ~50 MB at 10,000
		// agents while saving a few hundred bytes per request.
		HTTP2: &http.HTTP2Config{
			MaxDecoderHeaderTableSize: 256,
			MaxEncoderHeaderTableSize: 256,
		},
	}
	errc := make(chan error, 1)
	go func() {
		errc <- s.http.Serve(tls.NewListener(s.ln, tlsCfg))
	}()
	s.log.Info("drover server listening", "addr", s.ln.Addr().String(), "data", s.cfg.DataDir, "ca", s.tls.CAPath)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	// Cancelling first ends long polls and event streams, so Shutdown does
	// not wait for them.
	cancel()
	shutCtx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer c2()
	_ = s.http.Shutdown(shutCtx)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close releases the store.
func (s *Server) Close() error { return s.st.Close() }
