package macindex

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/store/bolt"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func putMachine(t *testing.T, st store.Store, name, primary string, nics ...string) {
	t.Helper()
	m := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: name}}
	if primary != "" {
		m.Status.Hardware = &api.Hardware{PrimaryMAC: primary}
	}
	if len(nics) > 0 {
		m.Status.Inventory = &api.Inventory{}
		for i, mac := range nics {
			m.Status.Inventory.NICs = append(m.Status.Inventory.NICs, api.NIC{Name: "eth" + string(rune('0'+i)), MAC: mac})
		}
	}
	lbls, data, err := model.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(context.Background(), st, api.KindMachine, name, lbls, data, 0); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, x *Index, mac, want string) {
	t.Helper()
	got, err := x.Lookup(context.Background(), mac)
	if err != nil || got != want {
		t.Fatalf("Lookup(%s) = %q, %v; want %q", mac, got, err, want)
	}
}

func TestLookupSeesEveryWriteBeforeIt(t *testing.T) {
	st := openStore(t)
	putMachine(t, st, "n1", "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:02")
	x := New(st, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); x.Run(ctx) }()
	defer func() { cancel(); <-done }()

	expect(t, x, "52:54:00:00:00:01", "n1")
	expect(t, x, "52-54-00-00-00-02", "n1")
	expect(t, x, "52:54:00:00:00:03", "")
	for i := 0; i < 50; i++ { // each write is seen by the next lookup, every time
		name := "new" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		mac := "52:54:00:00:01:" + string("0123456789abcdef"[i/16]) + string("0123456789abcdef"[i%16])
		putMachine(t, st, name, mac, mac)
		expect(t, x, mac, name)
	}
	putMachine(t, st, "n1", "52:54:00:00:00:01", "52:54:00:00:00:01")
	expect(t, x, "52:54:00:00:00:02", "")
	// The machine whose primary MAC it is wins over one that only has
	// the MAC on some NIC, whatever their age.
	putMachine(t, st, "n0", "", "52:54:00:00:00:01")
	expect(t, x, "52:54:00:00:00:01", "n1")
	// Between equals, the newest (a reinstall registered anew).
	putMachine(t, st, "z9", "52:54:00:00:00:09")
	putMachine(t, st, "a9", "52:54:00:00:00:09")
	expect(t, x, "52:54:00:00:00:09", "a9")
	if _, err := store.Delete(context.Background(), st, api.KindMachine, "n1", 0); err != nil {
		t.Fatal(err)
	}
	expect(t, x, "52:54:00:00:00:01", "n0")
	if _, err := x.Lookup(context.Background(), "nonsense"); err == nil {
		t.Fatal("a bad MAC was looked up")
	}
}

func TestLookupReadsTheStoreWhenTheIndexIsNotRunning(t *testing.T) {
	st := openStore(t)
	putMachine(t, st, "n1", "52:54:00:00:00:01")
	x := New(st, slog.New(slog.DiscardHandler))
	x.wait = 10 * time.Millisecond
	expect(t, x, "52:54:00:00:00:01", "n1")
	expect(t, x, "52:54:00:00:00:02", "")
}
