package bolt

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/drover-project/drover/internal/store"
)

type requestKind int

const (
	reqTxn requestKind = iota + 1
	reqAppendLog
	reqDeleteLog
)

// Request states. A caller whose context ends can withdraw its request only
// while it is still queued; once the writer has taken it, the caller waits for
// the outcome, so a cancelled Txn is either not applied at all or reported
// with its real result.
const (
	stateQueued int32 = iota
	stateTaken
	stateWithdrawn
)

type request struct {
	ctx  context.Context
	kind requestKind
	ops  []preparedOp // reqTxn
	log  string       // reqAppendLog, reqDeleteLog
	data []byte       // reqAppendLog

	state atomic.Int32
	done  chan outcome // buffered: the writer never blocks on a caller
}

type outcome struct {
	events []store.Event // reqTxn: one per op, in op order
	rev    int64         // reqTxn: the revision; reqAppendLog: the log size
	err    error
}

// preparedOp is an Op validated and encoded by the caller's goroutine.
type preparedOp struct {
	store.Op
	key   []byte
	value []byte // encoded record with zero revisions; nil for deletes
}

func validateOp(op store.Op) error {
	switch {
	case op.Type < store.OpCreate || op.Type > store.OpDelete:
		return fmt.Errorf("unknown op type %d", int(op.Type))
	case op.Kind == "":
		return errors.New("kind is empty")
	case strings.IndexByte(op.Kind, 0) >= 0:
		return errors.New("kind contains a NUL byte")
	case op.Name == "":
		return errors.New("name is empty")
	case len(op.Kind)+1+len(op.Name) > bolt.MaxKeySize:
		return fmt.Errorf("kind and name are %d bytes long, the limit is %d", len(op.Kind)+1+len(op.Name), bolt.MaxKeySize-1)
	case op.ExpectRevision < 0:
		return fmt.Errorf("expected revision %d is negative", op.ExpectRevision)
	}
	return nil
}

// Txn applies ops atomically as one revision. See store.Store.
//
// Records in the result belong to the caller. An empty ops slice is an
// error: a revision without events would be invisible to watchers.
func (s *Store) Txn(ctx context.Context, ops []store.Op) ([]store.Record, int64, error) {
	if len(ops) == 0 {
		return nil, 0, errors.New("bolt: txn: no ops given")
	}
	prepared := make([]preparedOp, len(ops))
	for i, op := range ops {
		if err := validateOp(op); err != nil {
			return nil, 0, &store.TxnError{Index: i, Op: op.Type, Kind: op.Kind, Name: op.Name, Err: err}
		}
		p := preparedOp{Op: op, key: objectKey(op.Kind, op.Name)}
		p.Data, p.Labels = nil, nil
		if op.Type != store.OpDelete {
			p.value = encodeRecord(op.Labels, op.Data)
			// Detach from the caller's map: events built from it are
			// shared with watchers after Txn returns.
			if len(op.Labels) > 0 {
				p.Labels = maps.Clone(op.Labels)
			}
		}
		prepared[i] = p
	}
	out, err := s.submit(ctx, "txn", &request{kind: reqTxn, ops: prepared})
	if err != nil {
		return nil, 0, err
	}
	// Events are shared with watchers, so the caller gets its own copies.
	recs := make([]store.Record, len(out.events))
	for i, ev := range out.events {
		r := ev.Record
		r.Labels = maps.Clone(r.Labels)
		r.Data = slices.Clone(r.Data)
		recs[i] = r
	}
	return recs, out.rev, nil
}

// submit queues req for the writer and waits for its outcome.
func (s *Store) submit(ctx context.Context, op string, req *request) (outcome, error) {
	if err := ctx.Err(); err != nil {
		return outcome{}, err
	}
	req.ctx = ctx
	req.done = make(chan outcome, 1)
	s.lifecycle.RLock()
	if s.closed {
		s.lifecycle.RUnlock()
		return outcome{}, s.errClosed(op)
	}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		s.lifecycle.RUnlock()
		return outcome{}, ctx.Err()
	}
	s.lifecycle.RUnlock()

	var out outcome
	select {
	case out = <-req.done:
	case <-ctx.Done():
		if req.state.CompareAndSwap(stateQueued, stateWithdrawn) {
			return outcome{}, ctx.Err()
		}
		out = <-req.done // taken: committed or failed, report which
	}
	return out, out.err
}

