package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/drover-project/drover/internal/store"
)

// hub hands committed events from the writer to watchers. The writer never
// blocks here: it only appends to each watcher's pending queue under mu.
type hub struct {
	mu       sync.Mutex
	pubRev   int64 // every event up to here has been handed to watchers
	limit    int   // pending events a watcher may accumulate
	watchers map[*watcher]struct{}
}

// watcher is one Watch call. Its goroutine first replays history from the
// database while live events pile up in pending, then forwards pending.
type watcher struct {
	out  chan store.Event
	wake chan struct{} // capacity 1: "pending changed"

	// Guarded by hub.mu.
	pending []store.Event
	// replaying: the goroutine is still reading history. If pending
	// overflows then, the events are dropped and re-read from the database
	// (resync) instead of closing the watcher: they are stored anyway, and
	// a watcher resuming from far back should not be punished for it.
	replaying bool
	resync    bool
	// lagged: pending overflowed after replay, i.e. the reader is slower
	// than the writers. The watcher is closed.
	lagged bool
}

func (h *hub) init(rev int64, limit int) {
	h.pubRev = rev
	h.limit = limit
	h.watchers = make(map[*watcher]struct{})
}

func (h *hub) add(w *watcher) (pubRev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watchers[w] = struct{}{}
	return h.pubRev
}

func (h *hub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watchers, w)
}

// publish is called by the writer after a commit with each revision's events
// in revision order. A revision's events are queued whole or not at all, so
// a watcher closed for lagging never stops inside a transaction.
func (h *hub) publish(groups [][]store.Event, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pubRev = rev
	if len(groups) == 0 {
		return
	}
	for w := range h.watchers {
		for _, g := range groups {
			if w.lagged || w.resync {
				break
			}
			// An empty queue takes any transaction, however large, so a big
			// Txn cannot by itself push out a watcher that keeps up.
			if len(w.pending) > 0 && len(w.pending)+len(g) > h.limit {
				w.pending = nil
				if w.replaying {
					w.resync = true
				} else {
					w.lagged = true
				}
				break
			}
			w.pending = append(w.pending, g...)
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Watch streams every event with a revision greater than fromRevision, in
// revision order and without gaps or duplicates, then follows new commits.
//
// fromRevision must be at least OldestRevision()-1, otherwise the error wraps
// store.ErrCompacted; 0 replays all history while nothing is compacted (see
// the package comment). fromRevision may be ahead of the store: events up to
// it are skipped.
//
// The channel is closed when ctx ends, when the store closes, or when the
// reader falls behind (about 2×WatchBuffer events undelivered) so that a slow
// reader never holds up writers. After a close the caller resumes with
// Watch(ctx, lastRevisionSeen); a close for lagging always happens between
// transactions, so lastRevisionSeen's events are complete. While a watcher is
// still replaying history it is not closed for lagging (it reads what it
// missed from the database again), so a reader that stops then only holds its
// own goroutine until ctx ends.
//
// Events from live commits are shared by all watchers: treat their Labels and
// Data as read-only.
func (s *Store) Watch(ctx context.Context, fromRevision int64) (<-chan store.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if fromRevision < 0 {
		return nil, fmt.Errorf("bolt: watch: revision %d is negative", fromRevision)
	}
	s.lifecycle.RLock()
	defer s.lifecycle.RUnlock()
	if s.closed {
		return nil, s.errClosed("watch")
	}
	w := &watcher{
		out:       make(chan store.Event, s.opts.WatchBuffer),
		wake:      make(chan struct{}, 1),
		replaying: true,
	}
	// Subscribe before looking at history: every event after target is
	// guaranteed to reach pending, and everything up to target is on disk.
	target := s.hub.add(w)
	var oldest int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		oldest, err = readMeta(tx.Bucket(bucketMeta), metaOldest)
		return err
	})
	if err == nil && fromRevision < oldest-1 {
		err = fmt.Errorf("bolt: watch from revision %d: %w: the oldest revision still available is %d; list again and watch from the list's revision",
			fromRevision, store.ErrCompacted, oldest)
	}
	if err != nil {
		s.hub.remove(w)
		return nil, err
	}
	s.watchers.Add(1)
	go s.runWatcher(ctx, w, fromRevision, target)
	return w.out, nil
}

func (s *Store) runWatcher(ctx context.Context, w *watcher, last, target int64) {
	defer func() {
		s.hub.remove(w)
		close(w.out)
		s.watchers.Done()
	}()
	send := func(ev store.Event) bool {
		select {
		case w.out <- ev:
			return true
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		}
	}

	for {
		for last < target {
			events, err := s.readHistory(last, target)
			if err != nil {
				// Compacted under us or the store is closing: closing the
				// channel makes the caller resume, and Watch then reports
				// ErrCompacted if that is the cause.
				if !errors.Is(err, store.ErrClosed) && !errors.Is(err, store.ErrCompacted) {
					slog.Error("bolt: watch: reading history failed", "path", s.path, "after", last, "err", err)
				}
				return
			}
			for _, ev := range events {
				if !send(ev) {
					return
				}
			}
			last = events[len(events)-1].Revision
		}
		s.hub.mu.Lock()
		if !w.resync {
			w.replaying = false
			s.hub.mu.Unlock()
			break
		}
		w.resync = false
		target = s.hub.pubRev
		s.hub.mu.Unlock()
	}

	var spare []store.Event
	for {
		s.hub.mu.Lock()
		batch, lagged := w.pending, w.lagged
		w.pending = spare[:0]
		s.hub.mu.Unlock()
		if lagged {
			return
		}
		for _, ev := range batch {
			if ev.Revision <= last { // at or before fromRevision
				continue
			}
			if !send(ev) {
				return
			}
		}
		n := len(batch)
		if n > 0 {
			last = max(last, batch[n-1].Revision)
		}
		// batch's array goes back to the hub next round; w.pending now
		// holds the other one, so the two never alias.
		clear(batch)
		spare = batch
		if n > 0 {
			continue
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		}
	}
}

// readHistory returns the events of the revisions after `after`, up to
// `upto`, stopping at whole revisions once maxReplayEvents is reached. Reading
// in pieces keeps each bbolt read transaction short.
func (s *Store) readHistory(after, upto int64) ([]store.Event, error) {
	var events []store.Event
	err := s.view("watch", func(tx *bolt.Tx) error {
		d := decoder{batch: true}
		c := tx.Bucket(bucketEvents).Cursor()
		want := after + 1
		for k, v := c.Seek(be64(want)); k != nil && want <= upto && len(events) < maxReplayEvents; k, v = c.Next() {
			if rev := int64(binary.BigEndian.Uint64(k)); rev != want {
				if want == after+1 {
					return fmt.Errorf("bolt: history of revision %d: %w", want, store.ErrCompacted)
				}
				return fmt.Errorf("bolt: history has revision %d where %d was expected: %w", rev, want, errCorrupt)
			}
			var err error
			if events, err = d.decodeEvents(want, v, events); err != nil {
				return err
			}
			want++
		}
		if want == after+1 {
			return fmt.Errorf("bolt: history of revision %d: %w", want, store.ErrCompacted)
		}
		return nil
	})
	return events, err
}
