package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

func (e *env) effective(machine string) EffectiveParams {
	e.t.Helper()
	status, body := e.send(e.admin.Token, request{"GET", "/api/v1/objects/machines/" + machine + "?effective=1", nil})
	if status != 200 {
		e.t.Fatalf("effective %s: %d %s", machine, status, body)
	}
	var eff EffectiveParams
	if err := json.Unmarshal(body, &eff); err != nil {
		e.t.Fatal(err)
	}
	return eff
}

func (e *env) machine(name string) *api.Machine {
	e.t.Helper()
	var m api.Machine
	if err := e.admin.Get(context.Background(), "machines", name, &m); err != nil {
		e.t.Fatal(err)
	}
	return &m
}

// Profiles attach by label: --effective names the selector a value came
// through, a label added by an apply changes what the machine gets, and
// the rendered job uses it. Once applied, a change of the profile marks the
// machine drifted, in the API and in the event stream.
func TestSelectorProfileEffectiveAndDrift(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	ag := e.agent("n1")
	e.agent("n2")
	e.mustApply(e.admin,
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "global"}, Params: params("tier", `"global"`, "ntp", `"ntp.example"`)},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "storage-nodes"}, Selector: "role=storage", Params: params("tier", `"storage"`, "mount", `"/srv/data"`)},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "listed"}, Params: params("tier", `"listed"`)},
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "mount"}, Script: `echo mount={{ param "mount" }} tier={{ param "tier" }}`},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "configure"}, Tasks: []string{"mount"}},
	)
	check := func(machine, param, value, source string) {
		t.Helper()
		v, ok := e.effective(machine).Params[param]
		if value == "" {
			if ok {
				t.Errorf("%s: %s = %s from %q, want unset", machine, param, v.Value, v.Source)
			}
			return
		}
		if string(v.Value) != value || v.Source != source {
			t.Errorf("%s: %s = %s from %q, want %s from %q", machine, param, v.Value, v.Source, value, source)
		}
	}
	check("n1", "tier", `"global"`, "profile global")
	check("n1", "mount", "", "")

	// Adding the label is enough.
	e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1", Labels: map[string]string{"role": "storage"}}})
	check("n1", "tier", `"storage"`, "profile storage-nodes (selector role=storage)")
	check("n1", "mount", `"/srv/data"`, "profile storage-nodes (selector role=storage)")
	check("n1", "ntp", `"ntp.example"`, "profile global")
	check("n2", "tier", `"global"`, "profile global")
	// The machine's own profiles come first.
	e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1", Labels: map[string]string{"role": "storage"}}, Profiles: []string{"listed"}})
	check("n1", "tier", `"listed"`, "profile listed")
	check("n1", "mount", `"/srv/data"`, "profile storage-nodes (selector role=storage)")

	// Bad selectors are refused naming the field; global takes none.
	for _, p := range []*api.Profile{
		{Meta: api.Meta{Kind: api.KindProfile, Name: "bad"}, Selector: "role in ("},
		{Meta: api.Meta{Kind: api.KindProfile, Name: "global"}, Selector: "role=storage"},
	} {
		_, err := e.admin.ApplyObjects(ctx, p)
		ae := apiErr(t, err, http.StatusBadRequest)
		if !strings.Contains(ae.Message, `Profile "`+p.Name+`", field selector:`) {
			t.Errorf("refusal of %s does not name the field: %s", p.Name, ae.Message)
		}
	}

	// The job renders what --effective shows.
	spec := e.startJobSpec(ag, "n1", "configure")
	if spec.Script != "echo mount=/srv/data tier=listed" {
		t.Errorf("script %q", spec.Script)
	}
	if err := ag.Do(ctx, http.MethodPost, "/api/v1/agent/jobs/"+spec.Name+"/complete", api.JobResult{ExitCode: 0}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n1 commissioned", 10*time.Second, func() bool {
		m := e.machine("n1")
		return m.Status.State == api.StateReady && m.Status.Run == ""
	})
	m := e.machine("n1")
	if m.Status.AppliedWorkflow != "configure" || m.Status.AppliedConfig == "" || m.Status.ConfigDrift {
		t.Fatalf("after commission: %+v", m.Status)
	}

	// The profile changes: the machine drifts, and says so in the stream.
	from := e.rev()
	e.mustApply(e.admin, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "storage-nodes"}, Selector: "role=storage", Params: params("tier", `"storage"`, "mount", `"/srv/other"`)})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	errSeen := errors.New("seen")
	_, err := e.admin.Watch(wctx, from, []string{api.KindMachine}, func(ev api.Event) error {
		var m api.Machine
		if ev.Name == "n1" && json.Unmarshal(ev.Object, &m) == nil && m.Status.ConfigDrift {
			if !strings.Contains(m.Status.ConfigDriftReason, "workflow configure renders differently") {
				t.Errorf("reason %q", m.Status.ConfigDriftReason)
			}
			return errSeen
		}
		return nil
	})
	if !errors.Is(err, errSeen) {
		t.Fatalf("no event with n1 drifted: %v", err)
	}
	// Taking the label away takes the profile away: the param is missing.
	e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}, Profiles: []string{"listed"}})
	waitFor(t, "drift reason naming the missing param", 10*time.Second, func() bool {
		return strings.Contains(e.machine("n1").Status.ConfigDriftReason, `param "mount" is not set for machine "n1"`)
	})
}
