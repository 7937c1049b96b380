package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/drover-project/drover/internal/store"
)

// Logs live in a nested bucket per log name, keyed by the big-endian byte
// offset of each chunk, so reading from an offset touches only that log's
// pages from the right chunk on, and deleting a log drops one bucket. Small
// appends (a line of job output) are merged into the last chunk up to
// logChunk bytes, which keeps the key count, and so the B+tree, small.
const logChunk = 16 << 10

func validateLogName(name string) error {
	if name == "" {
		return errors.New("log name is empty")
	}
	if len(name) > bolt.MaxKeySize {
		return fmt.Errorf("log name is %d bytes long, the limit is %d", len(name), bolt.MaxKeySize)
	}
	return nil
}

// AppendLog appends data to the named log, creating it if needed (even for
// empty data), and returns the log's size after the append, which is the
// offset to read new output from next time. Appends are durable when it
// returns and are committed with other writes in the same group commit.
func (s *Store) AppendLog(ctx context.Context, name string, data []byte) (int64, error) {
	if err := validateLogName(name); err != nil {
		return 0, fmt.Errorf("bolt: append log: %w", err)
	}
	out, err := s.submit(ctx, "append log", &request{kind: reqAppendLog, log: name, data: slices.Clone(data)})
	return out.rev, err
}

// ReadLog returns the bytes of the named log from offset to its end. A log
// that was never written or was deleted gives an error wrapping
// store.ErrNotFound; offset must be between 0 and the log's size (reading at
// the size returns no bytes and no error, so followers can poll the end).
func (s *Store) ReadLog(ctx context.Context, name string, offset int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateLogName(name); err != nil {
		return nil, fmt.Errorf("bolt: read log: %w", err)
	}
	var out []byte
	err := s.view("read log", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs).Bucket([]byte(name))
		if b == nil {
			return fmt.Errorf("log %q: %w", name, store.ErrNotFound)
		}
		c := b.Cursor()
		lastKey, lastVal := c.Last()
		var size int64
		if lastKey != nil {
			size = chunkOffset(lastKey) + int64(len(lastVal))
		}
		if offset < 0 || offset > size {
			return fmt.Errorf("log %q: offset %d is outside the log (size %d)", name, offset, size)
		}
		out = make([]byte, 0, size-offset)
		if offset == size {
			return nil
		}
		k, v := c.Seek(be64(offset))
		if k == nil {
			k, v = c.Last()
		} else if chunkOffset(k) > offset {
			k, v = c.Prev() // offset falls inside the previous chunk
		}
		if k == nil {
			return fmt.Errorf("bolt: log %q: no chunk holds offset %d: %w", name, offset, errCorrupt)
		}
		out = append(out, v[offset-chunkOffset(k):]...)
		for k, v = c.Next(); k != nil; k, v = c.Next() {
			out = append(out, v...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteLog removes the named log. Deleting a log that does not exist is not
// an error, so cleanup can be retried safely.
func (s *Store) DeleteLog(ctx context.Context, name string) error {
	if err := validateLogName(name); err != nil {
		return fmt.Errorf("bolt: delete log: %w", err)
	}
	_, err := s.submit(ctx, "delete log", &request{kind: reqDeleteLog, log: name})
	return err
}

func chunkOffset(k []byte) int64 { return int64(binary.BigEndian.Uint64(k)) }

// appendLog runs in the writer's transaction.
func appendLog(logs *bolt.Bucket, name string, data []byte) (int64, error) {
	b, err := logs.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return 0, err
	}
	c := b.Cursor()
	k, v := c.Last()
	if k == nil {
		if len(data) == 0 {
			return 0, nil
		}
		return int64(len(data)), b.Put(be64(0), data)
	}
	size := chunkOffset(k) + int64(len(v))
	if len(data) == 0 {
		return size, nil
	}
	if len(v)+len(data) <= logChunk {
		merged := make([]byte, 0, len(v)+len(data))
		merged = append(append(merged, v...), data...)
		return size + int64(len(data)), b.Put(slices.Clone(k), merged)
	}
	return size + int64(len(data)), b.Put(be64(size), data)
}
