// Package store defines drover's revisioned object store: typed objects are
// kept as JSON records under (kind, name), every write bumps one global
// revision, and Watch replays and follows the change history like etcd.
//
// Backends (bolt/, later postgres/) implement Store and must pass the
// conformance suite in storetest/.
package store

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Backends wrap them with context; callers test with errors.Is.
var (
	ErrNotFound  = errors.New("not found")
	ErrExists    = errors.New("already exists")
	ErrConflict  = errors.New("revision conflict")
	ErrCompacted = errors.New("revision compacted")
	ErrClosed    = errors.New("store closed")
)

// Record is one stored object. Data is the object's JSON as the caller gave
// it; the store never interprets it. Revision is the revision of the last
// write to the record, CreateRevision the revision that created it.
type Record struct {
	Kind           string            `json:"kind"`
	Name           string            `json:"name"`
	Labels         map[string]string `json:"labels,omitempty"`
	Revision       int64             `json:"revision"`
	CreateRevision int64             `json:"createRevision"`
	Data           []byte            `json:"data"`
}

// OpType says what an Op does.
type OpType int

const (
	// OpCreate fails with ErrExists if the record exists.
	OpCreate OpType = iota + 1
	// OpUpdate fails with ErrNotFound if the record is missing, and with
	// ErrConflict if ExpectRevision is non-zero and differs from the stored one.
	OpUpdate
	// OpPut creates or updates; ExpectRevision, if non-zero, must match
	// (a missing record never matches a non-zero ExpectRevision).
	OpPut
	// OpDelete fails with ErrNotFound if missing, ErrConflict on a stale
	// non-zero ExpectRevision.
	OpDelete
)

func (t OpType) String() string {
	switch t {
	case OpCreate:
		return "create"
	case OpUpdate:
		return "update"
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", int(t))
}

// Op is one write inside a transaction. For OpDelete only Kind, Name and
// ExpectRevision are used.
type Op struct {
	Type           OpType
	Kind           string
	Name           string
	Labels         map[string]string
	Data           []byte
	ExpectRevision int64
}

// EventType is the kind of change an Event reports.
type EventType string

const (
	EventPut    EventType = "put"
	EventDelete EventType = "delete"
)

// Event is one change. For EventDelete, Record holds the deleted record with
// Revision set to the deleting revision. All events of one transaction share
// the same Revision and are delivered together, in op order; the last one
// has Last set, so a watcher keeping a copy of the store (a cache) knows
// when it holds a whole revision and not part of one.
type Event struct {
	Type     EventType `json:"type"`
	Revision int64     `json:"revision"`
	Record   Record    `json:"record"`
	Last     bool      `json:"last,omitempty"`
}

// ListOptions narrows a List.
type ListOptions struct {
	// Selector keeps records whose labels match; nil keeps all.
	Selector Selector
}

// Selector matches a label set.
type Selector interface {
	Matches(labels map[string]string) bool
}

// Store is the contract every backend meets.
//
// Revisions start at 1 with the first write and grow by exactly one per
// committed transaction (a Txn with several ops is one revision). Watch
// delivers every event with revision > fromRevision in revision order, then
// follows new writes, until ctx ends or the watcher falls too far behind; in
// both cases the channel is closed. If fromRevision < OldestRevision()-1
// (events after it are no longer all retained) the call fails with
// ErrCompacted (wrapped), and the caller must List again and watch from the
// list's revision. Watch(0) replays all history while nothing has been
// compacted; it does not mean "from now".
type Store interface {
	Get(ctx context.Context, kind, name string) (Record, error)
	// List returns the records of kind, sorted by name, and the store
	// revision the listing reflects.
	List(ctx context.Context, kind string, opts ListOptions) ([]Record, int64, error)
	// Txn applies all ops atomically: either every op succeeds and the
	// results (in op order; for deletes, the deleted record) are returned
	// with the new revision, or none is applied and the first failing op's
	// error is returned as *TxnError.
	Txn(ctx context.Context, ops []Op) ([]Record, int64, error)
	Watch(ctx context.Context, fromRevision int64) (<-chan Event, error)
	// Revision is the current store revision.
	Revision(ctx context.Context) (int64, error)
	// OldestRevision is the oldest revision whose events are still retained
	// (1 before any compaction); Watch can resume from OldestRevision-1 on.
	OldestRevision(ctx context.Context) (int64, error)
	// AppendLog appends bytes to a named log (job output), outside the
	// revision history, and returns the log's size after the append;
	// ReadLog returns the bytes from offset on.
	AppendLog(ctx context.Context, name string, data []byte) (int64, error)
	ReadLog(ctx context.Context, name string, offset int64) ([]byte, error)
	DeleteLog(ctx context.Context, name string) error
	Close() error
}

// TxnError reports which op of a transaction failed. Unwrap gives the
// sentinel (ErrExists, ErrNotFound, ErrConflict).
type TxnError struct {
	Index int
	Op    OpType
	Kind  string
	Name  string
	Err   error
}

func (e *TxnError) Error() string {
	return fmt.Sprintf("%s %s %q: %v", e.Op, e.Kind, e.Name, e.Err)
}

func (e *TxnError) Unwrap() error { return e.Err }

// Convenience wrappers for single-op transactions.

func Create(ctx context.Context, s Store, kind, name string, labels map[string]string, data []byte) (Record, error) {
	return one(ctx, s, Op{Type: OpCreate, Kind: kind, Name: name, Labels: labels, Data: data})
}

func Update(ctx context.Context, s Store, kind, name string, labels map[string]string, data []byte, expectRevision int64) (Record, error) {
	return one(ctx, s, Op{Type: OpUpdate, Kind: kind, Name: name, Labels: labels, Data: data, ExpectRevision: expectRevision})
}

func Put(ctx context.Context, s Store, kind, name string, labels map[string]string, data []byte, expectRevision int64) (Record, error) {
	return one(ctx, s, Op{Type: OpPut, Kind: kind, Name: name, Labels: labels, Data: data, ExpectRevision: expectRevision})
}

func Delete(ctx context.Context, s Store, kind, name string, expectRevision int64) (Record, error) {
	return one(ctx, s, Op{Type: OpDelete, Kind: kind, Name: name, ExpectRevision: expectRevision})
}

func one(ctx context.Context, s Store, op Op) (Record, error) {
	recs, _, err := s.Txn(ctx, []Op{op})
	if err != nil {
		return Record{}, err
	}
	return recs[0], nil
}
