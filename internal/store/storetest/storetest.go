// Package storetest is the conformance suite every store.Store backend must
// pass. It pins the parts of the contract that store.go leaves to words:
//
//   - Revisions start at 1 and grow by exactly one per successful Txn; a
//     failing Txn changes nothing and consumes no revision.
//   - OldestRevision is the oldest revision whose events are retained (1
//     until something is compacted). Watch(from) works for every
//     from >= OldestRevision-1 and fails with ErrCompacted below that, with
//     an error that names the oldest available revision. Watch(0) thus
//     replays everything while nothing is compacted; it does not mean "now".
//     Compaction is visible when the Txn that triggered it returns.
//   - Watch may start at a revision ahead of the store; events up to it are
//     skipped.
//   - A watcher that keeps reading receives every transaction however large;
//     one that stops reading is closed rather than slowing writers, and
//     never in the middle of a transaction.
//   - AppendLog returns the log's size after the append; ReadLog at the size
//     returns nothing, beyond it fails; a missing log is ErrNotFound;
//     DeleteLog of a missing log succeeds.
//   - Txn with no ops fails; Txn with an invalid op (empty kind or name)
//     fails with a *TxnError naming the op.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/internal/store"
)

const (
	// RetainEvents is the history retention the store given to Run must be
	// configured with. The suite expects at least this many revisions to be
	// kept and at most twice as many once writes stop.
	RetainEvents = 64
	// MaxWatchLag bounds how far a watcher that stops reading may fall behind
	// (in events) before the store must close it. Configure the backend's
	// buffers so it closes such a watcher at or before this lag.
	MaxWatchLag = 1024
)

// wait bounds every blocking step, so a broken backend fails instead of hanging.
const wait = 10 * time.Second

// Run runs the suite. open must return a new, empty store configured as
// described by RetainEvents and MaxWatchLag, and close it in t.Cleanup
// (tests close some stores themselves, so a second Close must be harmless).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"CRUD", testCRUD},
		{"Errors", testErrors},
		{"TxnErrorIndex", testTxnErrorIndex},
		{"TxnAtomic", testTxnAtomic},
		{"TxnSequentialOps", testTxnSequentialOps},
		{"InvalidOps", testInvalidOps},
		{"Revisions", testRevisions},
		{"DataNotAliased", testDataNotAliased},
		{"List", testList},
		{"ListSelector", testListSelector},
		{"WatchReplay", testWatchReplay},
		{"WatchFromZero", testWatchFromZero},
		{"WatchLive", testWatchLive},
		{"WatchFuture", testWatchFuture},
		{"WatchBigTxn", testWatchBigTxn},
		{"WatchCancel", testWatchCancel},
		{"Compaction", testCompaction},
		{"ConcurrentWriters", testConcurrentWriters},
		{"SlowWatcher", testSlowWatcher},
		{"Logs", testLogs},
		{"LogChunks", testLogChunks},
		{"ContextCancelled", testContextCancelled},
		{"ContextRace", testContextRace},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// --- helpers ---

func create(t *testing.T, s store.Store, kind, name string, labels map[string]string, data string) store.Record {
	t.Helper()
	rec, err := store.Create(t.Context(), s, kind, name, labels, []byte(data))
	if err != nil {
		t.Fatalf("create %s %q: %v", kind, name, err)
	}
	return rec
}

func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

func oldest(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.OldestRevision(t.Context())
	if err != nil {
		t.Fatalf("OldestRevision: %v", err)
	}
	return rev
}

// sameRecord compares records treating nil and empty labels/data as equal.
func sameRecord(a, b store.Record) bool {
	return a.Kind == b.Kind && a.Name == b.Name && a.Revision == b.Revision &&
		a.CreateRevision == b.CreateRevision && maps.Equal(a.Labels, b.Labels) && bytes.Equal(a.Data, b.Data)
}

func checkRecord(t *testing.T, what string, got, want store.Record) {
	t.Helper()
	if !sameRecord(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, fmtRecord(got), fmtRecord(want))
	}
}

func fmtRecord(r store.Record) string {
	return fmt.Sprintf("{%s/%s rev=%d create=%d labels=%v data=%q}", r.Kind, r.Name, r.Revision, r.CreateRevision, r.Labels, r.Data)
}

func fmtEvent(e store.Event) string {
	last := ""
	if e.Last {
		last = " last"
	}
	return fmt.Sprintf("%s@%d%s %s", e.Type, e.Revision, last, fmtRecord(e.Record))
}

func watch(t *testing.T, ctx context.Context, s store.Store, from int64) <-chan store.Event {
	t.Helper()
	ch, err := s.Watch(ctx, from)
	if err != nil {
		t.Fatalf("Watch(%d): %v", from, err)
	}
	return ch
}

// receive reads exactly n events or fails.
func receive(t *testing.T, ch <-chan store.Event, n int) []store.Event {
	t.Helper()
	out := make([]store.Event, 0, n)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed after %d of %d events", len(out), n)
			}
			out = append(out, ev)
		case <-timer.C:
			t.Fatalf("timed out after %d of %d events", len(out), n)
		}
	}
	return out
}