func (r *request) finish(out outcome) { r.done <- out }

// writeLoop is the only goroutine that writes to the database.
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	batch := make([]*request, 0, maxBatch)
	for req := range s.reqs {
		batch = append(batch[:0], req)
	fill:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.runBatch(batch)
		clear(batch)
	}
}

func (s *Store) runBatch(batch []*request) {
	live := batch[:0]
	for _, r := range batch {
		if !r.state.CompareAndSwap(stateQueued, stateTaken) {
			continue // withdrawn by its caller
		}
		if err := r.ctx.Err(); err != nil {
			r.finish(outcome{err: err})
			continue
		}
		live = append(live, r)
	}
	for len(live) > 0 {
		bad, err := s.commitBatch(live)
		if bad < 0 {
			return
		}
		// An op failed half-way inside bbolt (not a precondition), so the
		// batch was rolled back; retry without the culprit rather than
		// failing its neighbours.
		live[bad].finish(outcome{err: err})
		live = slices.Delete(live, bad, bad+1)
	}
}

// commitBatch applies the requests in one bbolt transaction and answers them
// all, unless a request fails in a way that may have left partial writes: then
// it rolls back, answers nobody and returns that request's index.
func (s *Store) commitBatch(batch []*request) (int, error) {
	outs := make([]outcome, len(batch))
	answerAll := func(err error) {
		for _, r := range batch {
			r.finish(outcome{err: err})
		}
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		answerAll(fmt.Errorf("bolt: begin write: %w", err))
		return -1, nil
	}
	objects := tx.Bucket(bucketObjects)
	history := tx.Bucket(bucketEvents)
	// History keys only ever grow: pages split at bbolt's default 50%
	// would stay half empty forever, doubling the file and the page cache
	// its memory map holds.
	history.FillPercent = 0.95
	logs := tx.Bucket(bucketLogs)
	startRev := s.rev.Load()
	rev := startRev
	var published [][]store.Event
	for i, r := range batch {
		switch r.kind {
		case reqTxn:
			events, entries, failed := checkTxn(objects, r.ops, rev+1)
			if failed != nil {
				outs[i].err = failed // nothing written, nothing to undo
				continue
			}
			if err := applyTxn(objects, history, entries, rev+1); err != nil {
				tx.Rollback()
				return i, fmt.Errorf("bolt: txn: %w", err)
			}
			rev++
			outs[i] = outcome{events: events, rev: rev}
			published = append(published, events)
		case reqAppendLog:
			size, err := appendLog(logs, r.log, r.data)
			if err != nil {
				tx.Rollback()
				return i, fmt.Errorf("bolt: append to log %q: %w", r.log, err)
			}
			outs[i].rev = size
		case reqDeleteLog:
			if err := logs.DeleteBucket([]byte(r.log)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
				tx.Rollback()
				return i, fmt.Errorf("bolt: delete log %q: %w", r.log, err)
			}
		}
	}
	oldest := s.oldest.Load()
	if rev != startRev {
		err := tx.Bucket(bucketMeta).Put(metaRevision, be64(rev))
		if err == nil && rev-oldest+1 >= int64(s.opts.RetainEvents)+s.compactEvery {
			oldest, err = compact(tx, int64(s.opts.RetainEvents), oldest, rev)
		}
		if err != nil {
			tx.Rollback()
			answerAll(fmt.Errorf("bolt: commit: %w", err))
			return -1, nil
		}
	}
	if err := tx.Commit(); err != nil {
		// Precondition failures were judged against writes that are now
		// gone, so they are not trustworthy either: everybody gets the
		// commit error.
		answerAll(fmt.Errorf("bolt: commit: %w", err))
		return -1, nil
	}
	s.rev.Store(rev)
	s.oldest.Store(oldest)
	s.hub.publish(published, rev)
	for i, r := range batch {
		r.finish(outs[i])
	}
	return -1, nil
}

// staged is the state of a key as seen by later ops of the same Txn.
type staged struct {
	value []byte // nil: deleted
}

