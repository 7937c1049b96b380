// Package bolt is drover's embedded store backend, a single bbolt file.
//
// All writes go through one writer goroutine that commits queued requests
// together (group commit): a batch costs one fsync however many transactions
// it holds, and revisions are handed out in commit order without locks on the
// read path. Reads use bbolt's MVCC read transactions and never wait for the
// writer.
//
// History: every committed transaction stores its events under its revision,
// and the newest Options.RetainEvents revisions are kept. OldestRevision is
// the oldest revision whose events are still stored; Watch(from) accepts any
// from >= OldestRevision-1. Watch(0) therefore replays the whole history as
// long as nothing has been compacted (OldestRevision is 1 until then) and
// fails with store.ErrCompacted afterwards: 0 is not "from now". To follow
// only new writes, watch from Revision() or from the revision a List returned.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/drover-project/drover/internal/store"
)

// Options tunes a Store. The zero value gives the defaults.
type Options struct {
	// RetainEvents is how many revisions of history are kept for Watch
	// (default 100000). Older history is deleted; watchers further behind
	// get store.ErrCompacted and must List again.
	RetainEvents int
	// WatchBuffer is the capacity of each watcher's channel (default 1024).
	// A watcher that has caught up and then stops reading is closed once
	// about twice this many events wait for it, so a slow reader can never
	// hold up writers.
	WatchBuffer int
}

const (
	DefaultRetainEvents = 100000
	DefaultWatchBuffer  = 1024

	// maxBatch bounds one group commit, so a flood of writers cannot make
	// one fsync cover unbounded work and latency.
	maxBatch = 512
	// maxReplayEvents bounds the history read in one read transaction; a
	// long bbolt read transaction would stall the writer when the file grows.
	maxReplayEvents = 1024
	// maxCompactPerTx bounds the keys one compaction transaction deletes.
	maxCompactPerTx = 10000
)

var (
	bucketObjects = []byte("objects")
	bucketEvents  = []byte("events")
	bucketMeta    = []byte("meta")
	bucketLogs    = []byte("logs")

	metaFormat   = []byte("format")
	metaRevision = []byte("revision")
	metaOldest   = []byte("oldest")
)

const fileFormat = 1

// Store is a store.Store on a bbolt file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	opts Options
	// compactEvery lets history grow this far past RetainEvents before a
	// compaction, so deletions are batched instead of one per write.
	compactEvery int64

	// lifecycle guards closed: operations hold it shared while they use the
	// database or enqueue, so Close (exclusive) knows nobody is in between.
	lifecycle sync.RWMutex
	closed    bool

	reqs       chan *request
	writerDone chan struct{}
	closing    chan struct{} // closed after the writer stopped; ends watchers
	watchers   sync.WaitGroup

	// rev and oldest mirror the meta bucket after each commit. Only the
	// writer changes them.
	rev    atomic.Int64
	oldest atomic.Int64

	hub hub
}

var _ store.Store = (*Store)(nil)

// Open opens or creates the store file at path. Only one process can have a
// file open; a second Open waits a second and then fails.
func Open(path string, opts Options) (*Store, error) {
	if opts.RetainEvents < 0 || opts.WatchBuffer < 0 {
		return nil, fmt.Errorf("bolt: open %s: RetainEvents (%d) and WatchBuffer (%d) must not be negative", path, opts.RetainEvents, opts.WatchBuffer)
	}
	if opts.RetainEvents == 0 {
		opts.RetainEvents = DefaultRetainEvents
	}
	if opts.WatchBuffer == 0 {
		opts.WatchBuffer = DefaultWatchBuffer
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      time.Second,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("bolt: open %s: file is locked, is another drover server using it? (%w)", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	var rev, oldest int64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketObjects, bucketEvents, bucketMeta, bucketLogs} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch f := meta.Get(metaFormat); {
		case f == nil:
			if err := meta.Put(metaFormat, []byte{fileFormat}); err != nil {
				return err
			}
			if err := meta.Put(metaRevision, be64(0)); err != nil {
				return err
			}
			if err := meta.Put(metaOldest, be64(1)); err != nil {
				return err
			}
		case len(f) != 1 || f[0] != fileFormat:
			return fmt.Errorf("file format %v is not supported by this drover (want %d)", f, fileFormat)
		}
		var err error
		if rev, err = readMeta(meta, metaRevision); err != nil {
			return err
		}
		oldest, err = readMeta(meta, metaOldest)
		return err
	})
	// RetainEvents may have shrunk since the last run. Compact now, so the
	// store's history meets its options from the first call on.
	for err == nil && rev-oldest+1 > int64(opts.RetainEvents) {
		err = db.Update(func(tx *bolt.Tx) error {
			var err error
			oldest, err = compact(tx, int64(opts.RetainEvents), oldest, rev)
			return err
		})
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	s := &Store{
		db:           db,
		path:         path,
		opts:         opts,
		compactEvery: int64(max(1, min(opts.RetainEvents/16, 1024))),
		reqs:         make(chan *request, maxBatch),
		writerDone:   make(chan struct{}),
		closing:      make(chan struct{}),
	}
	s.rev.Store(rev)
	s.oldest.Store(oldest)
	s.hub.init(rev, opts.WatchBuffer)
	go s.writeLoop()
	return s, nil
}