// quiet checks that no event arrives for a short while.
func quiet(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("unexpected event %s", fmtEvent(ev))
		}
		t.Fatal("watch channel closed unexpectedly")
	case <-time.After(50 * time.Millisecond):
	}
}

// closed drains ch until it is closed and returns how many events it held.
func closed(t *testing.T, ch <-chan store.Event, after string) int {
	t.Helper()
	timeout := time.After(wait)
	for n := 0; ; n++ {
		select {
		case _, ok := <-ch:
			if !ok {
				return n
			}
		case <-timeout:
			t.Fatalf("watch channel still open %v after %s", wait, after)
		}
	}
}

// writeN makes n single-op transactions and returns their revisions.
func writeN(t *testing.T, s store.Store, kind string, n int) []int64 {
	t.Helper()
	revs := make([]int64, n)
	for i := range n {
		rec, err := store.Put(t.Context(), s, kind, "n"+strconv.Itoa(i%7), map[string]string{"i": strconv.Itoa(i)}, []byte(strconv.Itoa(i)), 0)
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		revs[i] = rec.Revision
	}
	return revs
}

// --- objects and transactions ---

func testCRUD(t *testing.T, s store.Store) {
	ctx := t.Context()
	if rev := revision(t, s); rev != 0 {
		t.Fatalf("new store at revision %d, want 0", rev)
	}
	labels := map[string]string{"role": "compute"}
	rec := create(t, s, "machine", "n1", labels, `{"a":1}`)
	want := store.Record{Kind: "machine", Name: "n1", Labels: labels, Revision: 1, CreateRevision: 1, Data: []byte(`{"a":1}`)}
	checkRecord(t, "create result", rec, want)
	got, err := s.Get(ctx, "machine", "n1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	checkRecord(t, "get after create", got, want)

	rec, err = store.Update(ctx, s, "machine", "n1", map[string]string{"role": "storage"}, []byte(`{"a":2}`), 1)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	want = store.Record{Kind: "machine", Name: "n1", Labels: map[string]string{"role": "storage"}, Revision: 2, CreateRevision: 1, Data: []byte(`{"a":2}`)}
	checkRecord(t, "update result", rec, want)
	got, _ = s.Get(ctx, "machine", "n1")
	checkRecord(t, "get after update", got, want)

	// Put creates when missing and updates when present.
	rec, err = store.Put(ctx, s, "machine", "n2", nil, []byte(`{}`), 0)
	if err != nil {
		t.Fatalf("Put (create): %v", err)
	}
	checkRecord(t, "put-create result", rec, store.Record{Kind: "machine", Name: "n2", Revision: 3, CreateRevision: 3, Data: []byte(`{}`)})
	rec, err = store.Put(ctx, s, "machine", "n2", nil, []byte(`{"b":1}`), 3)
	if err != nil {
		t.Fatalf("Put (update, matching revision): %v", err)
	}
	checkRecord(t, "put-update result", rec, store.Record{Kind: "machine", Name: "n2", Revision: 4, CreateRevision: 3, Data: []byte(`{"b":1}`)})
	// Update without ExpectRevision is unconditional.
	if _, err := store.Update(ctx, s, "machine", "n2", nil, []byte(`{"b":2}`), 0); err != nil {
		t.Fatalf("unconditional Update: %v", err)
	}

	del, err := store.Delete(ctx, s, "machine", "n1", 2)
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	// The deleted record comes back stamped with the deleting revision.
	checkRecord(t, "delete result", del, store.Record{Kind: "machine", Name: "n1", Labels: map[string]string{"role": "storage"}, Revision: 6, CreateRevision: 1, Data: []byte(`{"a":2}`)})
	if _, err := s.Get(ctx, "machine", "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after delete: %v, want ErrNotFound", err)
	}
	// A re-created record starts a new life.
	rec = create(t, s, "machine", "n1", nil, "")
	if rec.CreateRevision != 7 || rec.Revision != 7 {
		t.Errorf("re-create: revision %d/%d, want 7/7", rec.Revision, rec.CreateRevision)
	}
	if rev := revision(t, s); rev != 7 {
		t.Errorf("Revision = %d, want 7", rev)
	}
}

func expectTxnErr(t *testing.T, err error, sentinel error, index int, op store.OpType) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v, want %v", err, sentinel)
	}
	var te *store.TxnError
	if !errors.As(err, &te) {
		t.Fatalf("error %T (%v) is not a *store.TxnError", err, err)
	}
	if te.Index != index || te.Op != op {
		t.Fatalf("TxnError index %d op %v, want %d %v (%v)", te.Index, te.Op, index, op, err)
	}
}

func testErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, "machine", "n1", nil, "1") // revision 1
	store.Update(ctx, s, "machine", "n1", nil, []byte("2"), 0)

	_, err := store.Create(ctx, s, "machine", "n1", nil, nil)
	expectTxnErr(t, err, store.ErrExists, 0, store.OpCreate)
	_, err = store.Update(ctx, s, "machine", "missing", nil, nil, 0)
	expectTxnErr(t, err, store.ErrNotFound, 0, store.OpUpdate)
	_, err = store.Update(ctx, s, "machine", "n1", nil, nil, 1)
	expectTxnErr(t, err, store.ErrConflict, 0, store.OpUpdate)
	_, err = store.Put(ctx, s, "machine", "n1", nil, nil, 1)
	expectTxnErr(t, err, store.ErrConflict, 0, store.OpPut)
	_, err = store.Put(ctx, s, "machine", "missing", nil, nil, 1)
	expectTxnErr(t, err, store.ErrConflict, 0, store.OpPut)
	_, err = store.Delete(ctx, s, "machine", "missing", 0)
	expectTxnErr(t, err, store.ErrNotFound, 0, store.OpDelete)
	_, err = store.Delete(ctx, s, "machine", "n1", 1)
	expectTxnErr(t, err, store.ErrConflict, 0, store.OpDelete)
	// The same name under another kind is another record.
	_, err = store.Update(ctx, s, "switch", "n1", nil, nil, 0)
	expectTxnErr(t, err, store.ErrNotFound, 0, store.OpUpdate)
	if _, err := s.Get(ctx, "switch", "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(other kind): %v, want ErrNotFound", err)
	}

	if rev := revision(t, s); rev != 2 {
		t.Errorf("failed writes moved the revision to %d, want 2", rev)
	}
	got, _ := s.Get(ctx, "machine", "n1")
	if got.Revision != 2 || string(got.Data) != "2" {
		t.Errorf("failed writes changed the record: %s", fmtRecord(got))
	}
}

func testTxnErrorIndex(t *testing.T, s store.Store) {
	create(t, s, "machine", "exists", nil, "")
	_, _, err := s.Txn(t.Context(), []store.Op{
		{Type: store.OpCreate, Kind: "machine", Name: "a"},
		{Type: store.OpPut, Kind: "machine", Name: "b"},
		{Type: store.OpCreate, Kind: "machine", Name: "exists"},
		{Type: store.OpDelete, Kind: "machine", Name: "missing"},
	})
	expectTxnErr(t, err, store.ErrExists, 2, store.OpCreate)
	var te *store.TxnError
	errors.As(err, &te)
	if te.Kind != "machine" || te.Name != "exists" {
		t.Errorf("TxnError names %s %q, want machine \"exists\"", te.Kind, te.Name)
	}
	if !strings.Contains(err.Error(), `"exists"`) {
		t.Errorf("error %q does not name the record", err)
	}
}

func testTxnAtomic(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, "machine", "keep", nil, "original")
	before := revision(t, s)
	ch := watch(t, ctx, s, before)
	_, _, err := s.Txn(ctx, []store.Op{
		{Type: store.OpCreate, Kind: "machine", Name: "new1"},
		{Type: store.OpUpdate, Kind: "machine", Name: "keep", Data: []byte("changed")},
		{Type: store.OpDelete, Kind: "machine", Name: "keep"},
		{Type: store.OpUpdate, Kind: "machine", Name: "keep", ExpectRevision: 999},
	})
	expectTxnErr(t, err, store.ErrNotFound, 3, store.OpUpdate) // deleted by op 2
	if rev := revision(t, s); rev != before {
		t.Fatalf("failed txn moved revision %d -> %d", before, rev)
	}
	if _, err := s.Get(ctx, "machine", "new1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("op 0 of a failed txn was applied: %v", err)
	}
	got, err := s.Get(ctx, "machine", "keep")
	if err != nil || string(got.Data) != "original" {
		t.Errorf("ops 1-2 of a failed txn were applied: %s %v", fmtRecord(got), err)
	}
	quiet(t, ch) // and nothing was published

	// A multi-op txn that succeeds is one revision, results in op order.
	recs, rev, err := s.Txn(ctx, []store.Op{
		{Type: store.OpCreate, Kind: "machine", Name: "x", Data: []byte("x")},
		{Type: store.OpDelete, Kind: "machine", Name: "keep"},
		{Type: store.OpCreate, Kind: "switch", Name: "y", Labels: map[string]string{"l": "v"}},
	})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	if rev != before+1 || len(recs) != 3 {
		t.Fatalf("Txn = %d records at %d, want 3 at %d", len(recs), rev, before+1)
	}
	for i, want := range []string{"x", "keep", "y"} {
		if recs[i].Name != want || recs[i].Revision != rev {
			t.Errorf("result %d = %s, want %s at revision %d", i, fmtRecord(recs[i]), want, rev)
		}
	}
	evs := receive(t, ch, 3)
	wantTypes := []store.EventType{store.EventPut, store.EventDelete, store.EventPut}
	for i, ev := range evs {
		if ev.Revision != rev || ev.Type != wantTypes[i] || !sameRecord(ev.Record, recs[i]) || ev.Last != (i == len(evs)-1) {
			t.Errorf("event %d = %s, want %s of %s", i, fmtEvent(ev), wantTypes[i], fmtRecord(recs[i]))
		}
	}
}

