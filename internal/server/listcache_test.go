package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/labels"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/store/bolt"
	"github.com/drover-project/drover/internal/tables"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func names(t *testing.T, items [][]byte) string {
	t.Helper()
	var out []string
	for _, b := range items {
		var m struct {
			Name     string `json:"name"`
			Revision int64  `json:"revision"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("cached item %q: %v", b, err)
		}
		out = append(out, m.Name)
	}
	return strings.Join(out, ",")
}

func put(t *testing.T, st store.Store, kind, name string, lbls map[string]string, data string) int64 {
	t.Helper()
	_, rev, err := st.Txn(context.Background(), []store.Op{{Type: store.OpPut, Kind: kind, Name: name, Labels: lbls, Data: []byte(data)}})
	if err != nil {
		t.Fatalf("put %s/%s: %v", kind, name, err)
	}
	return rev
}

func rawPresent(rec store.Record) ([]byte, error) {
	return []byte(fmt.Sprintf(`{"name":%q,"revision":%d,"data":%s}`, rec.Name, rec.Revision, rec.Data)), nil
}

// The cache answers with every write made before the request, follows
// puts, deletes and labels, ignores other kinds, and lists again after it
// fell behind the event stream.
func TestListCacheFollowsTheStore(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{WatchBuffer: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	put(t, st, "Machine", "n2", map[string]string{"role": "db"}, `{}`)
	put(t, st, "Machine", "n1", nil, `{}`)
	put(t, st, "Profile", "p", nil, `{}`)

	var logs syncBuffer
	// Holding gate stalls the cache in the middle of applying an event.
	var gate sync.RWMutex
	present := func(rec store.Record) ([]byte, error) {
		gate.RLock()
		defer gate.RUnlock()
		return rawPresent(rec)
	}
	lc := newListCache("Machine", st, present, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); lc.run(ctx) }()
	defer func() { cancel(); <-done }()

	snap := func(minRev int64, sel store.Selector) string {
		t.Helper()
		items, rev, err := lc.snapshot(ctx, minRev, sel, api.ViewFull, 5*time.Second)
		if err != nil {
			t.Fatalf("snapshot at %d: %v", minRev, err)
		}
		if rev < minRev {
			t.Fatalf("snapshot at revision %d, asked for %d", rev, minRev)
		}
		return names(t, items)
	}
	cur, _ := st.Revision(ctx)
	if got := snap(cur, nil); got != "n1,n2" {
		t.Fatalf("first list = %q, want n1,n2", got)
	}
	// Read your writes: every write is in the next snapshot asked for at
	// the store's revision.
	for i := 3; i < 40; i++ {
		rev := put(t, st, "Machine", fmt.Sprintf("n%d", i), nil, `{}`)
		got := snap(rev, nil)
		if !strings.Contains(got+",", fmt.Sprintf(",n%d,", i)) {
			t.Fatalf("list at revision %d lacks n%d: %s", rev, i, got)
		}
	}
	_, rev, err := st.Txn(ctx, []store.Op{
		{Type: store.OpDelete, Kind: "Machine", Name: "n3"},
		{Type: store.OpPut, Kind: "Machine", Name: "n4", Labels: map[string]string{"role": "db"}, Data: []byte(`{"x":1}`)},
		{Type: store.OpPut, Kind: "Profile", Name: "n5", Data: []byte(`{}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	sel, _ := labels.Parse("role=db")
	if got := snap(rev, sel); got != "n2,n4" {
		t.Fatalf("role=db after a transaction = %q, want n2,n4", got)
	}
	if got := snap(rev, nil); strings.Contains(got, "n3,") || !strings.HasPrefix(got, "n1,n10,") {
		t.Fatalf("list after deleting n3 = %q", got)
	}

	// Stall the cache so the store closes its watch for lagging; it must
	// list again and catch up.
	gate.Lock()
	var last int64
	for i := 0; i < 100; i++ {
		last = put(t, st, "Machine", fmt.Sprintf("late%03d", i), nil, `{}`)
	}
	gate.Unlock()
	got := snap(last, nil)
	if !strings.Contains(logs.String(), "listing again") {
		t.Errorf("the cache did not fall behind (the test stalls it to check the re-list); log: %s", logs.String())
	}
	if strings.Count(got, "late") != 100 {
		t.Fatalf("after falling behind the cache has %d of 100 late machines", strings.Count(got, "late"))
	}
	recs, _, _ := st.List(ctx, "Machine", store.ListOptions{})
	if n := strings.Count(got, ",") + 1; n != len(recs) {
		t.Fatalf("cache has %d machines, store %d", n, len(recs))
	}
}

// A cache that cannot reach the wanted revision says so in time, so the
// caller can read the store.
func TestListCacheBehindTimesOut(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lc := newListCache("Machine", st, rawPresent, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// Not running: never ready.
	start := time.Now()
	if _, _, err := lc.snapshot(context.Background(), 0, nil, api.ViewFull, 200*time.Millisecond); !errors.Is(err, store.ErrBehind) {
		t.Fatalf("snapshot of a cache not running = %v, want store.ErrBehind", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("snapshot waited %s", time.Since(start))
	}
}

// Through the API: a list shows a write made just before it, the summary
// view drops inventories but keeps the hardware summary, secrets stay
// masked, and an unknown view is refused.
func TestMachineListViews(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	e.agent("n1")
	e.mustApply(e.admin,
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "bmc/password"}, Type: "string", Secure: true},
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n2", Labels: map[string]string{"rack": "r1"}},
			Params: map[string]json.RawMessage{"bmc/password": json.RawMessage(`"hunter2"`)}})
	full, err := e.admin.ListView(ctx, "machines", "", api.ViewFull)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := e.admin.ListView(ctx, "machines", "", api.ViewSummary)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Items) != 2 || len(sum.Items) != 2 {
		t.Fatalf("lists have %d and %d machines, want 2", len(full.Items), len(sum.Items))
	}
	var f1, s1 api.Machine
	_ = json.Unmarshal(full.Items[0], &f1)
	_ = json.Unmarshal(sum.Items[0], &s1)
	if f1.Status.Inventory == nil || f1.Status.Hardware == nil {
		t.Fatalf("full view of n1 lacks inventory or hardware: %s", full.Items[0])
	}
	if s1.Status.Inventory != nil || s1.Status.Hardware == nil || *s1.Status.Hardware != *f1.Status.Inventory.Summary() {
		t.Fatalf("summary view of n1 = %s", sum.Items[0])
	}
	if len(sum.Items[0]) >= len(full.Items[0])/2 {
		t.Errorf("summary of n1 is %d bytes, full %d: expected well under half", len(sum.Items[0]), len(full.Items[0]))
	}
	for _, l := range []*api.List{full, sum} {
		if strings.Contains(string(l.Items[1]), "hunter2") || strings.Contains(string(l.Items[1]), "enc:v1") {
			t.Fatalf("secret shown in a list: %s", l.Items[1])
		}
	}
	sel, err := e.admin.ListView(ctx, "machines", "rack=r1", api.ViewSummary)
	if err != nil || len(sel.Items) != 1 {
		t.Fatalf("rack=r1: %v, %d items", err, len(sel.Items))
	}
	if _, err := e.admin.ListView(ctx, "machines", "", "tiny"); err == nil || !strings.Contains(err.Error(), `view "tiny"`) {
		t.Fatalf("view=tiny: %v", err)
	}
	// Read your writes, many times in a row.
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("w%02d", i)
		e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: name}})
		l, err := e.admin.List(ctx, "machines", "")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(l.Items[len(l.Items)-1]), `"name":"`+name+`"`) {
			t.Fatalf("list right after creating %s does not end with it", name)
		}
	}
}

