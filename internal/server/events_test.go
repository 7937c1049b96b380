package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// collect watches from rev with kinds and returns the events up to and
// including the first one at or past until.
func collect(t *testing.T, c *api.Client, from int64, kinds []string, until int64) []api.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var evs []api.Event
	_, err := c.Watch(ctx, from, kinds, func(ev api.Event) error {
		evs = append(evs, ev)
		if ev.Revision >= until {
			return errDone
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		t.Fatalf("watch from %d (kinds %v): %v after %d events", from, kinds, err, len(evs))
	}
	return evs
}

var errDone = errors.New("done")

func profile(name string) *api.Profile {
	return &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: name}}
}

func TestEventsReplayFromAnyRevisionThenFollow(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	var revs []int64
	for i := 0; i < 6; i++ {
		revs = append(revs, e.mustApply(e.admin, profile(fmt.Sprintf("p%d", i))).Revision)
	}
	last := revs[len(revs)-1]
	for i, from := range revs[:len(revs)-1] {
		evs := collect(t, e.admin, from, []string{"Profile"}, last)
		if len(evs) != len(revs)-1-i {
			t.Fatalf("from %d: %d events, want %d", from, len(evs), len(revs)-1-i)
		}
		for j, ev := range evs {
			want := fmt.Sprintf("p%d", i+1+j)
			if ev.Name != want || ev.Revision != revs[i+1+j] || ev.Type != "put" || ev.Kind != api.KindProfile {
				t.Errorf("from %d, event %d: %+v, want put Profile %s at %d", from, j, ev, want, revs[i+1+j])
			}
			var p api.Profile
			if err := json.Unmarshal(ev.Object, &p); err != nil || p.Name != want || p.Revision != ev.Revision {
				t.Errorf("event object %s: %+v %v", ev.Object, p, err)
			}
		}
	}

	// From the last revision: nothing to replay, then live events.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	got := make(chan api.Event, 10)
	errc := make(chan error, 1)
	go func() {
		_, err := e.admin.Watch(wctx, last, nil, func(ev api.Event) error {
			select {
			case got <- ev:
				return nil
			case <-wctx.Done():
				return wctx.Err()
			}
		})
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the watch start; a late start replays, so this only makes "live" likelier
	rev := e.mustApply(e.admin, profile("live")).Revision
	var sawLive bool
	for !sawLive {
		select {
		case ev := <-got:
			if ev.Revision <= last {
				t.Fatalf("replayed an event at %d, from %d", ev.Revision, last)
			}
			sawLive = ev.Kind == api.KindProfile && ev.Name == "live" && ev.Revision == rev
		case err := <-errc:
			t.Fatalf("watch ended: %v", err)
		case <-wctx.Done():
			t.Fatal("no live event")
		}
	}
	if err := e.admin.Delete(ctx, "profiles", "live"); err != nil {
		t.Fatal(err)
	}
	for {
		var ev api.Event
		select {
		case ev = <-got:
		case <-wctx.Done():
			t.Fatal("no delete event")
		}
		if ev.Kind == api.KindProfile && ev.Name == "live" {
			if ev.Type != "delete" || ev.Object != nil {
				t.Errorf("delete event: %+v", ev)
			}
			break
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("watch ended with %v", err)
	}
}

func TestEventsKindsFilter(t *testing.T) {
	e := startServer(t, nil)
	start := e.rev()
	e.mustApply(e.admin, profile("p1"), &api.Template{Meta: api.Meta{Kind: api.KindTemplate, Name: "t1"}, Content: "x"})
	e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}})
	end := e.mustApply(e.admin, profile("p2")).Revision

	evs := collect(t, e.admin, start, []string{"profiles", "Machine"}, end)
	var names []string
	for _, ev := range evs {
		if ev.Kind != api.KindProfile && ev.Kind != api.KindMachine {
			t.Errorf("filtered stream has a %s event", ev.Kind)
		}
		names = append(names, ev.Kind+"/"+ev.Name)
	}
	want := []string{"Profile/p1", "Machine/n1", "Profile/p2"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("events %v, want %v", names, want)
	}
	// Without a filter the template and the audit entries come too.
	all := collect(t, e.admin, start, nil, end)
	kinds := map[string]bool{}
	for _, ev := range all {
		kinds[ev.Kind] = true
	}
	for _, k := range []string{api.KindProfile, api.KindTemplate, api.KindMachine, api.KindAudit} {
		if !kinds[k] {
			t.Errorf("unfiltered stream has no %s event", k)
		}
	}
}