// Ops of one Txn see the effects of the ops before them.
func testTxnSequentialOps(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, "machine", "old", nil, "")
	recs, rev, err := s.Txn(ctx, []store.Op{
		{Type: store.OpCreate, Kind: "machine", Name: "a", Data: []byte("1")},
		{Type: store.OpUpdate, Kind: "machine", Name: "a", Data: []byte("2")},
		{Type: store.OpDelete, Kind: "machine", Name: "old"},
		{Type: store.OpCreate, Kind: "machine", Name: "old", Data: []byte("reborn")},
	})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	if rev != 2 {
		t.Fatalf("revision %d, want 2", rev)
	}
	checkRecord(t, "update after create", recs[1], store.Record{Kind: "machine", Name: "a", Revision: 2, CreateRevision: 2, Data: []byte("2")})
	checkRecord(t, "re-create after delete", recs[3], store.Record{Kind: "machine", Name: "old", Revision: 2, CreateRevision: 2, Data: []byte("reborn")})
	got, _ := s.Get(ctx, "machine", "a")
	if string(got.Data) != "2" {
		t.Errorf("a = %q, want the second op's data", got.Data)
	}
	got, _ = s.Get(ctx, "machine", "old")
	if string(got.Data) != "reborn" || got.CreateRevision != 2 {
		t.Errorf("old = %s, want re-created at 2", fmtRecord(got))
	}
	// An op that conflicts with an earlier op of the same txn fails it.
	_, _, err = s.Txn(ctx, []store.Op{
		{Type: store.OpDelete, Kind: "machine", Name: "a"},
		{Type: store.OpUpdate, Kind: "machine", Name: "a"},
	})
	expectTxnErr(t, err, store.ErrNotFound, 1, store.OpUpdate)
	if _, err := s.Get(ctx, "machine", "a"); err != nil {
		t.Errorf("a was deleted by a failed txn: %v", err)
	}
}

func testInvalidOps(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, _, err := s.Txn(ctx, nil); err == nil {
		t.Error("Txn with no ops succeeded")
	}
	for i, op := range []store.Op{
		{Type: store.OpCreate, Kind: "", Name: "n"},
		{Type: store.OpCreate, Kind: "machine", Name: ""},
		{Type: store.OpType(99), Kind: "machine", Name: "n"},
	} {
		_, _, err := s.Txn(ctx, []store.Op{{Type: store.OpPut, Kind: "machine", Name: "fine"}, op})
		var te *store.TxnError
		if !errors.As(err, &te) || te.Index != 1 {
			t.Errorf("invalid op %d: error %v, want *TxnError at index 1", i, err)
		}
	}
	if rev := revision(t, s); rev != 0 {
		t.Errorf("invalid txns moved the revision to %d", rev)
	}
}

func testRevisions(t *testing.T, s store.Store) {
	for i := int64(1); i <= 20; i++ {
		ops := make([]store.Op, 1+i%4)
		for j := range ops {
			ops[j] = store.Op{Type: store.OpPut, Kind: "k", Name: fmt.Sprintf("r%d-%d", i, j)}
		}
		recs, rev, err := s.Txn(t.Context(), ops)
		if err != nil {
			t.Fatalf("Txn %d: %v", i, err)
		}
		if rev != i {
			t.Fatalf("Txn %d got revision %d", i, rev)
		}
		for _, r := range recs {
			if r.Revision != i || r.CreateRevision != i {
				t.Fatalf("Txn %d result %s", i, fmtRecord(r))
			}
		}
		if got := revision(t, s); got != i {
			t.Fatalf("Revision() = %d after Txn %d", got, i)
		}
	}
}

func testDataNotAliased(t *testing.T, s store.Store) {
	ctx := t.Context()
	data := []byte("abc")
	labels := map[string]string{"k": "v"}
	rec, err := store.Create(ctx, s, "k", "n", labels, data)
	if err != nil {
		t.Fatal(err)
	}
	data[0] = 'X'
	labels["k"] = "changed"
	rec.Data[1] = 'Y'
	rec.Labels["k"] = "mutated"
	got, _ := s.Get(ctx, "k", "n")
	if string(got.Data) != "abc" || got.Labels["k"] != "v" {
		t.Fatalf("store shares memory with its caller: %s", fmtRecord(got))
	}
	got.Data[2] = 'Z'
	if again, _ := s.Get(ctx, "k", "n"); string(again.Data) != "abc" {
		t.Fatalf("Get result aliases stored data: %q", again.Data)
	}
	recs, _, _ := s.List(ctx, "k", store.ListOptions{})
	recs[0].Data = append(recs[0].Data, "tail"...)
	recs[0].Data[0] = 'Q'
	if again, _ := s.Get(ctx, "k", "n"); string(again.Data) != "abc" {
		t.Fatalf("List result aliases stored data: %q", again.Data)
	}
}

// --- list ---

