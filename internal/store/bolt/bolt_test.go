package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/drover-project/drover/internal/labels"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/store/storetest"
)

// suiteOptions meets the storetest contract: its retention, and a watcher
// closed after at most 2×WatchBuffer = MaxWatchLag/2 undelivered events.
var suiteOptions = Options{RetainEvents: storetest.RetainEvents, WatchBuffer: storetest.MaxWatchLag / 4}

func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openAt(t, filepath.Join(t.TempDir(), "drover.db"), suiteOptions)
	})
}

func TestPersistence(t *testing.T) {
	storetest.RunPersistent(t, func(t *testing.T, dir string) store.Store {
		return openAt(t, filepath.Join(dir, "drover.db"), suiteOptions)
	})
}

func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.db")
	openAt(t, path, Options{})
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "another drover server") {
		t.Fatalf("second Open of a locked file: %v", err)
	}
}

func TestOpenBadOptions(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{RetainEvents: -1}); err == nil {
		t.Fatal("negative RetainEvents accepted")
	}
}

// Shrinking RetainEvents takes effect at the next Open.
func TestRetentionShrinksOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.db")
	s := openAt(t, path, Options{RetainEvents: 1000})
	for i := range 50 {
		if _, err := store.Put(t.Context(), s, "m", "n", nil, []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openAt(t, path, Options{RetainEvents: 10})
	if old, _ := s.OldestRevision(t.Context()); old != 41 {
		t.Fatalf("oldest revision %d after reopening with RetainEvents 10, want 41", old)
	}
	if _, err := s.Watch(t.Context(), 39); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch(39): %v, want ErrCompacted", err)
	}
}

// The whole point of the single writer: concurrent transactions share fsyncs.
func TestGroupCommit(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "drover.db"), Options{})
	const n = 400
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := store.Create(t.Context(), s, "m", fmt.Sprint(i), nil, nil)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Each bbolt write tx bumps the tx id; far fewer commits than txns
	// means batching happened.
	var commits int64
	s.db.View(func(tx *bolt.Tx) error { commits = int64(tx.ID()); return nil })
	if commits >= n {
		t.Errorf("%d transactions took %d commits; group commit is not batching", n, commits)
	}
	t.Logf("%d transactions in %d commits", n, commits)
}

func TestListWithLabelsSelector(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "drover.db"), Options{})
	ctx := t.Context()
	for i, role := range []string{"compute", "storage", "compute", ""} {
		l := map[string]string{"rack": fmt.Sprint("r", i%2)}
		if role != "" {
			l["role"] = role
		}
		store.Create(ctx, s, "machine", fmt.Sprint("n", i), l, nil)
	}
	sel, err := labels.Parse("role in (compute),rack=r0")
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := s.List(ctx, "machine", store.ListOptions{Selector: sel})
	if err != nil || len(recs) != 2 || recs[0].Name != "n0" || recs[1].Name != "n2" {
		t.Fatalf("List(%v) = %v, %v", sel, recs, err)
	}
}

func BenchmarkTxnParallel(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "drover.db"), Options{})
	data := []byte(strings.Repeat("x", 1024))
	var seq atomic.Int64
	b.SetParallelism(16) // 16×GOMAXPROCS writers, as many API handlers would be
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			name := fmt.Sprint("n", seq.Add(1))
			if _, err := store.Put(context.Background(), s, "machine", name, map[string]string{"role": "compute"}, data, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	var commits uint64
	s.db.View(func(tx *bolt.Tx) error { commits = uint64(tx.ID()); return nil })
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "txn/s")
	b.ReportMetric(float64(b.N)/float64(max(commits, 1)), "txn/commit")
}

func BenchmarkList10k(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "drover.db"), Options{})
	ctx := context.Background()
	data := []byte(`{"spec":"` + strings.Repeat("x", 1000) + `"}`)
	const n = 10000
	for i := 0; i < n; i += 500 {
		ops := make([]store.Op, 500)
		for j := range ops {
			ops[j] = store.Op{Type: store.OpCreate, Kind: "machine", Name: fmt.Sprintf("n%05d", i+j),
				Labels: map[string]string{"role": []string{"compute", "storage"}[j%2], "rack": fmt.Sprint("r", j%20)}, Data: data}
		}
		if _, _, err := s.Txn(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	sel, _ := labels.Parse("role=compute,rack in (r0,r2)")
	for _, bc := range []struct {
		name string
		opts store.ListOptions
		want int
	}{{"all", store.ListOptions{}, n}, {"selector", store.ListOptions{Selector: sel}, n / 10}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				recs, _, err := s.List(ctx, "machine", bc.opts)
				if err != nil || len(recs) != bc.want {
					b.Fatalf("List: %d records, %v", len(recs), err)
				}
			}
		})
	}
}
