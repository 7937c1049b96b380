package storetest

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/drover-project/drover/internal/store"
)

// RunPersistent checks that a store reopened on the same directory has
// everything it had: objects, revision, retained history, compaction point
// and logs, and that it carries on from there. open must open (or create) the
// store kept in dir, configured as for Run; the test closes every store it
// opens.
func RunPersistent(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	dir := t.TempDir()
	ctx := t.Context()

	s := open(t, dir)
	// Enough writes to compact, then a mix of operations in the retained part.
	writeN(t, s, "filler", RetainEvents*3)
	create(t, s, "machine", "n1", map[string]string{"role": "compute"}, `{"v":1}`)
	create(t, s, "machine", "n2", nil, `{"v":2}`)
	if _, _, err := s.Txn(ctx, []store.Op{
		{Type: store.OpUpdate, Kind: "machine", Name: "n1", Labels: map[string]string{"role": "storage"}, Data: []byte(`{"v":3}`)},
		{Type: store.OpDelete, Kind: "machine", Name: "n2"},
		{Type: store.OpCreate, Kind: "switch", Name: "s1"},
	}); err != nil {
		t.Fatal(err)
	}
	var logData []byte
	for i := range 50 {
		part := bytes.Repeat([]byte(strconv.Itoa(i)), 1+i*40)
		if _, err := s.AppendLog(ctx, "job/1", part); err != nil {
			t.Fatal(err)
		}
		logData = append(logData, part...)
	}
	s.AppendLog(ctx, "job/2", []byte("two"))
	s.AppendLog(ctx, "job/3", []byte("three"))
	if err := s.DeleteLog(ctx, "job/3"); err != nil {
		t.Fatal(err)
	}

	rev := revision(t, s)
	old := oldest(t, s)
	if old <= 1 {
		t.Fatalf("no compaction after %d revisions (RetainEvents %d)", rev, RetainEvents)
	}
	// One event per retained revision, plus two for the last, 3-op, txn.
	history := receive(t, watch(t, ctx, s, old-1), int(rev-old+1)+2)
	lists := map[string][]store.Record{}
	for _, kind := range []string{"filler", "machine", "switch"} {
		lists[kind], _, _ = s.List(ctx, kind, store.ListOptions{})
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	if got := revision(t, s); got != rev {
		t.Errorf("revision after reopen %d, want %d", got, rev)
	}
	// Compacted history stays gone; a backend may compact further on open.
	if got := oldest(t, s); got < old || rev-got+1 < RetainEvents {
		t.Errorf("oldest revision after reopen %d, want %d..%d", got, old, rev-RetainEvents+1)
	} else if got > old {
		history = slices.DeleteFunc(history, func(e store.Event) bool { return e.Revision < got })
		old = got
	}
	for kind, want := range lists {
		got, listRev, err := s.List(ctx, kind, store.ListOptions{})
		if err != nil || listRev != rev {
			t.Errorf("List(%s) after reopen: revision %d, %v", kind, listRev, err)
		}
		if !slices.EqualFunc(got, want, sameRecord) {
			t.Errorf("List(%s) after reopen differs:\n got %v\nwant %v", kind, got, want)
		}
	}
	if _, err := s.Get(ctx, "machine", "n2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted record back after reopen: %v", err)
	}
	if _, err := s.Watch(ctx, old-2); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("Watch(%d) after reopen: %v, want ErrCompacted", old-2, err)
	}
	ch := watch(t, ctx, s, old-1)
	replayed := receive(t, ch, len(history))
	for i := range history {
		if fmtEvent(replayed[i]) != fmtEvent(history[i]) {
			t.Fatalf("history event %d after reopen:\n got %s\nwant %s", i, fmtEvent(replayed[i]), fmtEvent(history[i]))
		}
	}
	if got, err := s.ReadLog(ctx, "job/1", 0); err != nil || !bytes.Equal(got, logData) {
		t.Errorf("log job/1 after reopen: %d bytes (want %d), %v", len(got), len(logData), err)
	}
	if got, err := s.ReadLog(ctx, "job/1", 1000); err != nil || !bytes.Equal(got, logData[1000:]) {
		t.Errorf("log job/1 from 1000 after reopen: %v", err)
	}
	if got, _ := s.ReadLog(ctx, "job/2", 0); string(got) != "two" {
		t.Errorf("log job/2 after reopen: %q", got)
	}
	if _, err := s.ReadLog(ctx, "job/3", 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted log job/3 back after reopen: %v", err)
	}

	// Carry on: the next write is rev+1, creation revisions are kept, the
	// watcher opened above follows it, and logs keep growing.
	upd, err := store.Update(ctx, s, "machine", "n1", nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if upd.Revision != rev+1 || upd.CreateRevision != lists["machine"][0].CreateRevision {
		t.Errorf("first write after reopen: %s, want revision %d and the original create revision", fmtRecord(upd), rev+1)
	}
	if ev := receive(t, ch, 1)[0]; ev.Revision != rev+1 {
		t.Errorf("live event after reopen at %d, want %d", ev.Revision, rev+1)
	}
	if size, err := s.AppendLog(ctx, "job/1", []byte("more")); err != nil || size != int64(len(logData))+4 {
		t.Errorf("append after reopen: size %d, %v; want %d", size, err, len(logData)+4)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	defer s.Close()
	if got := revision(t, s); got != rev+1 {
		t.Errorf("revision after second reopen %d, want %d", got, rev+1)
	}
}
