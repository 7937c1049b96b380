package server

import (
	"context"
	"testing"
	"time"
)

// While a person's request is in flight, agents' requests wait for it to
// end, and never longer than agentMaxWait.
func TestAgentsWaitForPeople(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	ag := e.agent("n1")
	heartbeat := func() chan error {
		done := make(chan error, 1)
		go func() { done <- ag.Do(ctx, "POST", "/api/v1/agent/heartbeat", nil, nil) }()
		return done
	}
	if err := <-heartbeat(); err != nil {
		t.Fatal(err)
	}
	if held := e.srv.metrics.agentsHeld.Load(); held != 0 {
		t.Fatalf("%d agent requests held with nobody's request in flight", held)
	}

	// A person's request in flight (as a list being written is).
	e.srv.gate.enter()
	done := heartbeat()
	select {
	case err := <-done:
		t.Fatalf("the heartbeat went ahead of a person's request in flight (%v)", err)
	case <-time.After(agentMaxWait / 2):
	}
	e.srv.gate.leave()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the heartbeat did not go on once the person's request ended")
	}
	if held := e.srv.metrics.agentsHeld.Load(); held != 1 {
		t.Fatalf("agent requests held: %d, want 1", held)
	}

	// A request that never ends holds agents back agentMaxWait at most.
	e.srv.gate.enter()
	defer e.srv.gate.leave()
	select {
	case err := <-heartbeat():
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an agent request waited for good behind a person's request")
	}
	// People's own requests are never held.
	if _, err := e.admin.List(ctx, "machines", ""); err != nil {
		t.Fatal(err)
	}
}
