package server

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/store"
)

// listCache keeps the JSON that callers see of every object of one kind in
// memory, fed by the store's event stream (store.Follower), so that
// listing ten thousand machines is a copy of bytes already made instead of
// a read transaction and a decode of every record (the Kubernetes API
// server's watch cache, in small). Reads stay consistent: a list waits
// until the cache holds the store's revision at the time of the request,
// so a client always sees its own writes.
type listCache struct {
	present func(store.Record) ([]byte, error)
	// views makes the summary view and the table row of a presented
	// object (nil: the summary view is the full one, and no rows).
	views    func(full []byte) (summary, row []byte, err error)
	follower *store.Follower

	// Guarded by the follower's lock.
	names []string // sorted
	items map[string]cachedItem
}

type cachedItem struct {
	labels  map[string]string
	data    []byte // presented JSON
	summary []byte // the summary view (same as data when there is none)
	row     []byte // the table row: a JSON array of strings
}

func newListCache(kind string, st store.Store, present func(store.Record) ([]byte, error), views func([]byte) (summary, row []byte, err error), log *slog.Logger) *listCache {
	c := &listCache{present: present, views: views}
	c.follower = store.NewFollower(st, kind, "list cache", log, c.reset, c.apply)
	return c
}

// run keeps the cache filled until ctx ends.
func (c *listCache) run(ctx context.Context) { c.follower.Run(ctx) }

func (c *listCache) reset(recs []store.Record) error {
	items := make(map[string]cachedItem, len(recs))
	names := make([]string, 0, len(recs))
	for _, rec := range recs {
		it, err := c.item(rec)
		if err != nil {
			return err
		}
		items[rec.Name] = it
		names = append(names, rec.Name)
	}
	c.items, c.names = items, names
	return nil
}

func (c *listCache) item(rec store.Record) (cachedItem, error) {
	data, err := c.present(rec)
	if err != nil {
		return cachedItem{}, err
	}
	it := cachedItem{labels: rec.Labels, data: data, summary: data}
	if c.views != nil {
		if it.summary, it.row, err = c.views(data); err != nil {
			return cachedItem{}, err
		}
	}
	return it, nil
}

// apply presents the object (outside the follower's lock) and returns the
// change to the cache.
func (c *listCache) apply(ev store.Event) (func(), error) {
	name := ev.Record.Name
	if ev.Type == store.EventDelete {
		return func() {
			if i, found := slices.BinarySearch(c.names, name); found {
				c.names = slices.Delete(c.names, i, i+1)
				delete(c.items, name)
			}
		}, nil
	}
	it, err := c.item(ev.Record)
	if err != nil {
		return nil, err
	}
	return func() {
		if i, found := slices.BinarySearch(c.names, name); !found {
			c.names = slices.Insert(c.names, i, name)
		}
		c.items[name] = it
	}, nil
}

// snapshot returns the presented objects matching sel in a view (api.ViewFull,
// ViewSummary or ViewTable: their rows), sorted by name, as of a revision
// at least minRev. It waits up to wait for the cache to get there, else
// returns store.ErrBehind.
func (c *listCache) snapshot(ctx context.Context, minRev int64, sel store.Selector, view string, wait time.Duration) ([][]byte, int64, error) {
	var out [][]byte
	var at int64
	err := c.follower.Read(ctx, minRev, wait, func(rev int64) {
		at = rev
		out = make([][]byte, 0, len(c.names))
		for _, n := range c.names {
			it := c.items[n]
			switch {
			case sel != nil && !sel.Matches(it.labels):
			case view == api.ViewSummary:
				out = append(out, it.summary)
			case view == api.ViewTable:
				out = append(out, it.row)
			default:
				out = append(out, it.data)
			}
		}
	})
	if err != nil {
		return nil, 0, err
	}
	return out, at, nil
}