func TestEventsCompacted(t *testing.T) {
	e := startServer(t, func(c *Config) { c.RetainEvents = 5 })
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		e.mustApply(e.admin, profile(fmt.Sprintf("p%d", i)))
	}
	_, err := e.admin.Watch(ctx, 1, nil, func(api.Event) error { return nil })
	ae := apiErr(t, err, 410)
	if ae.Code != "compacted" {
		t.Errorf("code %q, want compacted: %s", ae.Code, ae.Message)
	}
	oldest, err := e.srv.Store().OldestRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The oldest retained revision still works.
	end := e.rev()
	evs := collect(t, e.admin, oldest-1, nil, end)
	if len(evs) == 0 || evs[0].Revision != oldest {
		t.Errorf("from %d: first event %+v, want revision %d", oldest-1, evs, oldest)
	}
	// A list, then a watch from the list's revision, is how to recover.
	l, err := e.admin.List(ctx, "profiles", "")
	if err != nil {
		t.Fatal(err)
	}
	rev := e.mustApply(e.admin, profile("after")).Revision
	evs = collect(t, e.admin, l.Revision, []string{"Profile"}, rev)
	if len(evs) != 1 || evs[0].Name != "after" {
		t.Errorf("after re-list: %+v", evs)
	}
}

func TestEventsHideUsersAndTokensFromViewers(t *testing.T) {
	e := startServer(t, nil)
	viewer := e.user("viewy", api.RoleViewer)
	start := e.rev()
	e.user("bob", api.RoleOperator) // a User and a Token (its login)
	e.agent("m1")                   // a JoinToken, a Machine, a Token
	end := e.mustApply(e.admin, profile("sentinel")).Revision

	count := func(evs []api.Event) map[string]int {
		n := map[string]int{}
		for _, ev := range evs {
			n[ev.Kind]++
		}
		return n
	}
	adminSaw := count(collect(t, e.admin, start, nil, end))
	if adminSaw[api.KindUser] == 0 || adminSaw[api.KindToken] < 2 {
		t.Fatalf("the admin saw no user or token events (%v): the test tests nothing", adminSaw)
	}
	viewerSaw := count(collect(t, viewer, start, nil, end))
	if viewerSaw[api.KindUser] != 0 || viewerSaw[api.KindToken] != 0 {
		t.Errorf("a viewer saw %d user and %d token events", viewerSaw[api.KindUser], viewerSaw[api.KindToken])
	}
	if viewerSaw[api.KindMachine] == 0 || viewerSaw[api.KindProfile] != 1 {
		t.Errorf("a viewer's stream lacks what it may see: %v", viewerSaw)
	}
	// Asking for them explicitly is no way around it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := viewer.Watch(ctx, start, []string{"User"}, func(ev api.Event) error {
		return fmt.Errorf("viewer got %+v", ev)
	})
	if err == nil || !api.IsStatus(err, 403) {
		t.Errorf("viewer watching users: %v, want 403", err)
	}
}

