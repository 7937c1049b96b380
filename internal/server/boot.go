package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/boot/httpboot"
	"github.com/drover-project/drover/internal/boot/macindex"
	"github.com/drover-project/drover/internal/boot/tftp"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// bootServices are the TFTP and HTTP boot servers, each nil when off.
type bootServices struct {
	index *macindex.Index
	http  *httpboot.Server
	tftp  *tftp.Server
}

// bootDefaults fills what the boot flags imply: the advertised address
// from a --boot-listen on a specific IP, the boot URL DHCP hands to iPXE
// from that address and --boot-listen's port, and the address as a name
// of the API's certificate (agents in the discovery image reach the API
// there).
func bootDefaults(cfg *Config) error {
	if cfg.BootListen == "" {
		if cfg.BootFilesDir != "" || cfg.DiscoveryDir != "" {
			return errors.New("--boot-files-dir and --discovery-dir need --boot-listen (the HTTP boot server serves the files)")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(cfg.BootListen)
	if err != nil {
		return fmt.Errorf("--boot-listen %q: want HOST:PORT (:8080 for every address)", cfg.BootListen)
	}
	if cfg.BootAddress == "" {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			cfg.BootAddress = host
		} else {
			return fmt.Errorf("--boot-listen %s needs --boot-address: the IP address machines reach this server at", cfg.BootListen)
		}
	}
	if cfg.BootURL == "" && port != "0" {
		cfg.BootURL = "http://" + net.JoinHostPort(cfg.BootAddress, port)
		if port == "80" {
			cfg.BootURL = "http://" + cfg.BootAddress
		}
	}
	cfg.TLSSANs = append(cfg.TLSSANs, cfg.BootAddress)
	return nil
}

// newBoot makes the boot services the configuration turns on.
func (s *Server) newBoot() error {
	s.boot = &bootServices{}
	if s.cfg.TFTPListen != "" {
		t, err := tftp.New(tftp.Config{Listen: s.cfg.TFTPListen, Dir: s.cfg.TFTPDir, Logger: s.log})
		if err != nil {
			return err
		}
		s.boot.tftp = t
	}
	if s.cfg.BootListen != "" {
		s.boot.index = macindex.New(s.st, s.log)
	}
	return nil
}

// listenBoot binds the boot services' addresses. The HTTP boot server is
// made here, once the API's port is known: scripts name the API.
func (s *Server) listenBoot(api net.Listener) error {
	if s.boot.tftp != nil {
		if err := s.boot.tftp.Listen(); err != nil {
			return err
		}
	}
	if s.boot.index == nil {
		return nil
	}
	ipxeDir := s.cfg.TFTPDir
	if ipxeDir == "" {
		ipxeDir = tftp.DefaultDir
	}
	if st, err := os.Stat(ipxeDir); err != nil || !st.IsDir() {
		if s.cfg.TFTPDir != "" {
			return fmt.Errorf("--tftp-dir %s: not a directory", s.cfg.TFTPDir)
		}
		ipxeDir = "" // no iPXE binaries to hand to UEFI HTTP boot clients
	}
	port := strconv.Itoa(api.Addr().(*net.TCPAddr).Port)
	h, err := httpboot.New(httpboot.Config{
		Listen:       s.cfg.BootListen,
		Address:      s.cfg.BootAddress,
		URL:          s.cfg.BootURL,
		FilesDir:     s.cfg.BootFilesDir,
		DiscoveryDir: s.cfg.DiscoveryDir,
		IPXEDir:      ipxeDir,
		Endpoint:     "https://" + net.JoinHostPort(s.cfg.BootAddress, port),
		CACertPEM:    s.tls.CACertPEM, // empty with --tls-cert: not ours to hand out
		Logger:       s.log,
	}, s.st, s.boot.index, s.eng, s.box)
	if err != nil {
		return err
	}
	if err := h.Listen(); err != nil {
		return err
	}
	s.boot.http = h
	return nil
}

// serveBoot runs the boot services until ctx ends.
func (s *Server) serveBoot(ctx context.Context, wg *sync.WaitGroup) {
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				s.log.Error(name+" stopped", "err", err)
			}
		}()
	}
	if s.boot.index != nil {
		run("MAC index", func(ctx context.Context) error { s.boot.index.Run(ctx); return nil })
	}
	if s.boot.http != nil {
		run("boot server", s.boot.http.Serve)
	}
	if s.boot.tftp != nil {
		run("tftp server", s.boot.tftp.Serve)
	}
}

// BootAddr is the HTTP boot server's bound address ("" when off).
func (s *Server) BootAddr() string {
	if s.boot == nil || s.boot.http == nil {
		return ""
	}
	return s.boot.http.Addr()
}

// BootURL is the base URL machines are given for the HTTP boot server.
func (s *Server) BootURL() string {
	if s.boot == nil || s.boot.http == nil {
		return ""
	}
	return s.boot.http.URL()
}

// TFTPAddr is the TFTP server's bound address ("" when off).
func (s *Server) TFTPAddr() string {
	if s.boot == nil || s.boot.tftp == nil {
		return ""
	}
	return s.boot.tftp.Addr()
}

// handleAgentBootEnv lets a task on a machine set its own machine's boot
// environment (an install task, before it reboots the machine). The
// write is one transaction with its audit record; the answer comes once
// the boot server serves the new environment to the machine's MACs, so
// the task can reboot right after.
func (s *Server) handleAgentBootEnv(w http.ResponseWriter, r *http.Request, p *principal) {
	var req api.SetBootEnvRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := model.ValidateName(req.BootEnv); err != nil {
		writeError(w, badRequest("bootEnv: %v", err))
		return
	}
	ctx := r.Context()
	if _, err := s.st.Get(ctx, api.KindBootEnv, req.BootEnv); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = apiError(http.StatusNotFound, "not_found", "boot environment %q does not exist (drover get bootenvs lists them)", req.BootEnv)
		}
		writeError(w, err)
		return
	}
	var m api.Machine
	var rev int64
	for attempt := 0; ; attempt++ {
		if err := getObj(ctx, s.st, api.KindMachine, p.Machine, &m); err != nil {
			writeError(w, fmt.Errorf("machine %q: %w", p.Machine, err))
			return
		}
		if m.BootEnv == req.BootEnv {
			rev = m.Revision
			break
		}
		before := m.BootEnvName()
		m.BootEnv = req.BootEnv
		op, err := updateOpFor(&m)
		if err != nil {
			writeError(w, err)
			return
		}
		_, rev, err = s.st.Txn(ctx, []store.Op{op, s.auditOp(p, "updated", api.KindMachine+"/"+m.Name, "bootEnv "+before+" -> "+req.BootEnv, time.Now().UTC(), 1)})
		if errors.Is(err, store.ErrConflict) && attempt < 10 {
			continue // a heartbeat's write got in between
		}
		if err != nil {
			writeError(w, err)
			return
		}
		break
	}
	resp := api.SetBootEnvResponse{Machine: m.Name, BootEnv: req.BootEnv, Revision: rev}
	if s.boot.http != nil {
		for _, mac := range m.MACs() {
			served, err := s.boot.http.ServedEnv(ctx, mac)
			if err != nil {
				writeError(w, err)
				return
			}
			if served != m.BootEnvName() {
				writeError(w, apiError(http.StatusInternalServerError, "internal", "machine %q: %s is still served %q after the write of %q", m.Name, mac, served, m.BootEnvName()))
				return
			}
			resp.Served = served
		}
	}
	writeJSON(w, http.StatusOK, resp)
}
