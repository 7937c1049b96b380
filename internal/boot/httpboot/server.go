// Package httpboot is drover's plain-HTTP boot server: per-machine iPXE
// scripts, kernels and initrds, and the files rendered for a machine by
// its boot environment (kickstart, preseed, cloud-init). It is plain HTTP
// because firmware and installers cannot be made to trust drover's CA.
//
// Everything is read from the store at request time (machines through a
// MAC index that waits for the store's current revision, boot
// environments by a read, params and templates through the engine's
// config cache, which waits the same way): a change of a machine's
// bootEnv is one write, and the next request after it is answered from
// the new environment.
package httpboot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/boot/bootfiles"
	"github.com/drover-project/drover/internal/boot/macindex"
	"github.com/drover-project/drover/internal/render"
	"github.com/drover-project/drover/internal/store"
)

// Renderer gathers what rendering for a machine needs (the engine).
type Renderer interface {
	RenderInput(ctx context.Context, m *api.Machine) (*render.Input, error)
}

// Sealer seals and opens the tokens that let an installer switch its
// machine to local (the server's secrets box).
type Sealer interface {
	Seal(plaintext []byte) (string, error)
	Open(s string) ([]byte, error)
}

// Config configures the boot server.
type Config struct {
	// Listen is the TCP address ("0.0.0.0:8080").
	Listen string
	// Address is the IP machines reach the server at (--boot-address),
	// advertised in scripts and URLs.
	Address string
	// URL is the base URL machines are given (--boot-url), when they
	// reach the server through something else than Address and the port
	// it listens on; default http://Address:PORT.
	URL string
	// FilesDir holds kernels and initrds, served at /files/.
	FilesDir string
	// DiscoveryDir, when set, serves /files/discovery/ (the discovery
	// image's vmlinuz and initrd.img, as make discovery-image builds them
	// in build/discovery) instead of FilesDir/discovery.
	DiscoveryDir string
	// IPXEDir holds the iPXE binaries (the TFTP directory), also served
	// over HTTP at the root (/ipxe.efi) for UEFI HTTP boot clients.
	IPXEDir string
	// Endpoint is the API URL agents use; CACertPEM is the CA they trust.
	Endpoint  string
	CACertPEM []byte
	// AgentBinary is served at /agent/drover for installed systems to run
	// as their agent (default: this program).
	AgentBinary string
	// LocalTokenTTL is how long a rendered switch-to-local token is good
	// for (default 24h: an install may be slow, and the token is
	// rendered when the installer fetches its file).
	LocalTokenTTL time.Duration
	Logger        *slog.Logger
}

// Server is the boot HTTP server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	st     store.Store
	index  *macindex.Index
	render Renderer
	sealer Sealer
	now    func() time.Time
	caSum  string

	ln   net.Listener
	http *http.Server
}

// New makes a boot server; Listen binds it.
func New(cfg Config, st store.Store, index *macindex.Index, r Renderer, sealer Sealer) (*Server, error) {
	ip := net.ParseIP(cfg.Address)
	if ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("--boot-address %q: give the IP address machines reach the boot server at", cfg.Address)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LocalTokenTTL <= 0 {
		cfg.LocalTokenTTL = 24 * time.Hour
	}
	if cfg.AgentBinary == "" {
		if exe, err := os.Executable(); err == nil {
			cfg.AgentBinary = exe
		}
	}
	for _, d := range []struct{ flag, dir string }{{"--boot-files-dir", cfg.FilesDir}, {"--discovery-dir", cfg.DiscoveryDir}, {"--tftp-dir", cfg.IPXEDir}} {
		if d.dir == "" {
			continue
		}
		if st, err := os.Stat(d.dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%s %s: not a directory", d.flag, d.dir)
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "httpboot"), st: st, index: index, render: r, sealer: sealer, now: time.Now}
	if b, _ := pem.Decode(cfg.CACertPEM); b != nil {
		sum := sha256.Sum256(b.Bytes)
		s.caSum = hex.EncodeToString(sum[:])
	}
	return s, nil
}