func testList(t *testing.T, s store.Store) {
	ctx := t.Context()
	recs, rev, err := s.List(ctx, "machine", store.ListOptions{})
	if err != nil || len(recs) != 0 || rev != 0 {
		t.Fatalf("List on empty store = %d records, revision %d, %v", len(recs), rev, err)
	}
	names := []string{"n10", "n2", "a", "n1", "Z", "n1-b"}
	for _, n := range names {
		create(t, s, "machine", n, map[string]string{"name": n}, n)
	}
	// Kinds that share a prefix with "machine" must not leak into it.
	create(t, s, "machines", "x", nil, "")
	create(t, s, "machin", "y", nil, "")
	create(t, s, "switch", "n1", nil, "")
	store.Delete(ctx, s, "machine", "n2", 0)

	recs, rev, err = s.List(ctx, "machine", store.ListOptions{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if want := revision(t, s); rev != want {
		t.Errorf("List revision %d, want current %d", rev, want)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Name)
		if r.Kind != "machine" || string(r.Data) != r.Name || r.Labels["name"] != r.Name || r.Revision == 0 || r.CreateRevision != r.Revision {
			t.Errorf("listed record %s is wrong", fmtRecord(r))
		}
	}
	want := []string{"Z", "a", "n1", "n1-b", "n10"}
	if !slices.Equal(got, want) {
		t.Errorf("List names %q, want %q (sorted by name)", got, want)
	}
	// The listed revision is a valid point to start watching from.
	ch := watch(t, ctx, s, rev)
	create(t, s, "machine", "after", nil, "")
	if ev := receive(t, ch, 1)[0]; ev.Record.Name != "after" || ev.Revision != rev+1 {
		t.Errorf("watch from List revision got %s", fmtEvent(ev))
	}
}

type selectorFunc func(map[string]string) bool

func (f selectorFunc) Matches(l map[string]string) bool { return f(l) }

func testListSelector(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, "machine", "c1", map[string]string{"role": "compute", "rack": "r1"}, "")
	create(t, s, "machine", "c2", map[string]string{"role": "compute", "rack": "r2"}, "")
	create(t, s, "machine", "s1", map[string]string{"role": "storage"}, "")
	create(t, s, "machine", "bare", nil, "")
	list := func(sel store.Selector) []string {
		recs, _, err := s.List(ctx, "machine", store.ListOptions{Selector: sel})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var names []string
		for _, r := range recs {
			names = append(names, r.Name)
		}
		return names
	}
	if got := list(selectorFunc(func(l map[string]string) bool { return l["role"] == "compute" })); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("role=compute: %q", got)
	}
	if got := list(selectorFunc(func(l map[string]string) bool { _, ok := l["role"]; return !ok })); !slices.Equal(got, []string{"bare"}) {
		t.Errorf("!role: %q", got)
	}
	if got := list(selectorFunc(func(l map[string]string) bool { return l["rack"] == "r2" && l["role"] == "compute" })); !slices.Equal(got, []string{"c2"}) {
		t.Errorf("rack=r2,role=compute: %q", got)
	}
	if got := list(nil); len(got) != 4 {
		t.Errorf("nil selector: %q", got)
	}
	// A selector sees the full label set of each record.
	var seen []map[string]string
	list(selectorFunc(func(l map[string]string) bool { seen = append(seen, maps.Clone(l)); return false }))
	if len(seen) != 4 || len(seen[0]) != 0 || !maps.Equal(seen[1], map[string]string{"role": "compute", "rack": "r1"}) {
		t.Errorf("selector saw %v", seen)
	}
}

// --- watch ---

func testWatchReplay(t *testing.T, s store.Store) {
	ctx := t.Context()
	// 12 revisions, some multi-op, with updates and deletes.
	var all []store.Event
	for i := range 12 {
		ops := []store.Op{{Type: store.OpPut, Kind: "m", Name: "a", Data: []byte(strconv.Itoa(i))}}
		if i%3 == 1 {
			ops = append(ops, store.Op{Type: store.OpCreate, Kind: "m", Name: "t" + strconv.Itoa(i)})
		}
		if i%3 == 2 {
			ops = append(ops, store.Op{Type: store.OpDelete, Kind: "m", Name: "t" + strconv.Itoa(i-1)})
		}
		recs, rev, err := s.Txn(ctx, ops)
		if err != nil {
			t.Fatal(err)
		}
		for j, r := range recs {
			typ := store.EventPut
			if ops[j].Type == store.OpDelete {
				typ = store.EventDelete
			}
			all = append(all, store.Event{Type: typ, Revision: rev, Record: r})
		}
	}
	cur := revision(t, s)
	for from := int64(0); from <= cur; from++ {
		wctx, cancel := context.WithCancel(ctx)
		ch := watch(t, wctx, s, from)
		var want []store.Event
		for _, e := range all {
			if e.Revision > from {
				want = append(want, e)
			}
		}
		got := receive(t, ch, len(want))
		for i := range want {
			if got[i].Type != want[i].Type || got[i].Revision != want[i].Revision || !sameRecord(got[i].Record, want[i].Record) {
				t.Fatalf("Watch(%d) event %d = %s, want %s", from, i, fmtEvent(got[i]), fmtEvent(want[i]))
			}
		}
		quiet(t, ch)
		cancel()
	}
}

func testWatchFromZero(t *testing.T, s store.Store) {
	writeN(t, s, "m", 5)
	if o := oldest(t, s); o != 1 {
		t.Fatalf("OldestRevision = %d before any compaction, want 1", o)
	}
	evs := receive(t, watch(t, t.Context(), s, 0), 5)
	for i, ev := range evs {
		if ev.Revision != int64(i+1) {
			t.Fatalf("Watch(0) event %d at revision %d: 0 must replay from revision 1", i, ev.Revision)
		}
	}
}

