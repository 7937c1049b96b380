package bolt

import (
	"context"
	"encoding/binary"
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

func putN(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		if _, err := store.Put(t.Context(), s, "m", fmt.Sprint("n", i%5), nil, []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// A watcher still replaying history when its live queue overflows re-reads
// the overflow from the database instead of being closed.
func TestWatchResyncDuringReplay(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "drover.db"), Options{WatchBuffer: 4})
	putN(t, s, 3000)
	ch, err := s.Watch(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// 300 more revisions arrive before anything is read, far more than
	// the watcher's live queue holds: they overflow while the watcher is
	// stuck in its replay. (Writing while reading made this depend on the
	// reader keeping up once the replay ended, which a loaded machine
	// does not promise.)
	putN(t, s, 300)
	want := int64(1)
	for ; want <= 3300; want++ {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watcher closed at revision %d while replaying", want)
			}
			if ev.Revision != want {
				t.Fatalf("got revision %d, want %d", ev.Revision, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for revision %d", want)
		}
	}
}

// History compacted past a watcher that is still replaying closes it, and
// resuming reports ErrCompacted.
func TestWatchCompactedWhileReplaying(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "drover.db"), Options{RetainEvents: 20, WatchBuffer: 4})
	putN(t, s, 10)
	ch, err := s.Watch(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	putN(t, s, 100) // not reading: the watcher is still in replay
	last := int64(0)
	for ev := range ch {
		if ev.Revision != last+1 {
			t.Fatalf("revision %d after %d", ev.Revision, last)
		}
		last = ev.Revision
	}
	if last >= 110 {
		t.Fatalf("watcher delivered up to %d, but history after 30 was compacted", last)
	}
	if _, err := s.Watch(t.Context(), last); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch(%d) after compaction: %v, want ErrCompacted", last, err)
	}
}

func TestInvalidOps(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "drover.db"), Options{})
	for _, tc := range []struct {
		op   store.Op
		frag string
	}{
		{store.Op{Type: store.OpCreate, Kind: "a\x00b", Name: "n"}, "NUL"},
		{store.Op{Type: store.OpCreate, Kind: "k", Name: strings.Repeat("n", bolt.MaxKeySize)}, "the limit is"},
		{store.Op{Type: store.OpUpdate, Kind: "k", Name: "n", ExpectRevision: -1}, "negative"},
		{store.Op{Type: 0, Kind: "k", Name: "n"}, "unknown op type"},
	} {
		_, _, err := s.Txn(t.Context(), []store.Op{tc.op})
		var te *store.TxnError
		if !errors.As(err, &te) || te.Index != 0 || !strings.Contains(err.Error(), tc.frag) {
			t.Errorf("Txn(%+v) = %v, want a TxnError mentioning %q", tc.op.Type, err, tc.frag)
		}
	}
	for _, name := range []string{"", strings.Repeat("l", bolt.MaxKeySize+1)} {
		if _, err := s.AppendLog(t.Context(), name, nil); err == nil {
			t.Errorf("AppendLog(%d-byte name) succeeded", len(name))
		}
	}
}

// Whatever bytes a damaged file holds, decoding reports an error, not a panic.
func FuzzDecode(f *testing.F) {
	v := encodeRecord(map[string]string{"a": "b"}, []byte("data"))
	setRevisions(v, 7, 3)
	f.Add(v)
	f.Add(encodeEvents([]eventEntry{{typ: eventPut, key: objectKey("k", "n"), value: v}}))
	f.Add([]byte{recordFormat})
	f.Fuzz(func(t *testing.T, b []byte) {
		var rec store.Record
		d := decoder{batch: true}
		d.decodeRecord(b, &rec, nil, nil)
		d.decodeRecord(b, &rec, labels.Everything(), map[string]string{})
		d.decodeEvents(1, b, nil)
	})
}

// History of big records is stored compressed, and replays byte for byte,
// also after a reopen.
func TestHistoryCompressed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.db")
	s := openAt(t, path, Options{})
	var want []string
	for i := range 20 {
		data := fmt.Sprintf(`{"kind":"Machine","name":"n%d","status":{"inventory":{"disks":[%s]}}}`, i,
			strings.TrimSuffix(strings.Repeat(fmt.Sprintf(`{"name":"sd%d","sizeBytes":480103981056,"model":"MZ7LH480HBHQ0D3"},`, i), 12), ","))
		want = append(want, data)
		if _, err := store.Put(t.Context(), s, "Machine", fmt.Sprint("n", i), map[string]string{"rack": "r1"}, []byte(data), 0); err != nil {
			t.Fatal(err)
		}
	}
	var stored, plain int
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			if v[0] != eventsZstd {
				return fmt.Errorf("history of revision %d is not compressed (format %d, %d bytes)", binary.BigEndian.Uint64(k), v[0], len(v))
			}
			stored += len(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		plain += len(w)
	}
	if stored*2 > plain {
		t.Errorf("compressed history is %d bytes for %d bytes of records", stored, plain)
	}
	check := func(s *Store) {
		t.Helper()
		ch, err := s.Watch(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			ev := <-ch
			if string(ev.Record.Data) != w || ev.Record.Labels["rack"] != "r1" || ev.Revision != int64(i+1) || !ev.Last {
				t.Fatalf("replayed event %d = %s %q %v", i, fmtEv(ev), ev.Record.Data, ev.Record.Labels)
			}
		}
	}
	check(s)
	s.Close()
	check(openAt(t, path, Options{}))
}

func fmtEv(e store.Event) string { return fmt.Sprintf("%s@%d last=%v", e.Type, e.Revision, e.Last) }
