package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/agent"
	"github.com/drover-project/drover/internal/inventory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// AgentsOptions configure RunAgents, the machines of one site.
type AgentsOptions struct {
	Endpoint string
	CAPEM    []byte
	// JoinToken registers machines that have no credential yet.
	JoinToken string
	// StateDir holds a directory per machine (PREFIXi).
	StateDir string
	Machines int
	Prefix   string
	// Seed makes each machine's simulated inventory (and MACs) distinct
	// from other sites'.
	Seed   int
	Logger *slog.Logger
}

// RunAgents runs Machines agents in this process until ctx ends: the real
// agent code, each with its own state dir, credential and HTTPS
// connection, whose jobs run their scripts with the shell and whose
// commands (drover run, drover cp) really run here. Only the inventory is
// simulated, so that each machine has its own hardware and MACs.
func RunAgents(ctx context.Context, o AgentsOptions) error {
	if o.Machines < 1 {
		return fmt.Errorf("--machines %d: give at least 1", o.Machines)
	}
	if o.Prefix == "" {
		o.Prefix = "n"
	}
	agents := make([]*agent.Agent, 0, o.Machines)
	for i := 1; i <= o.Machines; i++ {
		name := fmt.Sprintf("%s%d", o.Prefix, i)
		seed := o.Seed + i
		a, err := agent.New(agent.Config{
			Endpoint:  o.Endpoint,
			CAPEM:     o.CAPEM,
			JoinToken: o.JoinToken,
			StateDir:  filepath.Join(o.StateDir, name),
			Name:      name,
			Inventory: func(context.Context) (api.Inventory, error) { return inventory.Simulated(name, seed), nil },
			Logger:    o.Logger,
		})
		if err != nil {
			return fmt.Errorf("machine %s: %w", name, err)
		}
		agents = append(agents, a)
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil && ctx.Err() == nil {
				o.Logger.Error("agent stopped", "machine", a.Machine(), "err", err)
			}
		}()
	}
	o.Logger.Info("machines running", "count", len(agents), "endpoint", o.Endpoint)
	wg.Wait()
	return nil
}

// ProxyLink is one site's link through the proxy.
type ProxyLink struct {
	Name     string
	Listen   string
	Upstream string
}

// ProxyOptions configure RunProxy.
type ProxyOptions struct {
	// Latency is added each way, so a round trip takes twice as long.
	Latency time.Duration
	Links   []ProxyLink
	// ReadyFile receives the links' listen addresses (JSON, name to
	// address) once all listen.
	ReadyFile string
	Logger    *slog.Logger
}

// ParseLink reads NAME=UPSTREAM (listening on 127.0.0.1, any port).
func ParseLink(s string) (ProxyLink, error) {
	name, up, ok := strings.Cut(s, "=")
	if !ok || name == "" || up == "" {
		return ProxyLink{}, fmt.Errorf("--site %q: give NAME=HOST:PORT of the site's API", s)
	}
	return ProxyLink{Name: name, Listen: "127.0.0.1:0", Upstream: up}, nil
}

// checkLatency refuses what Toxiproxy cannot do: it delays in whole
// milliseconds.
func checkLatency(d time.Duration) error {
	if d < 0 || d > time.Minute || d%time.Millisecond != 0 {
		return fmt.Errorf("latency %s: give whole milliseconds between 0 and 1m (Toxiproxy delays in milliseconds), such as 50ms", d)
	}
	return nil
}

// RunProxy runs a Toxiproxy proxy per link until ctx ends, each adding
// Latency to the data in each direction.
func RunProxy(ctx context.Context, o ProxyOptions) error {
	if err := checkLatency(o.Latency); err != nil {
		return err
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	listening := map[string]string{}
	var proxies []*toxiproxy.Proxy
	defer func() {
		for _, p := range proxies {
			p.Stop()
		}
	}()
	for _, l := range o.Links {
		p := toxiproxy.NewProxy(srv, l.Name, l.Listen, l.Upstream)
		if err := p.Start(); err != nil {
			return fmt.Errorf("proxy for site %s on %s: %w", l.Name, l.Listen, err)
		}
		proxies = append(proxies, p)
		if ms := o.Latency.Milliseconds(); ms > 0 {
			for _, stream := range []string{"upstream", "downstream"} {
				toxic := fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":%d}}`, stream, stream, ms)
				if _, err := p.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
					return fmt.Errorf("latency on the link of site %s: %w", l.Name, err)
				}
			}
		}
		listening[l.Name] = p.Listen
		o.Logger.Info("link", "site", l.Name, "listen", p.Listen, "upstream", l.Upstream, "latency each way", o.Latency)
	}
	if o.ReadyFile != "" {
		b, _ := json.Marshal(listening)
		tmp := o.ReadyFile + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, o.ReadyFile); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
