package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/klauspost/compress/zstd"
	"maps"
	"slices"

	"github.com/drover-project/drover/internal/store"
)

// On-disk formats. Both start with a format byte so a later layout can be
// introduced without a migration of everything at once.
//
// Record value (objects bucket, key kind\x00name):
//
//	[0]     recordFormat
//	[1:9]   revision, big-endian
//	[9:17]  create revision, big-endian
//	uvarint label count, then per label (sorted by key):
//	        uvarint len, key, uvarint len, value
//	rest    data, as given
//
// The revisions have a fixed width so a value can be encoded by the caller's
// goroutine and only patched by the single writer, which keeps work off the
// writer's critical path. Data comes last so reading it is a sub-slice, not a
// decode.
//
// History value (events bucket, key = revision big-endian):
//
//	[0]     eventsFormat
//	uvarint event count, then per event:
//	        type byte (1 put, 2 delete), uvarint len, kind\x00name,
//	        uvarint len, record value (revision = the event's revision)
//
// or, for values worth it, [0] eventsZstd and the zstd frame of the above
// (the format byte included). History is written once and read only when a
// watcher replays, while it is most of the file (and of the page cache the
// memory map holds): JSON records shrink to a third or less.
const (
	recordFormat = 1
	eventsFormat = 1
	eventsZstd   = 2
	// compressAbove is the size from which a history value is compressed;
	// below it zstd's frame overhead eats the gain.
	compressAbove = 192
	recordHeader  = 17

	eventPut    = 1
	eventDelete = 2
)

var errCorrupt = errors.New("corrupt record")

func objectKey(kind, name string) []byte {
	k := make([]byte, 0, len(kind)+1+len(name))
	k = append(k, kind...)
	k = append(k, 0)
	return append(k, name...)
}

func kindPrefix(kind string) []byte {
	return append([]byte(kind), 0)
}

// encodeRecord builds a record value with zero revisions; the writer fills
// them in with setRevisions.
func encodeRecord(labels map[string]string, data []byte) []byte {
	size := recordHeader + binary.MaxVarintLen64 + len(data)
	for k, v := range labels {
		size += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	b := make([]byte, recordHeader, size)
	b[0] = recordFormat
	b = binary.AppendUvarint(b, uint64(len(labels)))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(labels[k])))
		b = append(b, labels[k]...)
	}
	return append(b, data...)
}

func setRevisions(v []byte, rev, createRev int64) {
	binary.BigEndian.PutUint64(v[1:9], uint64(rev))
	binary.BigEndian.PutUint64(v[9:17], uint64(createRev))
}

// revisions reads only the fixed header, which is all a precondition check needs.
func revisions(v []byte) (rev, createRev int64, err error) {
	if len(v) < recordHeader || v[0] != recordFormat {
		return 0, 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(v[1:9])), int64(binary.BigEndian.Uint64(v[9:17])), nil
}

// decoder turns stored bytes into Records that own their memory (bbolt's
// slices die with the transaction). For many records (batch) it interns
// label strings, since most records share a few keys and values.
//
// Data is copied per record on purpose: carving it out of shared slabs
// measured no faster for List and would let one record kept in a cache pin
// the memory of its neighbours.
type decoder struct {
	batch bool
	// alias makes records point into the decoded bytes instead of copying;
	// only for bytes the caller owns and will not change.
	alias  bool
	intern map[string]string
}

func (d *decoder) bytes(b []byte) []byte {
	switch {
	case len(b) == 0:
		return nil
	case d.alias:
		return b[:len(b):len(b)]
	}
	return slices.Clone(b)
}

func (d *decoder) str(b []byte) string {
	if !d.batch {
		return string(b)
	}
	if s, ok := d.intern[string(b)]; ok { // no allocation for the lookup
		return s
	}
	if d.intern == nil {
		d.intern = make(map[string]string)
	}
	s := string(b)
	d.intern[s] = s
	return s
}

func uvarint(v []byte) (uint64, []byte, error) {
	n, w := binary.Uvarint(v)
	if w <= 0 {
		return 0, nil, errCorrupt
	}
	return n, v[w:], nil
}

func lenPrefixed(v []byte) ([]byte, []byte, error) {
	n, rest, err := uvarint(v)
	if err != nil || n > uint64(len(rest)) {
		return nil, nil, errCorrupt
	}
	return rest[:n], rest[n:], nil
}

// labelsAndData splits a record value after its header. visit is called per
// label with slices into v; first is called with the label count before that.
func labelsAndData(v []byte, first func(n int), visit func(k, val []byte)) (data []byte, err error) {
	n, rest, err := uvarint(v[recordHeader:])
	if err != nil || n > uint64(len(rest)) {
		return nil, errCorrupt
	}
	if first != nil {
		first(int(n))
	}
	for range n {
		var k, val []byte
		if k, rest, err = lenPrefixed(rest); err != nil {
			return nil, err
		}
		if val, rest, err = lenPrefixed(rest); err != nil {
			return nil, err
		}
		if visit != nil {
			visit(k, val)
		}
	}
	return rest, nil
}