// Listen binds the address (a port of 0 picks a free one).
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("--boot-listen %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address, once Listen has run.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL machines are given: the advertised address and the
// bound port.
func (s *Server) URL() string {
	if s.cfg.URL != "" {
		return strings.TrimRight(s.cfg.URL, "/")
	}
	port := "80"
	if s.ln != nil {
		port = strconv.Itoa(s.ln.Addr().(*net.TCPAddr).Port)
	} else if _, p, err := net.SplitHostPort(s.cfg.Listen); err == nil && p != "" && p != "0" {
		port = p
	}
	return "http://" + net.JoinHostPort(s.cfg.Address, port)
}

// Serve answers requests until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	s.log.Info("boot server listening", "addr", s.Addr(), "url", s.URL(), "files", s.cfg.FilesDir)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.http.Shutdown(shutCtx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Handler serves the boot server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot/{script}", s.handleScript)
	mux.HandleFunc("POST /boot/{mac}/local", s.handleLocal)
	mux.HandleFunc("GET /render/{mac}/{path...}", s.handleRender)
	mux.HandleFunc("GET /files/{path...}", s.serveDir("--boot-files-dir", s.cfg.FilesDir))
	if s.cfg.DiscoveryDir != "" {
		mux.HandleFunc("GET /files/discovery/{path...}", s.serveDir("--discovery-dir", s.cfg.DiscoveryDir))
	}
	mux.HandleFunc("GET /{path}", s.serveDir("--tftp-dir", s.cfg.IPXEDir))
	mux.HandleFunc("GET /ca.pem", s.handleCA)
	mux.HandleFunc("GET /agent/drover", s.handleAgent)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &api.Error{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("no such boot path: %s %s (try /boot/<mac>.ipxe)", r.Method, r.URL.Path)})
	})
	return mux
}

// serveDir streams files of dir: http.ServeContent answers Range and
// conditional requests and copies from the file (sendfile on Linux), so
// a large initrd is never held in memory.
func (s *Server) serveDir(flag, dir string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("path")
		if dir == "" {
			writeError(w, &api.Error{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("%q: no %s is configured", name, flag)})
			return
		}
		f, st, err := bootfiles.Open(dir, name)
		if err != nil {
			s.log.Info("boot file not served", "file", r.URL.Path, "client", r.RemoteAddr, "err", err)
			writeError(w, &api.Error{Status: http.StatusNotFound, Code: "not_found", Message: err.Error()})
			return
		}
		defer f.Close()
		s.log.Info("boot file", "file", r.URL.Path, "client", r.RemoteAddr, "bytes", st.Size(), "range", r.Header.Get("Range"))
		http.ServeContent(w, r, st.Name(), st.ModTime(), f)
	}
}

func (s *Server) handleCA(w http.ResponseWriter, r *http.Request) {
	if len(s.cfg.CACertPEM) == 0 {
		writeError(w, &api.Error{Status: http.StatusNotFound, Code: "not_found", Message: "this server brings its own TLS certificate; there is no drover CA to hand out"})
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.cfg.CACertPEM)
}

func (s *Server) handleAgent(w http.ResponseWriter, r *http.Request) {
	f, err := os.Open(s.cfg.AgentBinary)
	if err != nil {
		writeError(w, &api.Error{Status: http.StatusNotFound, Code: "not_found", Message: "the drover binary cannot be read: " + err.Error()})
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		writeError(w, &api.Error{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "drover", st.ModTime(), f)
}

func writeError(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e)
}

// ServedEnv is the boot environment a request from mac gets now: after
// a write, it checks that the boot server serves the change (the MAC index
// waits for the store's revision, as requests do).
func (s *Server) ServedEnv(ctx context.Context, mac string) (string, error) {
	m, _, err := s.machineFor(ctx, mac)
	if err != nil {
		return "", err
	}
	return m.BootEnvName(), nil
}
