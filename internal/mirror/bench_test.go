package mirror_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/inventory"
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
