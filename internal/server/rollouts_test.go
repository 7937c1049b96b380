package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

// runJobs answers an agent's job polls with success until ctx ends.
func runJobs(ctx context.Context, agent *api.Client) {
	for ctx.Err() == nil {
		var next api.NextJobResponse
		if err := agent.Do(ctx, http.MethodPost, "/api/v1/agent/jobs/next", api.NextJobRequest{Wait: "1s"}, &next); err != nil || next.Job == nil {
			continue
		}
		_ = agent.Do(context.Background(), http.MethodPost, "/api/v1/agent/jobs/"+next.Job.Name+"/complete", api.JobResult{}, nil)
	}
}

func TestRolloutAPI(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	viewer := e.user("vera", api.RoleViewer)
	agents := map[string]*api.Client{}
	for _, n := range []string{"m10", "m2", "m1"} {
		agents[n] = e.agent(n)
	}
	e.mustApply(e.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}, Script: "true"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"t"}},
	)

	// Refusals say what is wrong.
	for _, c := range []struct {
		req    api.RolloutRequest
		status int
		want   string
	}{
		{api.RolloutRequest{Action: "verify", Nodes: "all"}, 400, `action "verify": a rollout runs commission, deploy, upgrade, decommission`},
		{api.RolloutRequest{Action: "commission"}, 400, "nodes is required"},
		{api.RolloutRequest{Action: "commission", Nodes: "x[1-2]"}, 400, `node range "x[1-2]"`},
		{api.RolloutRequest{Action: "commission", Nodes: "all", BatchSize: -2}, 400, "field batchSize: -2 is negative"},
		{api.RolloutRequest{Action: "commission", Nodes: "all", PauseBetween: "1y"}, 400, `field pauseBetween: "1y" is not a duration`},
	} {
		_, err := e.admin.StartRollout(ctx, c.req)
		if ae := apiErr(t, err, c.status); !strings.Contains(ae.Message, c.want) {
			t.Errorf("%+v: %q, want %q", c.req, ae.Message, c.want)
		}
	}
	_, err := viewer.StartRollout(ctx, api.RolloutRequest{Action: "commission", Nodes: "all"})
	apiErr(t, err, http.StatusForbidden)
	// A rollout is drover's: it cannot be applied.
	_, err = e.admin.ApplyObjects(ctx, &api.Rollout{Meta: api.Meta{Kind: api.KindRollout, Name: "mine"}, Action: "upgrade"})
	if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, "Rollout objects are managed by drover and cannot be applied") {
		t.Errorf("apply: %s", ae.Message)
	}

	// Machines go in node range order; batch 1 starts at once.
	ro, err := e.admin.StartRollout(ctx, api.RolloutRequest{Action: "commission", Nodes: "all", Workflow: "wf", BatchSize: 2, MaxFailures: 1})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ro.Machines, ",") != "m1,m2,m10" || ro.User != "admin" || ro.Status.State != api.RolloutRunning || ro.Status.Batches != 2 {
		t.Fatalf("rollout %+v", ro)
	}
	waitFor(t, "batch 1 running", 10*time.Second, func() bool {
		var cur api.Rollout
		return viewer.Get(ctx, "rollouts", ro.Name, &cur) == nil && cur.Status.Running == 2
	})
	_, err = viewer.CancelRollout(ctx, ro.Name)
	apiErr(t, err, http.StatusForbidden)
	_, err = e.admin.ResumeRollout(ctx, ro.Name, false)
	if ae := apiErr(t, err, http.StatusConflict); ae.Message != fmt.Sprintf("rollout %q is running; nothing to resume", ro.Name) {
		t.Errorf("resume while running: %s", ae.Message)
	}
	c, err := e.admin.CancelRollout(ctx, ro.Name)
	if err != nil || c.Status.State != api.RolloutCancelled || c.Status.Message != "cancelled by admin with 1 machine not started" {
		t.Fatalf("cancel: %+v %v", c, err)
	}
	_, err = e.admin.CancelRollout(ctx, ro.Name)
	apiErr(t, err, http.StatusConflict)
	_, err = e.admin.ResumeRollout(ctx, "nope", false)
	apiErr(t, err, http.StatusNotFound)

	// The running machines finish; m10 never starts.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, a := range agents {
		go runJobs(rctx, a)
	}
	waitFor(t, "the cancelled rollout to end", 10*time.Second, func() bool {
		var cur api.Rollout
		return e.admin.Get(ctx, "rollouts", ro.Name, &cur) == nil && cur.Status.FinishedAt != nil && cur.Status.Succeeded == 2
	})
	var m api.Machine
	if err := e.admin.Get(ctx, "machines", "m10", &m); err != nil || m.Status.State != api.StateDiscovered {
		t.Errorf("m10: %s %v", m.Status.State, err)
	}
	// Listed and audited.
	l, err := viewer.List(ctx, "rollouts", "action=commission")
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("list: %v %v", l, err)
	}
	audit := e.allStoreData(api.KindAudit)
	for _, want := range []string{`"action":"started","target":"Rollout/` + ro.Name + `","detail":"commission of 3 machines"`, `"action":"cancelled","target":"Rollout/` + ro.Name} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s", want)
		}
	}
	// Its runs say which rollout started them.
	runs, err := viewer.List(ctx, "runs", "rollout="+ro.Name)
	if err != nil || len(runs.Items) != 2 {
		t.Errorf("runs of the rollout: %d %v", len(runs.Items), err)
	}
}