func testWatchLive(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, "m", "before", nil, "")
	ch := watch(t, ctx, s, revision(t, s))
	quiet(t, ch)
	c := create(t, s, "m", "n", map[string]string{"a": "b"}, "1")
	u, _ := store.Update(ctx, s, "m", "n", nil, []byte("2"), 0)
	d, _ := store.Delete(ctx, s, "m", "n", 0)
	evs := receive(t, ch, 3)
	want := []store.Event{
		{Type: store.EventPut, Revision: 2, Record: c},
		{Type: store.EventPut, Revision: 3, Record: u},
		{Type: store.EventDelete, Revision: 4, Record: d},
	}
	for i := range want {
		if evs[i].Type != want[i].Type || evs[i].Revision != want[i].Revision || !sameRecord(evs[i].Record, want[i].Record) {
			t.Errorf("event %d = %s, want %s", i, fmtEvent(evs[i]), fmtEvent(want[i]))
		}
	}
	if evs[2].Record.CreateRevision != 2 || evs[2].Record.Revision != 4 {
		t.Errorf("delete event record %s: want Revision = deleting revision, CreateRevision kept", fmtRecord(evs[2].Record))
	}
	quiet(t, ch)
}

func testWatchFuture(t *testing.T, s store.Store) {
	writeN(t, s, "m", 2)
	ch := watch(t, t.Context(), s, 4)
	writeN(t, s, "m", 3) // revisions 3, 4, 5
	if ev := receive(t, ch, 1)[0]; ev.Revision != 5 {
		t.Fatalf("Watch(4) first event at revision %d, want 5", ev.Revision)
	}
	quiet(t, ch)
}

// A watcher that keeps reading gets a transaction larger than any buffer.
func testWatchBigTxn(t *testing.T, s store.Store) {
	ch := watch(t, t.Context(), s, 0)
	n := MaxWatchLag * 2
	ops := make([]store.Op, n)
	for i := range ops {
		ops[i] = store.Op{Type: store.OpCreate, Kind: "m", Name: fmt.Sprintf("n%05d", i)}
	}
	if _, _, err := s.Txn(t.Context(), ops); err != nil {
		t.Fatal(err)
	}
	evs := receive(t, ch, n)
	for i, ev := range evs {
		if ev.Revision != 1 || ev.Record.Name != ops[i].Name {
			t.Fatalf("event %d = %s, want %s at 1", i, fmtEvent(ev), ops[i].Name)
		}
	}
}

func testWatchCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	ch := watch(t, ctx, s, 0)
	create(t, s, "m", "a", nil, "")
	receive(t, ch, 1)
	cancel()
	closed(t, ch, "cancelling the watch context")
	create(t, s, "m", "b", nil, "") // publishing to a cancelled watcher is harmless
	if _, err := s.Watch(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch with a cancelled context: %v", err)
	}
}

func testCompaction(t *testing.T, s store.Store) {
	ctx := t.Context()
	writeN(t, s, "m", RetainEvents*4)
	cur := revision(t, s)
	old := oldest(t, s)
	kept := cur - old + 1
	if old <= 1 || kept < RetainEvents || kept > 2*RetainEvents {
		t.Fatalf("after %d revisions with RetainEvents %d: oldest %d keeps %d revisions, want %d..%d",
			cur, RetainEvents, old, kept, RetainEvents, 2*RetainEvents)
	}
	for _, from := range []int64{0, 1, old - 2} {
		_, err := s.Watch(ctx, from)
		if !errors.Is(err, store.ErrCompacted) {
			t.Fatalf("Watch(%d) with oldest %d: %v, want ErrCompacted", from, old, err)
		}
		if !strings.Contains(err.Error(), strconv.FormatInt(old, 10)) {
			t.Errorf("compaction error %q does not name the oldest revision %d", err, old)
		}
	}
	// The oldest retained revision is still fully available.
	evs := receive(t, watch(t, ctx, s, old-1), int(kept))
	for i, ev := range evs {
		if ev.Revision != old+int64(i) {
			t.Fatalf("Watch(%d) event %d at revision %d", old-1, i, ev.Revision)
		}
	}
	// Objects are not affected by compaction.
	recs, _, err := s.List(ctx, "m", store.ListOptions{})
	if err != nil || len(recs) != 7 {
		t.Fatalf("List after compaction: %d records, %v", len(recs), err)
	}
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	const writers, perWriter = 8, 200
	ctx := t.Context()
	start := revision(t, s)
	ch := watch(t, ctx, s, start)

	revs := make([][]int64, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				name := fmt.Sprintf("w%d-%d", w, i)
				ops := []store.Op{{Type: store.OpCreate, Kind: "m", Name: name, Data: []byte(name)}}
				if i > 0 { // second op touches the writer's previous record
					ops = append(ops, store.Op{Type: store.OpDelete, Kind: "m", Name: fmt.Sprintf("w%d-%d", w, i-1)})
				}
				_, rev, err := s.Txn(ctx, ops)
				if err != nil {
					errs <- fmt.Errorf("writer %d txn %d: %w", w, i, err)
					return
				}
				revs[w] = append(revs[w], rev)
			}
		})
	}

	total := writers * perWriter
	events := total*2 - writers
	got := receive(t, ch, events)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var all []int64
	for w := range writers {
		if !slices.IsSorted(revs[w]) {
			t.Errorf("writer %d saw revisions go backwards", w)
		}
		all = append(all, revs[w]...)
	}
	slices.Sort(all)
	for i, r := range all {
		if r != start+int64(i)+1 {
			t.Fatalf("revisions are not gap-free: position %d has %d, want %d", i, r, start+int64(i)+1)
		}
	}
	// The watcher saw every revision once, in order, each complete.
	perRev := map[int64]int{}
	last := start
	for _, ev := range got {
		if ev.Revision < last {
			t.Fatalf("event revision %d after %d", ev.Revision, last)
		}
		last = ev.Revision
		perRev[ev.Revision]++
	}
	if len(perRev) != total || last != start+int64(total) {
		t.Fatalf("watcher saw %d revisions up to %d, want %d up to %d", len(perRev), last, total, start+int64(total))
	}
	quiet(t, ch)
	recs, _, _ := s.List(ctx, "m", store.ListOptions{})
	if len(recs) != writers {
		t.Errorf("%d records left, want one per writer", len(recs))
	}
}

