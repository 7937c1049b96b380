package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// Watch from 0 replays the retained history from the first revision;
// FromNow starts after the current one.
func TestClientWatchFromZeroAndFromNow(t *testing.T) {
	e := startServer(t, nil)
	e.mustApply(e.admin, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1"}})
	now := e.rev()
	evs := collect(t, e.admin, 0, nil, now)
	if len(evs) == 0 || evs[0].Revision != 1 {
		t.Fatalf("watch from 0 started at %v, want revision 1", evs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		time.Sleep(300 * time.Millisecond)
		e.mustApply(e.admin, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p2"}})
	}()
	var first api.Event
	_, err := e.admin.Watch(ctx, api.FromNow, nil, func(ev api.Event) error {
		first = ev
		return errDone
	})
	if !errors.Is(err, errDone) || first.Revision <= now || first.Name != "p2" {
		t.Fatalf("watch from now: first event %+v (current was %d), %v", first, now, err)
	}
}