func TestPolicyApply(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	for _, c := range []struct {
		p    api.Policy
		want string
	}{
		{api.Policy{Type: "auto-delete"}, `field type: unknown policy type "auto-delete" (use auto-commission or auto-upgrade)`},
		{api.Policy{}, "field type: missing type"},
		{api.Policy{Type: api.PolicyAutoUpgrade, Selector: "role in ("}, "field selector"},
		{api.Policy{Type: api.PolicyAutoUpgrade, PauseBetween: "-1s"}, "field pauseBetween"},
		{api.Policy{Type: api.PolicyAutoUpgrade, MaxUnavailable: -1}, "field maxUnavailable"},
	} {
		c.p.Meta = api.Meta{Kind: api.KindPolicy, Name: "p"}
		_, err := e.admin.ApplyObjects(ctx, &c.p)
		if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, c.want) {
			t.Errorf("%+v: %q, want %q", c.p, ae.Message, c.want)
		}
	}
	// What a user writes in status is dropped; drover writes its own.
	p := &api.Policy{Meta: api.Meta{Kind: api.KindPolicy, Name: "p"}, Type: api.PolicyAutoCommission, Status: api.PolicyStatus{Message: "made up"}}
	e.mustApply(e.admin, p)
	var got api.Policy
	if err := e.admin.Get(ctx, "policies", "p", &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Message == "made up" {
		t.Errorf("status kept: %+v", got.Status)
	}
	raw, _ := json.Marshal(got)
	if !strings.Contains(string(raw), `"type":"auto-commission"`) {
		t.Errorf("%s", raw)
	}
}

// An agent registering after an auto-commission policy exists gets its
// machine commissioned through the policy's rollout; one registered before
// is left alone.
func TestAutoCommissionOnRegistration(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	e.agent("before")
	e.mustApply(e.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t"}, Script: "true"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"t"}},
		&api.Policy{Meta: api.Meta{Kind: api.KindPolicy, Name: "new"}, Type: api.PolicyAutoCommission, Workflow: "wf"},
	)
	agent := e.agent("after")
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go runJobs(rctx, agent)
	waitFor(t, "after commissioned", 10*time.Second, func() bool {
		var m api.Machine
		return e.admin.Get(ctx, "machines", "after", &m) == nil && m.Status.State == api.StateReady
	})
	var p api.Policy
	if err := e.admin.Get(ctx, "policies", "new", &p); err != nil || !strings.HasPrefix(p.Status.Rollout, "new-") {
		t.Fatalf("policy %+v %v", p.Status, err)
	}
	var ro api.Rollout
	if err := e.admin.Get(ctx, "rollouts", p.Status.Rollout, &ro); err != nil || strings.Join(ro.Machines, ",") != "after" || ro.User != "policy/new" {
		t.Errorf("rollout %+v %v", ro, err)
	}
	var m api.Machine
	if err := e.admin.Get(ctx, "machines", "before", &m); err != nil || m.Status.State != api.StateDiscovered || m.Status.LastRun != "" {
		t.Errorf("before: %s %q %v", m.Status.State, m.Status.LastRun, err)
	}
}
