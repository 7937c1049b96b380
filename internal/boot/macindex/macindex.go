// Package macindex finds machines by hardware address for the boot
// services. The index is kept in memory from the store's event stream
// (list, then watch, as the server's list cache does), and a lookup first
// waits until the index holds the store's revision at the time of the
// call: a machine registered, or its NIC reported, before a request is
// found by that request.
package macindex

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/store"
)

// Wait bounds how long a lookup waits for the index to catch up with the
// store before it reads the store itself.
const Wait = 2 * time.Second

// Index maps MACs to machine names.
type Index struct {
	st   store.Store
	log  *slog.Logger
	wait time.Duration

	mu      sync.Mutex
	rev     int64 // every event up to rev is applied
	ready   bool
	changed chan struct{} // closed (and replaced) when rev moves
	byName  map[string]entry
	byMAC   map[string][]string // machine names, sorted
}

// entry is what the index keeps of a machine.
type entry struct {
	macs    []string
	primary string
	created int64
}

// New makes an index; Run fills it.
func New(st store.Store, log *slog.Logger) *Index {
	if log == nil {
		log = slog.Default()
	}
	return &Index{st: st, log: log, wait: Wait, changed: make(chan struct{})}
}

// Run keeps the index current until ctx ends: list, then follow the event
// stream, and list again when the stream ends.
func (x *Index) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := x.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		x.log.Warn("MAC index: following the event stream failed; listing again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (x *Index) follow(ctx context.Context) error {
	recs, rev, err := x.st.List(ctx, api.KindMachine, store.ListOptions{})
	if err != nil {
		return err
	}
	byName := make(map[string]entry, len(recs))
	for _, rec := range recs {
		byName[rec.Name] = entryOf(rec)
	}
	ch, err := x.st.Watch(ctx, rev)
	if err != nil {
		return err
	}
	x.mu.Lock()
	x.byName = byName
	x.byMAC = map[string][]string{}
	for name, e := range byName {
		x.addLocked(name, e)
	}
	x.ready = true
	x.publishLocked(rev)
	x.mu.Unlock()

	for ev := range ch {
		x.mu.Lock()
		if ev.Record.Kind == api.KindMachine {
			x.applyLocked(ev)
		}
		if ev.Last {
			x.publishLocked(ev.Revision)
		}
		x.mu.Unlock()
	}
	x.mu.Lock()
	x.ready = false
	x.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the event stream ended (the index fell behind)")
}

// macsOnly decodes the part of a machine the index needs.
type macsOnly struct {
	Status struct {
		Hardware *struct {
			PrimaryMAC string `json:"primaryMAC"`
		} `json:"hardware"`
		Inventory *struct {
			NICs []struct {
				MAC string `json:"mac"`
			} `json:"nics"`
		} `json:"inventory"`
	} `json:"status"`
}

func entryOf(rec store.Record) entry {
	var m macsOnly
	if err := json.Unmarshal(rec.Data, &m); err != nil {
		return entry{created: rec.CreateRevision}
	}
	full := api.Machine{}
	if h := m.Status.Hardware; h != nil {
		full.Status.Hardware = &api.Hardware{PrimaryMAC: h.PrimaryMAC}
	}
	if inv := m.Status.Inventory; inv != nil {
		full.Status.Inventory = &api.Inventory{}
		for _, n := range inv.NICs {
			full.Status.Inventory.NICs = append(full.Status.Inventory.NICs, api.NIC{MAC: n.MAC})
		}
	}
	e := entry{macs: full.MACs(), created: rec.CreateRevision}
	if full.Status.Hardware != nil {
		e.primary, _ = api.NormalizeMAC(full.Status.Hardware.PrimaryMAC)
	}
	return e
}

func (x *Index) applyLocked(ev store.Event) {
	name := ev.Record.Name
	if old, ok := x.byName[name]; ok {
		x.removeLocked(name, old)
		delete(x.byName, name)
	}
	if ev.Type == store.EventDelete {
		return
	}
	e := entryOf(ev.Record)
	x.byName[name] = e
	x.addLocked(name, e)
}

func (x *Index) addLocked(name string, e entry) {
	for _, mac := range e.macs {
		names := append(x.byMAC[mac], name)
		sort.Strings(names)
		x.byMAC[mac] = names
	}
}

func (x *Index) removeLocked(name string, e entry) {
	for _, mac := range e.macs {
		names := x.byMAC[mac]
		for i, n := range names {
			if n == name {
				names = append(names[:i:i], names[i+1:]...)
				break
			}
		}
		if len(names) == 0 {
			delete(x.byMAC, mac)
		} else {
			x.byMAC[mac] = names
		}
	}
}

func (x *Index) publishLocked(rev int64) {
	if rev > x.rev {
		x.rev = rev
	}
	close(x.changed)
	x.changed = make(chan struct{})
}

// Lookup returns the name of the machine that has mac ("" when none has),
// as of the store's revision at the time of the call. When several
// machines report the same MAC, the one whose primary MAC it is wins,
// then the one created last (a reinstalled machine registered anew).
func (x *Index) Lookup(ctx context.Context, mac string) (string, error) {
	mac, err := api.NormalizeMAC(mac)
	if err != nil {
		return "", err
	}
	rev, err := x.st.Revision(ctx)
	if err != nil {
		return "", err
	}
	if name, ok := x.lookupAt(ctx, rev, mac); ok {
		return name, nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	// The index is not running or far behind: read the store.
	recs, _, err := x.st.List(ctx, api.KindMachine, store.ListOptions{})
	if err != nil {
		return "", err
	}
	cands := map[string]entry{}
	for _, rec := range recs {
		if e := entryOf(rec); slices.Contains(e.macs, mac) {
			cands[rec.Name] = e
		}
	}
	return best(mac, cands), nil
}

// lookupAt waits until the index holds rev; false if it did not within
// the wait.
func (x *Index) lookupAt(ctx context.Context, rev int64, mac string) (string, bool) {
	timer := time.NewTimer(x.wait)
	defer timer.Stop()
	for {
		x.mu.Lock()
		if x.ready && x.rev >= rev {
			cands := map[string]entry{}
			for _, n := range x.byMAC[mac] {
				cands[n] = x.byName[n]
			}
			x.mu.Unlock()
			return best(mac, cands), true
		}
		ch := x.changed
		x.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return "", false
		case <-ctx.Done():
			return "", false
		}
	}
}

func best(mac string, cands map[string]entry) string {
	names := make([]string, 0, len(cands))
	for n := range cands {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := cands[names[i]], cands[names[j]]
		pa, pb := a.primary == mac, b.primary == mac
		if pa != pb {
			return pa
		}
		if a.created != b.created {
			return a.created > b.created
		}
		return names[i] < names[j]
	})
	if len(names) == 0 {
		return ""
	}
	return names[0]
}
