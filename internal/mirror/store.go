package mirror

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// The mirror file holds, per site:
//
//	meta/cursor    every change of the site up to this revision is applied
//	meta/listed    1 once the site was listed (first contact)
//	meta/relists   how many times the site was listed
//	objects/KIND/NAME   8-byte big-endian revision, then the object's JSON
//	                    as the site presented it
var (
	bucketMeta    = []byte("meta")
	bucketObjects = []byte("objects")
	keyCursor     = []byte("cursor")
	keyListed     = []byte("listed")
	keyRelists    = []byte("relists")
)

// db is one site's mirror file.
type db struct {
	b *bbolt.DB
}

func openDB(path string) (*db, error) {
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("mirror %s: file is locked (is another drover server using this data dir?)", path)
		}
		return nil, fmt.Errorf("mirror %s: %w", path, err)
	}
	err = b.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketMeta); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketObjects)
		return err
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("mirror %s: %w", path, err)
	}
	return &db{b: b}, nil
}

func (d *db) close() error { return d.b.Close() }

// meta is what the file says about the mirror as a whole.
type meta struct {
	cursor  int64
	listed  bool
	relists int64
	objects int
}

func (d *db) readMeta() (meta, error) {
	var m meta
	err := d.b.View(func(tx *bbolt.Tx) error {
		mb := tx.Bucket(bucketMeta)
		m.cursor = getInt(mb, keyCursor)
		m.listed = getInt(mb, keyListed) == 1
		m.relists = getInt(mb, keyRelists)
		return tx.Bucket(bucketObjects).ForEachBucket(func(k []byte) error {
			m.objects += tx.Bucket(bucketObjects).Bucket(k).Stats().KeyN
			return nil
		})
	})
	return m, err
}

func getInt(b *bbolt.Bucket, key []byte) int64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

func putInt(b *bbolt.Bucket, key []byte, v int64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(v))
	return b.Put(key, buf[:])
}

// event is one change from the site's stream, as applied to the mirror.
type event struct {
	Type     string          `json:"type"`
	Revision int64           `json:"revision"`
	Kind     string          `json:"kind"`
	Name     string          `json:"name"`
	Object   json.RawMessage `json:"object,omitempty"`
}

// applyBatch applies events in one transaction and moves the cursor to
// cursor (when later than the stored one). An event is applied only if it
// is newer than what the mirror holds of its object, so events seen twice
// (a resume from a cursor in the middle of a transaction) change nothing.
// It returns the change in the number of objects held.
func (d *db) applyBatch(evs []event, mirrored func(kind string) bool, cursor int64) (int, error) {
	delta := 0
	err := d.b.Update(func(tx *bbolt.Tx) error {
		delta = 0
		objs := tx.Bucket(bucketObjects)
		for _, ev := range evs {
			if !mirrored(ev.Kind) {
				continue
			}
			kb, err := objs.CreateBucketIfNotExists([]byte(ev.Kind))
			if err != nil {
				return err
			}
			key := []byte(ev.Name)
			old := kb.Get(key)
			if len(old) >= 8 && int64(binary.BigEndian.Uint64(old)) >= ev.Revision {
				continue
			}
			switch ev.Type {
			case "put":
				if len(ev.Object) == 0 {
					continue
				}
				if err := kb.Put(key, encodeValue(ev.Revision, ev.Object)); err != nil {
					return err
				}
				if old == nil {
					delta++
				}
			case "delete":
				if old == nil {
					continue
				}
				if err := kb.Delete(key); err != nil {
					return err
				}
				delta--
			}
		}
		mb := tx.Bucket(bucketMeta)
		if cursor > getInt(mb, keyCursor) {
			return putInt(mb, keyCursor, cursor)
		}
		return nil
	})
	return delta, err
}

func encodeValue(rev int64, obj []byte) []byte {
	v := make([]byte, 8+len(obj))
	binary.BigEndian.PutUint64(v, uint64(rev))
	copy(v[8:], obj)
	return v
}

// listed is one kind's objects as a list call returned them.
type listed struct {
	kind  string
	items []listedItem
}

type listedItem struct {
	name     string
	revision int64
	data     []byte
}

// replace makes the mirror hold exactly the listed objects, with the
// cursor at cursor (the lowest revision of the lists: replaying the events
// after it brings every kind to the same point), and counts a re-list.
func (d *db) replace(kinds []listed, cursor int64) (int, error) {
	n := 0
	err := d.b.Update(func(tx *bbolt.Tx) error {
		n = 0
		if err := tx.DeleteBucket(bucketObjects); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
			return err
		}
		objs, err := tx.CreateBucket(bucketObjects)
		if err != nil {
			return err
		}
		for _, l := range kinds {
			kb, err := objs.CreateBucketIfNotExists([]byte(l.kind))
			if err != nil {
				return err
			}
			for _, it := range l.items {
				if err := kb.Put([]byte(it.name), encodeValue(it.revision, it.data)); err != nil {
					return err
				}
				n++
			}
		}
		mb := tx.Bucket(bucketMeta)
		if err := putInt(mb, keyCursor, cursor); err != nil {
			return err
		}
		if err := putInt(mb, keyListed, 1); err != nil {
			return err
		}
		return putInt(mb, keyRelists, getInt(mb, keyRelists)+1)
	})
	return n, err
}

// Object is one mirrored object: its name, revision on the site, and JSON
// as the site presented it.
type Object struct {
	Name     string
	Revision int64
	JSON     []byte
}

// list returns the mirrored objects of kind, sorted by name (bytewise).
func (d *db) list(kind string) ([]Object, error) {
	var out []Object
	err := d.b.View(func(tx *bbolt.Tx) error {
		kb := tx.Bucket(bucketObjects).Bucket([]byte(kind))
		if kb == nil {
			return nil
		}
		return kb.ForEach(func(k, v []byte) error {
			if len(v) < 8 {
				return nil
			}
			out = append(out, Object{Name: string(k), Revision: int64(binary.BigEndian.Uint64(v)), JSON: append([]byte(nil), v[8:]...)})
			return nil
		})
	})
	return out, err
}

// get returns one mirrored object.
func (d *db) get(kind, name string) (Object, bool, error) {
	var o Object
	found := false
	err := d.b.View(func(tx *bbolt.Tx) error {
		kb := tx.Bucket(bucketObjects).Bucket([]byte(kind))
		if kb == nil {
			return nil
		}
		v := kb.Get([]byte(name))
		if len(v) < 8 {
			return nil
		}
		found = true
		o = Object{Name: name, Revision: int64(binary.BigEndian.Uint64(v)), JSON: append([]byte(nil), v[8:]...)}
		return nil
	})
	return o, found, err
}