// decodeRecord decodes v into rec (Kind and Name are set by the caller).
// If sel is non-nil and the labels do not match, it returns false and rec is
// left partly filled.
func (d *decoder) decodeRecord(v []byte, rec *store.Record, sel store.Selector, scratch map[string]string) (bool, error) {
	rev, createRev, err := revisions(v)
	if err != nil {
		return false, err
	}
	rec.Revision, rec.CreateRevision = rev, createRev
	if sel != nil {
		// Match against a reused map first so records that are filtered
		// out cost no allocation.
		clear(scratch)
		if _, err := labelsAndData(v, nil, func(k, val []byte) { scratch[d.str(k)] = d.str(val) }); err != nil {
			return false, err
		}
		if !sel.Matches(scratch) {
			return false, nil
		}
	}
	var labels map[string]string
	data, err := labelsAndData(v,
		func(n int) {
			if n > 0 {
				labels = make(map[string]string, n)
			}
		},
		func(k, val []byte) { labels[d.str(k)] = d.str(val) })
	if err != nil {
		return false, err
	}
	rec.Labels = labels
	rec.Data = d.bytes(data)
	return true, nil
}

func splitObjectKey(k []byte) (kind, name []byte, err error) {
	for i, c := range k {
		if c == 0 {
			return k[:i], k[i+1:], nil
		}
	}
	return nil, nil, errCorrupt
}

// eventEntry is one event as the writer encodes it into a history value.
type eventEntry struct {
	typ   byte
	key   []byte
	value []byte
}

func encodeEvents(entries []eventEntry) []byte {
	size := 1 + binary.MaxVarintLen64
	for _, e := range entries {
		size += 1 + 2*binary.MaxVarintLen64 + len(e.key) + len(e.value)
	}
	b := make([]byte, 0, size)
	b = append(b, eventsFormat)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = append(b, e.typ)
		b = binary.AppendUvarint(b, uint64(len(e.key)))
		b = append(b, e.key...)
		b = binary.AppendUvarint(b, uint64(len(e.value)))
		b = append(b, e.value...)
	}
	if len(b) < compressAbove {
		return b
	}
	z := zstdEncoder.EncodeAll(b, make([]byte, 1, 1+len(b)/2))
	z[0] = eventsZstd
	if len(z) >= len(b) {
		return b
	}
	return z
}

var (
	zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(256<<20))
)

func (d *decoder) decodeEvents(rev int64, v []byte, out []store.Event) ([]store.Event, error) {
	if len(v) > 1 && v[0] == eventsZstd {
		plain, err := zstdDecoder.DecodeAll(v[1:], nil)
		if err != nil {
			return out, fmt.Errorf("history of revision %d: %w: %v", rev, errCorrupt, err)
		}
		// The plain bytes are ours: records may point into them.
		dd := *d
		dd.alias = true
		return dd.decodeEvents(rev, plain, out)
	}
	if len(v) < 1 || v[0] != eventsFormat {
		return out, fmt.Errorf("history of revision %d: %w", rev, errCorrupt)
	}
	n, rest, err := uvarint(v[1:])
	if err != nil || n > uint64(len(rest)) {
		return out, fmt.Errorf("history of revision %d: %w", rev, errCorrupt)
	}
	for range n {
		if len(rest) < 1 {
			return out, fmt.Errorf("history of revision %d: %w", rev, errCorrupt)
		}
		typ := rest[0]
		var key, val []byte
		if key, rest, err = lenPrefixed(rest[1:]); err != nil {
			return out, fmt.Errorf("history of revision %d: %w", rev, err)
		}
		if val, rest, err = lenPrefixed(rest); err != nil {
			return out, fmt.Errorf("history of revision %d: %w", rev, err)
		}
		kind, name, err := splitObjectKey(key)
		if err != nil {
			return out, fmt.Errorf("history of revision %d: %w", rev, err)
		}
		ev := store.Event{Revision: rev, Record: store.Record{Kind: d.str(kind), Name: string(name)}}
		switch typ {
		case eventPut:
			ev.Type = store.EventPut
		case eventDelete:
			ev.Type = store.EventDelete
		default:
			return out, fmt.Errorf("history of revision %d: event type %d: %w", rev, typ, errCorrupt)
		}
		if _, err := d.decodeRecord(val, &ev.Record, nil, nil); err != nil {
			return out, fmt.Errorf("history of revision %d: %w", rev, err)
		}
		out = append(out, ev)
	}
	if n > 0 {
		out[len(out)-1].Last = true
	}
	return out, nil
}
