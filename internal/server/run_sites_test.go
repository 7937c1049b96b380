package server

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/noderange"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// siteLink is a Toxiproxy proxy in front of a site, for the manager to
// reach it through.
func siteLink(t *testing.T, site *env) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "site", "127.0.0.1:0", strings.TrimPrefix(site.url, "https://"))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// A manager runs a command on its own machines and on its sites' in one
// stream: each site gets one request, results carry their site, and a
// site that does not answer is reported unreachable without holding the
// others back.
func TestRunAcrossSites(t *testing.T) {
	east, west, south := startServer(t, nil), startServer(t, nil), startServer(t, nil)
	manager := startServer(t, nil)
	east.runAgents(nil, "n1", "n2")
	west.runAgents(nil, "n1", "n2")
	south.runAgents(nil, "s1")
	manager.runAgents(nil, "m1")
	addSite(t, manager, east, "east")
	addSite(t, manager, west, "west")
	link := siteLink(t, south)
	ctx := context.Background()
	if _, err := manager.admin.AddSite(ctx, api.SiteAddRequest{Name: "south", URL: "https://" + link.Listen,
		CACert: string(south.srv.CACertPEM()), Username: "admin", Password: testAdminPassword}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sites' machines in the mirrors", 20*time.Second, func() bool {
		return len(listItems[api.Machine](t, manager.admin, "machines", "")) == 6
	})

	label := func(l api.RunLine) string { return noderange.Node{Site: l.Site, Name: l.Node}.String() }
	res, all, err := run(t, manager.admin, api.RunRequest{Nodes: "all%all", Argv: []string{"sh", "-c", `echo "$DROVER_MACHINE"`}})
	if err != nil {
		t.Fatal(err)
	}
	starts := map[string]int{}
	for _, l := range all {
		if l.Type == api.RunLineStart {
			starts[l.Site] = l.Count
		}
		if l.Type == api.RunLineResult && (!l.OK() || l.Stdout != l.Node+"\n") {
			t.Errorf("%s: %+v", label(l), l)
		}
	}
	if len(res) != 4 || starts[""] != 1 || starts["east"] != 2 || starts["west"] != 2 || starts["south"] != 1 {
		t.Fatalf("starts %v; %d results by name: %+v", starts, len(res), all)
	}
	count := 0
	for _, l := range all {
		if l.Type == api.RunLineResult {
			count++
		}
	}
	if count != 6 {
		t.Fatalf("%d results, want 6", count)
	}

	// A range of one site and its nodes only.
	_, all, err = run(t, manager.admin, api.RunRequest{Nodes: "east%n2,west%n1", Argv: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range all {
		if l.Type == api.RunLineResult && l.OK() {
			got = append(got, label(l))
		}
	}
	if len(got) != 2 || !strings.Contains(strings.Join(got, " "), "east%n2") || !strings.Contains(strings.Join(got, " "), "west%n1") {
		t.Fatalf("east%%n2,west%%n1: %v", got)
	}
	_, _, err = run(t, manager.admin, api.RunRequest{Nodes: "north%n1", Argv: []string{"true"}})
	if ae := apiErr(t, err, 400); !strings.Contains(ae.Message, "unknown site north") {
		t.Fatal(ae.Message)
	}

	// A copy goes to the manager's machine and a site's from one upload.
	dest := t.TempDir()
	archive, bodies := tarOf(t, tar.Header{Name: "motd", Typeflag: tar.TypeReg, Mode: 0o644})
	var copied []string
	err = manager.admin.Copy(ctx, api.CopyRequest{Nodes: "m1,east%n1", Dest: dest + "/", Size: int64(len(archive))}, bytes.NewReader(archive), func(l api.RunLine) error {
		if l.Type == api.RunLineResult {
			if !l.OK() {
				t.Errorf("copy to %s: %+v", label(l), l)
			}
			copied = append(copied, label(l))
		}
		return nil
	})
	if b, rerr := os.ReadFile(filepath.Join(dest, "motd")); err != nil || len(copied) != 2 || rerr != nil || !bytes.Equal(b, bodies["motd"]) {
		t.Fatalf("copy across sites: %v %v %v", err, copied, rerr)
	}

	// South stops answering: data into its link is held for ever.
	defer func(d time.Duration) { siteStartTimeout = d }(siteStartTimeout)
	siteStartTimeout = 2 * time.Second
	if _, err := link.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole","type":"timeout","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var order []string
	var southLine api.RunLine
	err = manager.admin.Run(ctx, api.RunRequest{Nodes: "all%all", Argv: []string{"true"}}, func(l api.RunLine) error {
		if l.Type == api.RunLineResult {
			order = append(order, label(l))
			if l.Site == "south" {
				southLine = l
			}
		}
		return nil
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != 6 || order[5] != "south%s1" || southLine.Error != api.ErrUnreachable || !strings.Contains(southLine.Detail, "site south cannot be reached") {
		t.Fatalf("order %v, south %+v", order, southLine)
	}
	t.Logf("with south blackholed: others answered first, south reported %q after %s", southLine.Detail, took.Round(time.Millisecond))
}

// A range for a nested manager passes through: region1%east%n1 runs on
// east's n1 through region1, and comes back named so.
func TestRunNested(t *testing.T) {
	east, region, top := startServer(t, nil), startServer(t, nil), startServer(t, nil)
	east.runAgents(nil, "n1")
	region.runAgents(nil, "r1")
	addSite(t, region, east, "east")
	addSite(t, top, region, "region1")
	waitFor(t, "region1's machine in the top mirror", 20*time.Second, func() bool {
		return len(listItems[api.Machine](t, top.admin, "machines", "site=region1")) == 1
	})
	waitFor(t, "east's machine in region1's mirror", 20*time.Second, func() bool {
		return len(listItems[api.Machine](t, region.admin, "machines", "site=east")) == 1
	})
	_, all, err := run(t, top.admin, api.RunRequest{Nodes: "region1%east%n1", Argv: []string{"echo", "deep"}})
	if err != nil {
		t.Fatal(err)
	}
	var results []api.RunLine
	for _, l := range all {
		if l.Type == api.RunLineResult {
			results = append(results, l)
		}
	}
	if len(results) != 1 || results[0].Site != "region1%east" || results[0].Node != "n1" || !results[0].OK() || results[0].Stdout != "deep\n" {
		t.Fatalf("nested run: %+v", all)
	}
	_, all, err = run(t, top.admin, api.RunRequest{Nodes: "region1%west%n1", Argv: []string{"true"}})
	if err != nil || len(all) != 3 || all[1].Error != api.ErrFailed || !strings.Contains(all[1].Detail, "unknown site west") {
		t.Fatalf("unknown site on the nested manager: %+v %v", all, err)
	}
}
