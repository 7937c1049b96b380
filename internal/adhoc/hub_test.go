package adhoc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

func exit(n int) *int { return &n }

// collect reads a batch's results until it closes or the limit passes.
func collect(t *testing.T, b *Batch, limit time.Duration) map[string]api.RunLine {
	t.Helper()
	out := map[string]api.RunLine{}
	deadline := time.After(limit)
	for {
		select {
		case l, ok := <-b.Results():
			if !ok {
				return out
			}
			if _, dup := out[l.Node]; dup {
				t.Errorf("two results for %s", l.Node)
			}
			out[l.Node] = l
		case <-deadline:
			t.Fatalf("batch not done after %s; have %d results", limit, len(out))
		}
	}
}

// A waiting poll is woken by a command for its machine, hands it out, and
// the agent's result ends the batch.
func TestWakeDeliverComplete(t *testing.T) {
	h := New(Config{})
	ctx, poll, d := h.Enter(context.Background(), "n1", true)
	if !d.Empty() {
		t.Fatalf("delivery before any command: %+v", d)
	}
	b := h.Start([]string{"n1"}, Spec{Argv: []string{"echo", "hi"}, Timeout: time.Minute}, 0)
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the poll was not woken")
	}
	if !Woken(ctx) {
		t.Fatalf("poll context ended with %v, not ErrWoken", context.Cause(ctx))
	}
	d = poll.Leave(false)
	if len(d.Commands) != 1 || d.Commands[0].Argv[1] != "hi" || d.Commands[0].Timeout != "1m0s" {
		t.Fatalf("delivery: %+v", d)
	}
	if err := h.Complete("n2", d.Commands[0].ID, api.CommandResult{Exit: exit(0)}); !errors.Is(err, ErrNotYours) {
		t.Fatalf("another machine's result: %v", err)
	}
	if err := h.Complete("n1", d.Commands[0].ID, api.CommandResult{Exit: exit(3), Stdout: "hi\n"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Complete("n1", d.Commands[0].ID, api.CommandResult{Exit: exit(0)}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("second result: %v", err)
	}
	res := collect(t, b, time.Second)
	if l := res["n1"]; l.Exit == nil || *l.Exit != 3 || l.Stdout != "hi\n" || l.Error != "" {
		t.Fatalf("result: %+v", l)
	}
	if s := h.Stats(); s.Queued != 0 || s.Running != 0 {
		t.Fatalf("left behind: %+v", s)
	}
}

// A command that arrives between two polls is handed out by the next poll
// at once, without waiting.
func TestCommandWaitsForNextPoll(t *testing.T) {
	h := New(Config{})
	_, poll, _ := h.Enter(context.Background(), "n1", true)
	poll.Leave(false)
	b := h.Start([]string{"n1"}, Spec{Argv: []string{"true"}, Timeout: time.Minute}, 0)
	_, poll, d := h.Enter(context.Background(), "n1", true)
	if len(d.Commands) != 1 {
		t.Fatalf("the next poll did not get the command at once: %+v", d)
	}
	poll.Leave(false)
	if err := h.Complete("n1", d.Commands[0].ID, api.CommandResult{Exit: exit(0)}); err != nil {
		t.Fatal(err)
	}
	if res := collect(t, b, time.Second); !res["n1"].OK() {
		t.Fatalf("result: %+v", res)
	}
}

// Machines that never polled, whose poll was cut, or whose agent does not
// run commands get their result at once.
func TestUnreachableAtOnce(t *testing.T) {
	h := New(Config{})
	_, p, _ := h.Enter(context.Background(), "cut", true)
	p.Leave(true)
	_, p, _ = h.Enter(context.Background(), "old", false)
	defer p.Leave(false)
	start := time.Now()
	b := h.Start([]string{"never", "cut", "old"}, Spec{Argv: []string{"true"}, Timeout: time.Minute}, 0)
	res := collect(t, b, time.Second)
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("took %s", time.Since(start))
	}
	if res["never"].Error != api.ErrUnreachable || res["cut"].Error != api.ErrUnreachable {
		t.Errorf("never/cut: %+v %+v", res["never"], res["cut"])
	}
	if res["old"].Error != api.ErrFailed {
		t.Errorf("old agent: %+v", res["old"])
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, kept := h.machines["cut"]; kept {
		t.Error("a machine whose agent left with nothing pending is still in the table")
	}
}

// Fanout bounds the commands in flight: the next node starts when one
// ends.
func TestFanout(t *testing.T) {
	h := New(Config{})
	var polls []*Poll
	for _, n := range []string{"n1", "n2", "n3"} {
		_, p, _ := h.Enter(context.Background(), n, true)
		polls = append(polls, p)
	}
	b := h.Start([]string{"n1", "n2", "n3"}, Spec{Argv: []string{"true"}, Timeout: time.Minute}, 2)
	var got []api.AgentCommand
	for _, p := range polls {
		got = append(got, p.Leave(false).Commands...)
	}
	if len(got) != 2 {
		t.Fatalf("%d commands out with fanout 2", len(got))
	}
	if err := h.Complete("n1", got[0].ID, api.CommandResult{Exit: exit(0)}); err != nil {
		t.Fatal(err)
	}
	_, p, d := h.Enter(context.Background(), "n3", true)
	p.Leave(false)
	if len(d.Commands) != 1 {
		t.Fatalf("n3 did not start after n1 ended: %+v", d)
	}
	for _, c := range []struct{ n, id string }{{"n2", got[1].ID}, {"n3", d.Commands[0].ID}} {
		if err := h.Complete(c.n, c.id, api.CommandResult{Exit: exit(0)}); err != nil {
			t.Fatal(err)
		}
	}
	if res := collect(t, b, time.Second); len(res) != 3 {
		t.Fatalf("results: %v", res)
	}
}

// A command no poll takes is reported unreachable after Pickup; one taken
// but never answered is reported lost after its timeout plus Grace.
func TestPickupAndResultDeadlines(t *testing.T) {
	h := New(Config{Pickup: 100 * time.Millisecond, Grace: 100 * time.Millisecond})
	_, p, _ := h.Enter(context.Background(), "idle", true)
	p.Leave(false) // answered just now: counts as connected
	_, p, _ = h.Enter(context.Background(), "silent", true)
	b := h.Start([]string{"idle", "silent"}, Spec{Argv: []string{"sleep", "1"}, Timeout: 200 * time.Millisecond}, 0)
	d := p.Leave(false)
	if len(d.Commands) != 1 {
		t.Fatalf("silent's delivery: %+v", d)
	}
	res := collect(t, b, 3*time.Second)
	if l := res["idle"]; l.Error != api.ErrUnreachable {
		t.Errorf("idle: %+v", l)
	}
	if l := res["silent"]; l.Error != api.ErrAgentGone || l.Millis < 250 {
		t.Errorf("silent: %+v", l)
	}
}

// An agent whose poll is cut while it runs a command, and that does not
// come back, has the command reported lost after Gone; one that comes
// back in time keeps it.
func TestAgentGone(t *testing.T) {
	h := New(Config{Gone: 100 * time.Millisecond})
	_, p1, _ := h.Enter(context.Background(), "dies", true)
	_, p2, _ := h.Enter(context.Background(), "blinks", true)
	b := h.Start([]string{"dies", "blinks"}, Spec{Argv: []string{"true"}, Timeout: time.Minute}, 0)
	d1, d2 := p1.Leave(false), p2.Leave(false)
	_, p1, _ = h.Enter(context.Background(), "dies", true)
	p1.Leave(true)
	_, p2, _ = h.Enter(context.Background(), "blinks", true)
	p2.Leave(true)
	_, p2, _ = h.Enter(context.Background(), "blinks", true)
	defer p2.Leave(false)
	time.Sleep(300 * time.Millisecond)
	if err := h.Complete("blinks", d2.Commands[0].ID, api.CommandResult{Exit: exit(0)}); err != nil {
		t.Fatalf("blinks came back but its command was dropped: %v", err)
	}
	res := collect(t, b, 2*time.Second)
	if l := res["dies"]; l.Error != api.ErrAgentGone {
		t.Errorf("dies: %+v", l)
	}
	if !res["blinks"].OK() {
		t.Errorf("blinks: %+v", res["blinks"])
	}
	_ = d1
}

// Cancelling withdraws what was not handed out and tells agents to kill
// what they run.
func TestCancel(t *testing.T) {
	h := New(Config{})
	_, p1, _ := h.Enter(context.Background(), "n1", true)
	_, p2, _ := h.Enter(context.Background(), "n2", true)
	b := h.Start([]string{"n1", "n2"}, Spec{Argv: []string{"sleep", "60"}, Timeout: time.Minute}, 0)
	d1 := p1.Leave(false)
	b.Cancel()
	if _, ok := <-b.Results(); ok {
		t.Fatal("a result after cancel")
	}
	if d := p2.Leave(false); len(d.Commands) != 0 {
		t.Fatalf("n2 got a cancelled command: %+v", d)
	}
	ctx, p1, d := h.Enter(context.Background(), "n1", true)
	p1.Leave(false)
	if len(d.Cancel) != 1 || d.Cancel[0] != d1.Commands[0].ID {
		t.Fatalf("n1 was not told to cancel: %+v (ctx %v)", d, ctx.Err())
	}
	if err := h.Complete("n1", d1.Commands[0].ID, api.CommandResult{Exit: exit(0)}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("result of a cancelled command: %v", err)
	}
	if s := h.Stats(); s.Queued != 0 || s.Running != 0 {
		t.Fatalf("left behind: %+v", s)
	}
}

// Many agents polling in a loop, as real ones do, all get their command
// and answer; run under -race.
func TestManyAgents(t *testing.T) {
	h := New(Config{})
	const n = 500
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%03d", i)
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			for ctx.Err() == nil {
				pctx, p, d := h.Enter(ctx, name, true)
				if d.Empty() {
					select {
					case <-pctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
				}
				d2 := p.Leave(ctx.Err() != nil)
				for _, c := range append(d.Commands, d2.Commands...) {
					go func() {
						_ = h.Complete(name, c.ID, api.CommandResult{Exit: exit(0), Stdout: name})
					}()
				}
			}
		}(names[i])
	}
	time.Sleep(100 * time.Millisecond)
	for round := 0; round < 3; round++ {
		b := h.Start(names, Spec{Argv: []string{"true"}, Timeout: time.Minute}, 100)
		res := collect(t, b, 10*time.Second)
		var bad []string
		for _, name := range names {
			if l := res[name]; !l.OK() || l.Stdout != name {
				bad = append(bad, name+": "+fmt.Sprint(l))
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Fatalf("round %d: %d bad results, first %s", round, len(bad), bad[0])
		}
	}
	stop()
	wg.Wait()
}