// checkTxn validates every op against the stored state plus the effects of
// earlier ops in the same Txn, without writing anything, so a failing Txn
// needs no rollback. It returns the events and the history entries to write.
func checkTxn(objects *bolt.Bucket, ops []preparedOp, rev int64) ([]store.Event, []eventEntry, error) {
	var overlay map[string]staged // only needed when a Txn has several ops
	if len(ops) > 1 {
		overlay = make(map[string]staged, len(ops))
	}
	events := make([]store.Event, len(ops))
	entries := make([]eventEntry, len(ops))
	for i, op := range ops {
		cur := objects.Get(op.key)
		if st, ok := overlay[string(op.key)]; ok {
			cur = st.value
		}
		fail := func(err error) error {
			return &store.TxnError{Index: i, Op: op.Type, Kind: op.Kind, Name: op.Name, Err: err}
		}
		var curRev, curCreate int64
		if cur != nil {
			var err error
			if curRev, curCreate, err = revisions(cur); err != nil {
				return nil, nil, fail(fmt.Errorf("stored record: %w", err))
			}
		}
		stale := op.ExpectRevision != 0 && op.ExpectRevision != curRev
		switch {
		case op.Type == store.OpCreate && cur != nil:
			return nil, nil, fail(fmt.Errorf("%w (revision %d)", store.ErrExists, curRev))
		case (op.Type == store.OpUpdate || op.Type == store.OpDelete) && cur == nil:
			return nil, nil, fail(store.ErrNotFound)
		case op.Type == store.OpPut && cur == nil && op.ExpectRevision != 0:
			return nil, nil, fail(fmt.Errorf("%w: expected revision %d, but the record does not exist", store.ErrConflict, op.ExpectRevision))
		case op.Type != store.OpCreate && cur != nil && stale:
			return nil, nil, fail(fmt.Errorf("%w: expected revision %d, stored revision is %d (re-read and retry)", store.ErrConflict, op.ExpectRevision, curRev))
		}

		rec := store.Record{Kind: op.Kind, Name: op.Name, Revision: rev}
		if op.Type == store.OpDelete {
			d := decoder{alias: true}
			value := slices.Clone(cur) // bbolt's slice is only valid inside the tx
			setRevisions(value, rev, curCreate)
			if _, err := d.decodeRecord(value, &rec, nil, nil); err != nil {
				return nil, nil, fail(fmt.Errorf("stored record: %w", err))
			}
			events[i] = store.Event{Type: store.EventDelete, Revision: rev, Record: rec}
			entries[i] = eventEntry{typ: eventDelete, key: op.key, value: value}
			if overlay != nil {
				overlay[string(op.key)] = staged{}
			}
			continue
		}
		rec.CreateRevision = rev
		if cur != nil {
			rec.CreateRevision = curCreate
		}
		setRevisions(op.value, rev, rec.CreateRevision)
		rec.Labels = op.Labels
		data, _ := labelsAndData(op.value, nil, nil)
		if len(data) > 0 {
			rec.Data = data
		}
		events[i] = store.Event{Type: store.EventPut, Revision: rev, Record: rec}
		entries[i] = eventEntry{typ: eventPut, key: op.key, value: op.value}
		if overlay != nil {
			overlay[string(op.key)] = staged{value: op.value}
		}
	}
	if len(events) > 0 {
		events[len(events)-1].Last = true
	}
	return events, entries, nil
}

func applyTxn(objects, history *bolt.Bucket, entries []eventEntry, rev int64) error {
	for _, e := range entries {
		var err error
		if e.typ == eventDelete {
			err = objects.Delete(e.key)
		} else {
			err = objects.Put(e.key, e.value)
		}
		if err != nil {
			return err
		}
	}
	return history.Put(be64(rev), encodeEvents(entries))
}

// compact deletes history older than RetainEvents revisions, at most
// maxCompactPerTx revisions at a time, and returns the new oldest revision.
// It runs inside the batch's write transaction: deletions ride on the
// batch's fsync, and by the time a Txn returns, OldestRevision already
// reflects it.
func compact(tx *bolt.Tx, retain, oldest, rev int64) (int64, error) {
	target := min(rev-retain+1, oldest+maxCompactPerTx)
	if target <= oldest {
		return oldest, nil
	}
	history := tx.Bucket(bucketEvents)
	for r := oldest; r < target; r++ {
		if err := history.Delete(be64(r)); err != nil {
			return 0, fmt.Errorf("compacting history: %w", err)
		}
	}
	if err := tx.Bucket(bucketMeta).Put(metaOldest, be64(target)); err != nil {
		return 0, fmt.Errorf("compacting history: %w", err)
	}
	return target, nil
}