// An open event stream ends when its session does: the user disabled,
// deleted or demoted, the token deleted or expired.
func TestEventStreamEndsWithItsSession(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	cases := []struct {
		name string
		end  func(c *api.Client)
	}{
		{"user disabled", func(c *api.Client) {
			e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "wud"}, Role: api.RoleViewer, Disabled: true})
		}},
		{"user deleted", func(c *api.Client) {
			if err := e.admin.Delete(ctx, "users", "wud2"); err != nil {
				t.Fatal(err)
			}
		}},
		{"token deleted", func(c *api.Client) {
			if err := e.admin.Delete(ctx, "tokens", tokenID(c.Token)); err != nil {
				t.Fatal(err)
			}
		}},
		{"token expired", nil},
	}
	names := []string{"wud", "wud2", "wud3", "wud4"}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cl *api.Client
			if c.end == nil {
				e.user(names[i], api.RoleViewer)
				lr, err := e.client("").Login(ctx, names[i], "pw-"+names[i]+"-12345", "1s")
				if err != nil {
					t.Fatal(err)
				}
				cl = e.client(lr.Token)
			} else {
				cl = e.user(names[i], api.RoleViewer)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			started := make(chan struct{})
			go func() {
				_, err := cl.Watch(wctx, e.rev(), nil, func(ev api.Event) error {
					if ev.Kind == api.KindProfile && ev.Name == "start-"+names[i] {
						close(started)
					}
					return nil
				})
				errc <- err
			}()
			e.mustApply(e.admin, profile("start-"+names[i]))
			select {
			case <-started:
			case err := <-errc:
				t.Fatalf("watch ended early: %v", err)
			}
			if c.end != nil {
				c.end(cl)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, api.ErrResume) {
					t.Errorf("watch ended with %v, want the server to end it", err)
				}
			case <-wctx.Done():
				t.Fatal("the event stream outlived its session")
			}
			// Resuming is refused.
			_, err := cl.Watch(ctx, 1, nil, func(api.Event) error { return nil })
			apiErr(t, err, 401)
		})
	}
}

// A role change applies to an open stream at once: a demoted admin stops
// seeing users and tokens.
func TestEventStreamFollowsRoleChange(t *testing.T) {
	e := startServer(t, nil)
	boss := e.user("boss", api.RoleAdmin)
	start := e.rev()
	type result struct {
		evs []api.Event
		err error
	}
	done := make(chan result, 1)
	ready := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var evs []api.Event
		_, err := boss.Watch(ctx, start, nil, func(ev api.Event) error {
			evs = append(evs, ev)
			switch {
			case ev.Kind == api.KindProfile && ev.Name == "ready":
				close(ready)
			case ev.Kind == api.KindProfile && ev.Name == "sentinel":
				return errDone
			}
			return nil
		})
		done <- result{evs, err}
	}()
	e.mustApply(e.admin, profile("ready"))
	<-ready
	e.user("before", api.RoleViewer)
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "boss"}, Role: api.RoleViewer})
	e.user("newbie", api.RoleViewer)
	e.mustApply(e.admin, profile("sentinel"))
	res := <-done
	if !errors.Is(res.err, errDone) {
		t.Fatalf("watch: %v", res.err)
	}
	sawBefore := false
	for _, ev := range res.evs {
		if ev.Kind == api.KindUser && ev.Name == "before" {
			sawBefore = true
		}
		if ev.Kind == api.KindUser && ev.Name == "newbie" {
			t.Errorf("a demoted admin saw %s %s", ev.Kind, ev.Name)
		}
	}
	if !sawBefore {
		t.Error("the admin did not see users before the demotion: the test tests nothing")
	}
}

// Browsers resume an event stream with Last-Event-ID.
func TestEventsLastEventID(t *testing.T) {
	e := startServer(t, nil)
	r1 := e.mustApply(e.admin, profile("a")).Revision
	e.mustApply(e.admin, profile("b"))
	get := func(id string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/api/v1/events?kinds=Profile", nil)
		req.Header.Set("Authorization", "Bearer "+e.admin.Token)
		req.Header.Set("Last-Event-ID", id)
		resp, err := e.admin.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				return 200, sc.Text()
			}
		}
		return 200, ""
	}
	if status, body := get(strconv.FormatInt(r1, 10)); status != 200 || !strings.Contains(body, `"name":"b"`) {
		t.Errorf("resume after %d: %d %s", r1, status, body)
	}
	if status, body := get("abc"); status != 400 || !strings.Contains(body, "Last-Event-ID") {
		t.Errorf("bad Last-Event-ID: %d %s", status, body)
	}
}
