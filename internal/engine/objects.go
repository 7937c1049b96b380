package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// get reads one typed object.
func get(ctx context.Context, st store.Store, kind, name string, obj api.Object) error {
	rec, err := st.Get(ctx, kind, name)
	if err != nil {
		return err
	}
	return model.Decode(rec, obj)
}

// updateOp makes the op that writes obj back if nobody changed it since it
// was read.
func updateOp(obj api.Object) (store.Op, error) {
	labels, data, err := model.Encode(obj)
	if err != nil {
		return store.Op{}, err
	}
	m := obj.GetMeta()
	return store.Op{Type: store.OpUpdate, Kind: m.Kind, Name: m.Name, Labels: labels, Data: data, ExpectRevision: m.Revision}, nil
}

func createOp(obj api.Object) (store.Op, error) {
	labels, data, err := model.Encode(obj)
	if err != nil {
		return store.Op{}, err
	}
	m := obj.GetMeta()
	return store.Op{Type: store.OpCreate, Kind: m.Kind, Name: m.Name, Labels: labels, Data: data}, nil
}

// errSkip tells mutate that fn decided no write is needed.
var errSkip = errors.New("skip")

// mutate reads an object, applies fn and writes it back, retrying when
// another writer got there first. It returns the revision written (0 if fn
// skipped).
func mutate[T any, P interface {
	*T
	api.Object
}](ctx context.Context, st store.Store, kind, name string, fn func(P) error) (P, int64, error) {
	for attempt := 0; ; attempt++ {
		obj := P(new(T))
		if err := get(ctx, st, kind, name, obj); err != nil {
			return nil, 0, err
		}
		if err := fn(obj); err != nil {
			if errors.Is(err, errSkip) {
				return obj, 0, nil
			}
			return obj, 0, err
		}
		op, err := updateOp(obj)
		if err != nil {
			return nil, 0, err
		}
		_, rev, err := st.Txn(ctx, []store.Op{op})
		if errors.Is(err, store.ErrConflict) && attempt < 50 {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("update %s %q: %w", kind, name, err)
		}
		obj.GetMeta().Revision = rev
		return obj, rev, nil
	}
}
