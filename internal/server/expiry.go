package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// expiry deletes login sessions and join tokens a while after they expire
// (ExpiredTokenGrace: until then, using one is answered "token expired: log
// in again" rather than a bare "unauthorized"). Every
// `drover login`, and every command run with DROVER_USERNAME and
// DROVER_PASSWORD, stores a session; without this they piled up in the
// store for ever. It follows the kind from the event stream (a store
// Follower) and sleeps until the next expiry: no polling. Agent
// credentials do not expire and are never touched.
type expiry struct {
	kind     string
	grace    time.Duration
	st       store.Store
	log      *slog.Logger
	follower *store.Follower
	// expiresAt reads the expiry of a record (zero: never).
	expiresAt func(store.Record) (time.Time, error)

	// Guarded by the follower's lock.
	due map[string]due
	// changed wakes the loop when due changes.
	changed chan struct{}
}

type due struct {
	at  time.Time
	rev int64 // the record's revision: a renewed record is not deleted
}

func newExpiry(kind string, grace time.Duration, st store.Store, log *slog.Logger, expiresAt func(store.Record) (time.Time, error)) *expiry {
	x := &expiry{kind: kind, grace: grace, st: st, log: log, expiresAt: expiresAt, changed: make(chan struct{}, 1)}
	x.follower = store.NewFollower(st, kind, "expiry of "+kind, log, x.reset, x.apply)
	return x
}

func tokenExpiry(rec store.Record) (time.Time, error) {
	var t api.Token
	if err := model.Decode(rec, &t); err != nil || t.ExpiresAt == nil {
		return time.Time{}, err
	}
	return *t.ExpiresAt, nil
}

func joinTokenExpiry(rec store.Record) (time.Time, error) {
	var t api.JoinToken
	err := model.Decode(rec, &t)
	return t.ExpiresAt, err
}

func (x *expiry) reset(recs []store.Record) error {
	m := make(map[string]due, len(recs))
	for _, rec := range recs {
		at, err := x.expiresAt(rec)
		if err != nil {
			x.log.Warn("cannot read an expiry; the object is kept", "kind", x.kind, "name", rec.Name, "err", err)
			continue
		}
		if !at.IsZero() {
			m[rec.Name] = due{at: at.Add(x.grace), rev: rec.Revision}
		}
	}
	x.due = m
	x.wake()
	return nil
}

func (x *expiry) apply(ev store.Event) (func(), error) {
	name := ev.Record.Name
	var at time.Time
	if ev.Type != store.EventDelete {
		var err error
		if at, err = x.expiresAt(ev.Record); err != nil {
			x.log.Warn("cannot read an expiry; the object is kept", "kind", x.kind, "name", name, "err", err)
		}
	}
	return func() {
		if at.IsZero() {
			delete(x.due, name)
		} else {
			x.due[name] = due{at: at.Add(x.grace), rev: ev.Record.Revision}
		}
		x.wake()
	}, nil
}

func (x *expiry) wake() {
	select {
	case x.changed <- struct{}{}:
	default:
	}
}

// run keeps the view current and deletes what expired, until ctx ends.
func (x *expiry) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		x.follower.Run(ctx)
	}()
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.changed:
		case <-timer.C:
		}
		expired, next := x.scan(ctx, time.Now())
		for name, rev := range expired {
			_, err := store.Delete(ctx, x.st, x.kind, name, rev)
			switch {
			case err == nil:
				x.log.Debug("expired", "kind", x.kind, "name", name)
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
				// Gone or renewed meanwhile: the event stream says which.
			case ctx.Err() != nil:
				return
			default:
				x.log.Warn("cannot delete an expired object", "kind", x.kind, "name", name, "err", err)
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		if len(expired) > 0 {
			// The deletions come back as events; look again then.
			wait = min(wait, time.Second)
		}
		timer.Reset(wait)
	}
}

// scan returns what expired by now (name to revision) and the next expiry
// after now (zero: none).
func (x *expiry) scan(ctx context.Context, now time.Time) (map[string]int64, time.Time) {
	expired := map[string]int64{}
	var next time.Time
	_ = x.follower.Read(ctx, 0, time.Minute, func(int64) {
		for name, d := range x.due {
			switch {
			case !d.at.After(now):
				expired[name] = d.rev
			case next.IsZero() || d.at.Before(next):
				next = d.at
			}
		}
	})
	return expired, next
}
