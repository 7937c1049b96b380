package mirror_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/inventory"
	"github.com/drover-project/drover/internal/mirror"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// BenchmarkManagerList times a manager's list of machines that all come
// from one site's mirror (DROVER_BENCH_SITE_MACHINES, default 2,000,
// registered as agents register, with simulated inventories): the table
// view drover get machines asks for, and the full view.
func BenchmarkManagerList(b *testing.B) {
	n := 2000
	if v := os.Getenv("DROVER_BENCH_SITE_MACHINES"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	s := startSite(b, 0)
	manager := startSite(b, 0)
	ctx := context.Background()
	jt, err := s.admin.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		b.Fatal(err)
	}
	reg := s.admin.WithToken(jt.Token)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				name := fmt.Sprintf("m%05d", i)
				req := api.RegisterRequest{Name: name, AgentID: fmt.Sprintf("bench-agent-%016d", i), Inventory: inventory.Simulated(name, i)}
				if err := reg.Do(ctx, http.MethodPost, "/api/v1/agent/register", req, nil); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	start := time.Now()
	if _, err := manager.admin.AddSite(ctx, api.SiteAddRequest{Name: "east", URL: s.url, CACert: string(s.srv.CACertPEM()), Username: "admin", Password: password}); err != nil {
		b.Fatal(err)
	}
	for {
		var l api.List
		if err := manager.admin.Do(ctx, http.MethodGet, "/api/v1/objects/machines?view=summary", nil, &l); err != nil {
			b.Fatal(err)
		}
		if len(l.Items) == n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Logf("%d machines: site added and mirrored in %s", n, time.Since(start).Round(time.Millisecond))
	for _, view := range []string{api.ViewTable, api.ViewFull} {
		b.Run(view, func(b *testing.B) {
			for b.Loop() {
				body, err := manager.admin.Stream(ctx, "/api/v1/objects/machines?view="+view)
				if err != nil {
					b.Fatal(err)
				}
				size, err := io.Copy(io.Discard, body)
				body.Close()
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(size)
			}
		})
	}
}

// BenchmarkMirrorLag measures how long after a write on the site the
// mirror holds it, under a steady write load (50 writes/s) over a link
// with 100 ms of round trip (Toxiproxy, 50 ms each way): p50 and p99 of
// 200 writes.
func BenchmarkMirrorLag(b *testing.B) {
	s := startSite(b, 0)
	proxy := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()), "site", "127.0.0.1:0", s.srv.Addr())
	if err := proxy.Start(); err != nil {
		b.Fatal(err)
	}
	defer proxy.Stop()
	for _, stream := range []string{"upstream", "downstream"} {
		toxic := fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":50}}`, stream, stream)
		if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
			b.Fatal(err)
		}
	}
	base, err := api.NewClient("https://"+proxy.Listen, s.srv.CACertPEM(), "")
	if err != nil {
		b.Fatal(err)
	}
	m, err := mirror.Open(mirror.Config{Name: "east", Path: filepath.Join(b.TempDir(), "east.db"), Dialer: loginDialer{base}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	stop := run(b, m)
	defer stop()
	ctx := context.Background()
	for !m.Status().Connected {
		time.Sleep(10 * time.Millisecond)
	}
	for b.Loop() {
		const writes = 200
		lags := make([]time.Duration, 0, writes)
		tick := time.NewTicker(20 * time.Millisecond)
		for i := range writes {
			<-tick.C
			mach := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: fmt.Sprintf("n%d", i%20), Labels: map[string]string{"seq": strconv.Itoa(i)}}}
			resp, err := s.admin.ApplyObjects(ctx, mach)
			if err != nil {
				b.Fatal(err)
			}
			written := time.Now()
			for {
				changed := m.Changed()
				if m.Status().Cursor >= resp.Revision {
					break
				}
				select {
				case <-changed:
				case <-time.After(10 * time.Second):
					b.Fatalf("write %d (revision %d) not mirrored after 10s: %+v", i, resp.Revision, m.Status())
				}
			}
			lags = append(lags, time.Since(written))
		}
		tick.Stop()
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		p50, p99 := lags[len(lags)/2], lags[len(lags)*99/100]
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		b.Logf("mirror lag over a 100 ms RTT link at 50 writes/s: p50 %s, p99 %s", p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond))
	}
}