// The table view answers the rows `drover get machines` prints, the same
// rows the CLI would make from the full objects, for the selected machines.
func TestMachineTableView(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	e.agent("n1")
	e.mustApply(e.admin,
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n2", Labels: map[string]string{"rack": "r1"}}, Profiles: []string{"p1"}},
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n3", Labels: map[string]string{"rack": "r2"}}})
	full, err := e.admin.ListView(ctx, "machines", "", api.ViewFull)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := e.admin.Table(ctx, "machines", "")
	if err != nil {
		t.Fatal(err)
	}
	if tab.Kind != api.KindTable || tab.Of != api.KindMachine || tab.Revision != full.Revision {
		t.Fatalf("table kind %q of %q at %d, want Table of Machine at %d", tab.Kind, tab.Of, tab.Revision, full.Revision)
	}
	if !reflect.DeepEqual(tab.Columns, tables.MachineColumns) {
		t.Fatalf("columns %+v", tab.Columns)
	}
	if len(tab.Rows) != len(full.Items) {
		t.Fatalf("%d rows for %d machines", len(tab.Rows), len(full.Items))
	}
	for i, raw := range full.Items {
		var m api.Machine
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if want := tables.MachineRow(&m); !reflect.DeepEqual(tab.Rows[i], want) {
			t.Errorf("row %d = %q, want %q", i, tab.Rows[i], want)
		}
	}
	if got := tab.Rows[0][3]; got != "yes" {
		t.Errorf("n1's agent is connected but REACHABLE is %q", got)
	}
	if cpus := tab.Rows[0][7]; cpus == "-" || cpus == "" {
		t.Errorf("n1's CPUS cell is %q: the hardware summary is missing", cpus)
	}
	sel, err := e.admin.Table(ctx, "machines", "rack=r1")
	if err != nil || len(sel.Rows) != 1 || sel.Rows[0][1] != "n2" {
		t.Fatalf("rack=r1: %v, %q", err, sel.Rows)
	}
	// Only machines have rows made by the server.
	if _, err := e.admin.Table(ctx, "profiles", ""); err == nil || !strings.Contains(err.Error(), "only machines") {
		t.Fatalf("table of profiles: %v", err)
	}
	// A write is in the next table.
	e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n4"}})
	if tab, err = e.admin.Table(ctx, "machines", ""); err != nil || len(tab.Rows) != 4 || tab.Rows[3][1] != "n4" {
		t.Fatalf("table after creating n4: %v, %q", err, tab.Rows)
	}
}
