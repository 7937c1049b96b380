package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/drover-project/drover/internal/store"
)

// listCache keeps the JSON that callers see of every object of one kind in
// memory, fed by the store's event stream, so that listing ten thousand
// machines is a copy of bytes already made instead of a read transaction
// and a decode of every record (the Kubernetes API server's watch cache, in
// small). Reads stay consistent: a list waits until the cache holds the
// store's revision at the time of the request, so a client always sees its
// own writes.
type listCache struct {
	kind    string
	st      store.Store
	present func(store.Record) ([]byte, error)
	// summarize makes the summary view of a presented object (nil: the
	// summary view is the full one).
	summarize func([]byte) ([]byte, error)
	log       *slog.Logger

	mu      sync.RWMutex
	rev     int64 // the cache holds the store as of rev, whole revisions only
	ready   bool
	names   []string // sorted
	items   map[string]cachedItem
	changed chan struct{} // closed (and replaced) when rev moves
}

type cachedItem struct {
	labels  map[string]string
	data    []byte // presented JSON
	summary []byte // the summary view (same as data when there is none)
}

func newListCache(kind string, st store.Store, present func(store.Record) ([]byte, error), summarize func([]byte) ([]byte, error), log *slog.Logger) *listCache {
	return &listCache{kind: kind, st: st, present: present, summarize: summarize, log: log, changed: make(chan struct{})}
}

// run keeps the cache filled until ctx ends: list, then follow the event
// stream; when the stream ends (the cache fell behind, or history was
// compacted) list again.
func (c *listCache) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("list cache: following the event stream failed; listing again", "kind", c.kind, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *listCache) follow(ctx context.Context) error {
	recs, rev, err := c.st.List(ctx, c.kind, store.ListOptions{})
	if err != nil {
		return err
	}
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
	ch, err := c.st.Watch(ctx, rev)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.items, c.names, c.ready = items, names, true
	c.publishLocked(rev)
	c.mu.Unlock()

	pending := rev // revision of the events being applied
	for ev := range ch {
		c.mu.Lock()
		// A revision is complete once its last event is in; a newer one
		// starting also proves it (belt and braces).
		if ev.Revision > pending && pending > c.rev {
			c.publishLocked(pending)
		}
		pending = ev.Revision
		if ev.Record.Kind == c.kind {
			if err := c.applyLocked(ev); err != nil {
				c.ready = false
				c.mu.Unlock()
				return err
			}
		}
		if ev.Last {
			c.publishLocked(ev.Revision)
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.ready = false
	c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the event stream ended (the cache fell behind)")
}

func (c *listCache) item(rec store.Record) (cachedItem, error) {
	data, err := c.present(rec)
	if err != nil {
		return cachedItem{}, err
	}
	it := cachedItem{labels: rec.Labels, data: data, summary: data}
	if c.summarize != nil {
		if it.summary, err = c.summarize(data); err != nil {
			return cachedItem{}, err
		}
	}
	return it, nil
}

func (c *listCache) applyLocked(ev store.Event) error {
	name := ev.Record.Name
	i, found := slices.BinarySearch(c.names, name)
	if ev.Type == store.EventDelete {
		if found {
			c.names = slices.Delete(c.names, i, i+1)
			delete(c.items, name)
		}
		return nil
	}
	it, err := c.item(ev.Record)
	if err != nil {
		return err
	}
	if !found {
		c.names = slices.Insert(c.names, i, name)
	}
	c.items[name] = it
	return nil
}

func (c *listCache) publishLocked(rev int64) {
	c.rev = rev
	close(c.changed)
	c.changed = make(chan struct{})
}

// errCacheBehind says the cache did not reach the wanted revision in time;
// the caller reads the store instead.
var errCacheBehind = errors.New("list cache is behind")

// snapshot returns the presented objects (or their summaries) matching sel,
// sorted by name, as of a revision at least minRev. It waits up to wait for
// the cache to get there.
func (c *listCache) snapshot(ctx context.Context, minRev int64, sel store.Selector, summary bool, wait time.Duration) ([][]byte, int64, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		c.mu.RLock()
		if c.ready && c.rev >= minRev {
			out := make([][]byte, 0, len(c.names))
			for _, n := range c.names {
				it := c.items[n]
				switch {
				case sel != nil && !sel.Matches(it.labels):
				case summary:
					out = append(out, it.summary)
				default:
					out = append(out, it.data)
				}
			}
			rev := c.rev
			c.mu.RUnlock()
			return out, rev, nil
		}
		changed := c.changed
		c.mu.RUnlock()
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-deadline.C:
			return nil, 0, errCacheBehind
		case <-changed:
		}
	}
}
