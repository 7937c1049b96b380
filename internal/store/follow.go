package store

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// ErrBehind says an in-memory view did not reach the wanted revision in
// time; the caller reads the store instead.
var ErrBehind = errors.New("the in-memory view is behind the store")

// Follower keeps an in-memory view of one kind current from the event
// stream (the Kubernetes informer, in small): it lists, then follows the
// watch from the list's revision, and lists again after a backoff when the
// stream ends (the view fell behind, or history was compacted). The view's
// data belongs to its owner: the follower calls reset with a fresh list
// under its write lock; for each event of the kind it calls apply outside
// the lock (decoding and the like, which must not touch the view) and the
// commit apply returns under the write lock, so that readers never wait
// for more than the change itself; Read's callback runs under the read
// lock. A revision counts as held only once all of
// its events are applied (Event.Last), so a reader never sees half a
// transaction, and a reader asking for the store's current revision sees
// every write acknowledged before it asked.
type Follower struct {
	st    Store
	kind  string
	what  string // names the view in logs
	log   *slog.Logger
	reset func([]Record) error
	apply func(Event) (commit func(), err error)

	mu      sync.RWMutex
	rev     int64 // the view holds the store as of rev
	ready   bool
	changed chan struct{} // closed (and replaced) when rev moves
}

// NewFollower makes a follower of kind; Run keeps it current.
func NewFollower(st Store, kind, what string, log *slog.Logger, reset func([]Record) error, apply func(Event) (commit func(), err error)) *Follower {
	if log == nil {
		log = slog.Default()
	}
	return &Follower{st: st, kind: kind, what: what, log: log, reset: reset, apply: apply, changed: make(chan struct{})}
}

// Run keeps the view current until ctx ends.
func (f *Follower) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := f.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		f.log.Warn(f.what+": following the event stream failed; listing again", "kind", f.kind, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (f *Follower) follow(ctx context.Context) error {
	recs, rev, err := f.st.List(ctx, f.kind, ListOptions{})
	if err != nil {
		return err
	}
	ch, err := f.st.Watch(ctx, rev)
	if err != nil {
		return err
	}
	f.mu.Lock()
	if err := f.reset(recs); err != nil {
		f.ready = false
		f.mu.Unlock()
		return err
	}
	f.ready = true
	f.publishLocked(rev)
	f.mu.Unlock()

	pending := rev // revision of the events being applied
	for ev := range ch {
		var commit func()
		if ev.Record.Kind == f.kind {
			if commit, err = f.apply(ev); err != nil {
				f.mu.Lock()
				f.ready = false
				f.mu.Unlock()
				return err
			}
		}
		f.mu.Lock()
		// A revision is complete once its last event is in; a newer one
		// starting also proves it.
		if ev.Revision > pending && pending > f.rev {
			f.publishLocked(pending)
		}
		pending = ev.Revision
		if commit != nil {
			commit()
		}
		if ev.Last {
			f.publishLocked(ev.Revision)
		}
		f.mu.Unlock()
	}
	f.mu.Lock()
	f.ready = false
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the event stream ended (the view fell behind)")
}

func (f *Follower) publishLocked(rev int64) {
	f.rev = rev
	close(f.changed)
	f.changed = make(chan struct{})
}

// Read waits up to wait until the view holds a revision at least minRev,
// then calls read with that revision under the read lock. It returns
// ErrBehind if the view did not get there in time, or ctx's error.
func (f *Follower) Read(ctx context.Context, minRev int64, wait time.Duration, read func(rev int64)) error {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		f.mu.RLock()
		if f.ready && f.rev >= minRev {
			read(f.rev)
			f.mu.RUnlock()
			return nil
		}
		changed := f.changed
		f.mu.RUnlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return ErrBehind
		case <-changed:
		}
	}
}