// A watcher that stops reading is closed instead of blocking writers, between
// transactions, and can resume from the last revision it saw.
func testSlowWatcher(t *testing.T, s store.Store) {
	ctx := t.Context()
	ch := watch(t, ctx, s, 0)
	create(t, s, "m", "first", nil, "")
	receive(t, ch, 1) // the watcher has caught up

	const opsPerTxn = 64
	txns := 2 * MaxWatchLag / opsPerTxn // fits in RetainEvents, so resuming works
	done := make(chan error, 1)
	go func() {
		for i := range txns {
			ops := make([]store.Op, opsPerTxn)
			for j := range ops {
				ops[j] = store.Op{Type: store.OpPut, Kind: "m", Name: fmt.Sprintf("n%d", j), Data: []byte(strconv.Itoa(i))}
			}
			if _, _, err := s.Txn(ctx, ops); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("writers blocked by a watcher that does not read")
	}

	// Drain: the channel must close, at a transaction boundary.
	perRev := map[int64]int{}
	last := int64(1)
	timeout := time.After(wait)
drain:
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				break drain
			}
			if ev.Revision < last {
				t.Fatalf("revision %d after %d", ev.Revision, last)
			}
			last = ev.Revision
			perRev[ev.Revision]++
		case <-timeout:
			t.Fatal("a watcher that stopped reading was never closed")
		}
	}
	if last == 1+int64(txns) {
		t.Fatalf("watcher received all %d events despite not reading; buffers larger than MaxWatchLag?", txns*opsPerTxn)
	}
	for rev, n := range perRev {
		if n != opsPerTxn {
			t.Errorf("revision %d delivered %d of %d events before the close", rev, n, opsPerTxn)
		}
	}
	// Resume where it stopped.
	rest := receive(t, watch(t, ctx, s, last), (1+txns-int(last))*opsPerTxn)
	if rest[0].Revision != last+1 || rest[len(rest)-1].Revision != 1+int64(txns) {
		t.Errorf("resume from %d got revisions %d..%d", last, rest[0].Revision, rest[len(rest)-1].Revision)
	}
}

// --- logs ---

func testLogs(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.ReadLog(ctx, "job1", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ReadLog of a missing log: %v, want ErrNotFound", err)
	}
	for i, part := range []string{"hello ", "", "world\n", "again\n"} {
		size, err := s.AppendLog(ctx, "job1", []byte(part))
		if err != nil {
			t.Fatalf("AppendLog %d: %v", i, err)
		}
		want := map[int]int64{0: 6, 1: 6, 2: 12, 3: 18}[i]
		if size != want {
			t.Errorf("AppendLog %d returned %d, want the new size %d", i, size, want)
		}
	}
	// A log whose name extends another's is a separate log.
	s.AppendLog(ctx, "job", []byte("short"))
	s.AppendLog(ctx, "job10", []byte("other"))

	for _, tc := range []struct {
		off  int64
		want string
	}{{0, "hello world\nagain\n"}, {6, "world\nagain\n"}, {7, "orld\nagain\n"}, {17, "\n"}, {18, ""}} {
		got, err := s.ReadLog(ctx, "job1", tc.off)
		if err != nil || string(got) != tc.want {
			t.Errorf("ReadLog(job1, %d) = %q, %v; want %q", tc.off, got, err, tc.want)
		}
	}
	for _, off := range []int64{19, -1} {
		if _, err := s.ReadLog(ctx, "job1", off); err == nil {
			t.Errorf("ReadLog(job1, %d) past the end succeeded", off)
		}
	}
	if got, _ := s.ReadLog(ctx, "job", 0); string(got) != "short" {
		t.Errorf("log job = %q", got)
	}
	if rev := revision(t, s); rev != 0 {
		t.Errorf("logs moved the object revision to %d", rev)
	}
	// Empty append creates an empty log.
	if size, err := s.AppendLog(ctx, "empty", nil); err != nil || size != 0 {
		t.Errorf("AppendLog(empty) = %d, %v", size, err)
	}
	if got, err := s.ReadLog(ctx, "empty", 0); err != nil || len(got) != 0 {
		t.Errorf("ReadLog(empty) = %q, %v", got, err)
	}

	if err := s.DeleteLog(ctx, "job1"); err != nil {
		t.Fatalf("DeleteLog: %v", err)
	}
	if _, err := s.ReadLog(ctx, "job1", 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadLog after DeleteLog: %v, want ErrNotFound", err)
	}
	if err := s.DeleteLog(ctx, "job1"); err != nil {
		t.Errorf("DeleteLog of a missing log: %v, want nil", err)
	}
	if got, _ := s.ReadLog(ctx, "job10", 0); string(got) != "other" {
		t.Errorf("deleting job1 touched job10: %q", got)
	}
	// A deleted log starts again from zero.
	if size, _ := s.AppendLog(ctx, "job1", []byte("new")); size != 3 {
		t.Errorf("AppendLog after delete returned %d, want 3", size)
	}
}

