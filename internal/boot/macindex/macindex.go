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
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/store"
)

// Wait bounds how long a lookup waits for the index to catch up with the
// store before it reads the store itself.
const Wait = 2 * time.Second

// Index maps MACs to machine names.
type Index struct {
	st       store.Store
	wait     time.Duration
	follower *store.Follower

	// Guarded by the follower's lock.
	byName map[string]entry
	byMAC  map[string][]string // machine names, sorted
}

// entry is what the index keeps of a machine.
type entry struct {
	macs    []string
	primary string
	created int64
}

// New makes an index; Run fills it.
func New(st store.Store, log *slog.Logger) *Index {
	x := &Index{st: st, wait: Wait}
	x.follower = store.NewFollower(st, api.KindMachine, "MAC index", log, x.reset, x.apply)
	return x
}

// Run keeps the index current until ctx ends: list, then follow the event
// stream, and list again when the stream ends.
func (x *Index) Run(ctx context.Context) { x.follower.Run(ctx) }

func (x *Index) reset(recs []store.Record) error {
	x.byName = make(map[string]entry, len(recs))
	x.byMAC = map[string][]string{}
	for _, rec := range recs {
		e := entryOf(rec)
		x.byName[rec.Name] = e
		x.addLocked(rec.Name, e)
	}
	return nil
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

// apply decodes the machine (outside the follower's lock) and returns the
// change to the index.
func (x *Index) apply(ev store.Event) (func(), error) {
	name := ev.Record.Name
	var e entry
	if ev.Type != store.EventDelete {
		e = entryOf(ev.Record)
	}
	return func() {
		if old, ok := x.byName[name]; ok {
			x.removeLocked(name, old)
			delete(x.byName, name)
		}
		if ev.Type == store.EventDelete {
			return
		}
		x.byName[name] = e
		x.addLocked(name, e)
	}, nil
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
	var name string
	err = x.follower.Read(ctx, rev, x.wait, func(int64) {
		cands := map[string]entry{}
		for _, n := range x.byMAC[mac] {
			cands[n] = x.byName[n]
		}
		name = best(mac, cands)
	})
	if err == nil {
		return name, nil
	}
	if !errors.Is(err, store.ErrBehind) {
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