func be64(n int64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(n))
}

func readMeta(meta *bolt.Bucket, key []byte) (int64, error) {
	v := meta.Get(key)
	if len(v) != 8 {
		return 0, fmt.Errorf("meta %q: %w", key, errCorrupt)
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func (s *Store) errClosed(op string) error {
	return fmt.Errorf("bolt: %s: %w", op, store.ErrClosed)
}

// view runs fn in a read transaction unless the store is closed.
func (s *Store) view(op string, fn func(tx *bolt.Tx) error) error {
	s.lifecycle.RLock()
	defer s.lifecycle.RUnlock()
	if s.closed {
		return s.errClosed(op)
	}
	return s.db.View(fn)
}

// Close stops accepting work, lets the writer finish what was already
// queued, closes every watcher channel and then the file. Later calls on the
// store return store.ErrClosed.
func (s *Store) Close() error {
	s.lifecycle.Lock()
	if s.closed {
		s.lifecycle.Unlock()
		return s.errClosed("close")
	}
	s.closed = true
	s.lifecycle.Unlock()

	close(s.reqs) // no sender is left: they enqueue under lifecycle.RLock
	<-s.writerDone
	close(s.closing)
	s.watchers.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("bolt: close %s: %w", s.path, err)
	}
	return nil
}

// Get returns the record of kind and name, or an error wrapping
// store.ErrNotFound.
func (s *Store) Get(ctx context.Context, kind, name string) (store.Record, error) {
	if err := ctx.Err(); err != nil {
		return store.Record{}, err
	}
	rec := store.Record{Kind: kind, Name: name}
	err := s.view("get", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketObjects).Get(objectKey(kind, name))
		if v == nil {
			return fmt.Errorf("%s %q: %w", kind, name, store.ErrNotFound)
		}
		var d decoder
		if _, err := d.decodeRecord(v, &rec, nil, nil); err != nil {
			return fmt.Errorf("bolt: get %s %q: %w", kind, name, err)
		}
		return nil
	})
	if err != nil {
		return store.Record{}, err
	}
	return rec, nil
}

// List returns the records of kind sorted by name (byte order), filtered by
// opts.Selector, and the revision of the snapshot it read.
func (s *Store) List(ctx context.Context, kind string, opts store.ListOptions) ([]store.Record, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var recs []store.Record
	var rev int64
	err := s.view("list", func(tx *bolt.Tx) error {
		var err error
		if rev, err = readMeta(tx.Bucket(bucketMeta), metaRevision); err != nil {
			return err
		}
		d := decoder{batch: true}
		var scratch map[string]string
		if opts.Selector != nil {
			scratch = make(map[string]string)
		}
		prefix := kindPrefix(kind)
		c := tx.Bucket(bucketObjects).Cursor()
		// Counting first is cheap (no decoding) and saves growing a slice
		// of thousands of records, and lets all names share one string.
		count, nameBytes := 0, 0
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			count++
			nameBytes += len(k) - len(prefix)
		}
		if opts.Selector == nil {
			recs = make([]store.Record, 0, count)
		}
		names := make([]byte, 0, nameBytes)
		var ends []int
		if opts.Selector == nil {
			ends = make([]int, 0, count)
		}
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			rec := store.Record{Kind: kind}
			ok, err := d.decodeRecord(v, &rec, opts.Selector, scratch)
			if err != nil {
				return fmt.Errorf("bolt: list %s: record %q: %w", kind, k[len(prefix):], err)
			}
			if ok {
				names = append(names, k[len(prefix):]...)
				ends = append(ends, len(names))
				recs = append(recs, rec)
			}
		}
		all, start := string(names), 0
		for i, end := range ends {
			recs[i].Name = all[start:end]
			start = end
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return recs, rev, nil
}

// Revision returns the revision of the last committed transaction.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.lifecycle.RLock()
	defer s.lifecycle.RUnlock()
	if s.closed {
		return 0, s.errClosed("revision")
	}
	return s.rev.Load(), nil
}

// OldestRevision returns the oldest revision whose events are still stored
// (1 until the first compaction). Watch accepts fromRevision >= this - 1.
func (s *Store) OldestRevision(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.lifecycle.RLock()
	defer s.lifecycle.RUnlock()
	if s.closed {
		return 0, s.errClosed("oldest revision")
	}
	return s.oldest.Load(), nil
}