// Many appends of mixed sizes read back exactly from any offset.
func testLogChunks(t *testing.T, s store.Store) {
	ctx := t.Context()
	var want []byte
	for i := range 300 {
		part := bytes.Repeat([]byte{byte('a' + i%26)}, 1+(i*37)%700)
		if i == 150 {
			part = bytes.Repeat([]byte("big"), 30000)
		}
		size, err := s.AppendLog(ctx, "big", part)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, part...)
		if size != int64(len(want)) {
			t.Fatalf("append %d: size %d, want %d", i, size, len(want))
		}
	}
	for _, off := range []int{0, 1, 699, 4096, 16383, 16384, 16385, 50000, len(want) / 2, len(want) - 1, len(want)} {
		got, err := s.ReadLog(ctx, "big", int64(off))
		if err != nil {
			t.Fatalf("ReadLog(%d): %v", off, err)
		}
		if !bytes.Equal(got, want[off:]) {
			t.Fatalf("ReadLog(%d): %d bytes differ from the %d written", off, len(got), len(want)-off)
		}
	}
}

// --- context and lifecycle ---

func testContextCancelled(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := s.Txn(ctx, []store.Op{{Type: store.OpCreate, Kind: "m", Name: "n"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Txn: %v, want context.Canceled", err)
	}
	if _, err := s.Get(ctx, "m", "n"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get: %v", err)
	}
	if _, _, err := s.List(ctx, "m", store.ListOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("List: %v", err)
	}
	if _, err := s.AppendLog(ctx, "l", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("AppendLog: %v", err)
	}
	if _, err := s.Get(t.Context(), "m", "n"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a cancelled Txn was applied: %v", err)
	}
	if _, err := s.ReadLog(t.Context(), "l", 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a cancelled AppendLog was applied: %v", err)
	}
	if rev := revision(t, s); rev != 0 {
		t.Errorf("cancelled Txn moved the revision to %d", rev)
	}
}

// Txns whose context ends while in flight either fail with the context's
// error and are not applied, or succeed and are applied; never anything else.
func testContextRace(t *testing.T, s store.Store) {
	const n = 200
	type result struct {
		rev int64
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Duration(i%20)*100*time.Microsecond)
			defer cancel()
			_, rev, err := s.Txn(ctx, []store.Op{{Type: store.OpCreate, Kind: "m", Name: strconv.Itoa(i)}})
			results[i] = result{rev, err}
		})
	}
	wg.Wait()
	applied := 0
	for i, r := range results {
		rec, err := s.Get(t.Context(), "m", strconv.Itoa(i))
		switch {
		case r.err == nil:
			applied++
			if err != nil || rec.Revision != r.rev {
				t.Errorf("txn %d reported revision %d but Get gives %s, %v", i, r.rev, fmtRecord(rec), err)
			}
		case errors.Is(r.err, context.DeadlineExceeded):
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("txn %d failed with %v but was applied at %d", i, r.err, rec.Revision)
			}
		default:
			t.Errorf("txn %d: unexpected error %v", i, r.err)
		}
	}
	if rev := revision(t, s); rev != int64(applied) {
		t.Errorf("revision %d, but %d txns succeeded", rev, applied)
	}
	t.Logf("%d of %d txns committed before their deadline", applied, n)
}

func testClosed(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, "m", "n", nil, "")
	ch := watch(t, ctx, s, 0)
	receive(t, ch, 1)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := closed(t, ch, "Close"); n > 0 {
		t.Errorf("%d events after Close, none were written", n)
	}
	checks := map[string]error{}
	_, checks["Get"] = s.Get(ctx, "m", "n")
	_, _, checks["List"] = s.List(ctx, "m", store.ListOptions{})
	_, _, checks["Txn"] = s.Txn(ctx, []store.Op{{Type: store.OpPut, Kind: "m", Name: "x"}})
	_, checks["Watch"] = s.Watch(ctx, 0)
	_, checks["Revision"] = s.Revision(ctx)
	_, checks["OldestRevision"] = s.OldestRevision(ctx)
	_, checks["AppendLog"] = s.AppendLog(ctx, "l", nil)
	_, checks["ReadLog"] = s.ReadLog(ctx, "l", 0)
	checks["DeleteLog"] = s.DeleteLog(ctx, "l")
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}
