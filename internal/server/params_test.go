package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
)

func params(kv ...string) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = json.RawMessage(kv[i+1])
	}
	return m
}

const secretValue = "s3cret-Value-never-shown"

// paramFixture: declared params, three profiles and a machine using two of
// them, registered by a real agent.
func paramFixture(t *testing.T) (*env, *api.Client) {
	e := startServer(t, nil)
	ag := e.agent("n1")
	e.mustApply(e.admin,
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "greeting"}, Type: "string", Default: json.RawMessage(`"from-default"`)},
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "only-default"}, Type: "string", Default: json.RawMessage(`"od"`)},
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "size"}, Type: "integer", Schema: json.RawMessage(`{"minimum":1,"maximum":10}`)},
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "site/password"}, Type: "string", Secure: true, Schema: json.RawMessage(`{"minLength":8}`)},
		&api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "site/pin"}, Type: "string", Secure: true, Schema: json.RawMessage(`{"pattern":"^[0-9]+$"}`)},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "global"}, Params: params("a", `"global"`, "b", `"global"`, "greeting", `"from-global"`)},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1"}, Params: params("b", `"p1"`, "c", `"p1"`, "size", `3`)},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p2"}, Params: params("b", `"p2"`, "c", `"p2"`, "d", `"p2"`, "site/password", mustJSONString(secretValue))},
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}, Profiles: []string{"p1", "p2"}, Params: params("c", `"machine"`)},
		&api.Template{Meta: api.Meta{Kind: api.KindTemplate, Name: "snippet"}, Content: `snip-{{ .Machine.Name }}-{{ .Param "d" }}`},
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "show"}, Script: `a={{ .Param "a" }} b={{ .Param "b" }} c={{ .Param "c" }} d={{ .Param "d" }} g={{ .Param "greeting" }} od={{ .Param "only-default" }} size={{ .Param "size" }} pw={{ .Param "site/password" }} inc={{ template "snippet" . }}`},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"show"}},
	)
	return e, ag
}

func mustJSONString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestParamLookupOrderAndEffective(t *testing.T) {
	e, ag := paramFixture(t)
	ctx := context.Background()

	var eff EffectiveParams
	if err := e.admin.Get(ctx, "machines", "n1?effective=1", &eff); err == nil {
		t.Fatal("the client escapes '?': use a raw call")
	}
	status, body := e.send(e.admin.Token, request{"GET", "/api/v1/objects/machines/n1?effective=1", nil})
	if status != 200 {
		t.Fatalf("effective: %d %s", status, body)
	}
	if err := json.Unmarshal(body, &eff); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"c":             {`"machine"`, "machine n1"},
		"b":             {`"p1"`, "profile p1"},
		"size":          {`3`, "profile p1"},
		"d":             {`"p2"`, "profile p2"},
		"site/password": {`"********"`, "profile p2"},
		"a":             {`"global"`, "profile global"},
		"greeting":      {`"from-global"`, "profile global"},
		"only-default":  {`"od"`, "param only-default default"},
	}
	if len(eff.Params) != len(want) {
		t.Errorf("effective has %d params, want %d: %s", len(eff.Params), len(want), body)
	}
	for n, w := range want {
		v, ok := eff.Params[n]
		if !ok {
			t.Errorf("effective lacks %s", n)
			continue
		}
		if string(v.Value) != w[0] || v.Source != w[1] {
			t.Errorf("effective %s = %s from %q, want %s from %q", n, v.Value, v.Source, w[0], w[1])
		}
	}
	if !eff.Params["site/password"].Secure {
		t.Error("effective site/password is not marked secure")
	}
	if strings.Contains(string(body), secretValue) || strings.Contains(string(body), "enc:v1:") {
		t.Errorf("effective shows the secret: %s", body)
	}

	// The engine renders with the same order, decrypts the secret, and
	// includes Template objects.
	spec := e.startJobSpec(ag, "n1", "wf")
	wantScript := "a=global b=p1 c=machine d=p2 g=from-global od=od size=3 pw=" + secretValue + " inc=snip-n1-p2"
	if spec.Script != wantScript {
		t.Errorf("rendered script:\n got %q\nwant %q", spec.Script, wantScript)
	}
}

// startJobSpec is startJob returning the whole job spec.
func (e *env) startJobSpec(agent *api.Client, machine, wf string) *api.JobSpec {
	e.t.Helper()
	ctx := context.Background()
	if resp, err := e.admin.Action(ctx, api.ActionCommission, machine, wf); err != nil {
		e.t.Fatalf("commission %s: %v (%+v)", machine, err, resp)
	}
	var next api.NextJobResponse
	if err := agent.Do(ctx, http.MethodPost, "/api/v1/agent/jobs/next", api.NextJobRequest{Wait: "10s"}, &next); err != nil {
		e.t.Fatalf("next job for %s: %v", machine, err)
	}
	if next.Job == nil {
		e.t.Fatalf("no job for %s", machine)
	}
	return next.Job
}

func TestSecureParams(t *testing.T) {
	e, ag := paramFixture(t)
	ctx := context.Background()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := make(chan api.Event, 100)
	go func() {
		_, _ = e.admin.Watch(wctx, 1, []string{"Profile", "Machine", "Param"}, func(ev api.Event) error {
			select {
			case events <- ev:
				return nil
			case <-wctx.Done():
				return wctx.Err()
			}
		})
	}()

	// At rest: sealed, no plaintext anywhere in the store.
	rec := e.storeRecord(api.KindProfile, "p2")
	if strings.Contains(string(rec.Data), secretValue) || !strings.Contains(string(rec.Data), `"enc:v1:`) {
		t.Fatalf("stored profile p2 is not sealed: %s", rec.Data)
	}
	if all := e.allStoreData("Machine", "Profile", "Param", "Audit", "Run", "Job"); strings.Contains(all, secretValue) {
		t.Fatal("the plaintext secret is in the store")
	}

	// Shown masked in get and list.
	var p2 api.Profile
	if err := e.admin.Get(ctx, "profiles", "p2", &p2); err != nil {
		t.Fatal(err)
	}
	if string(p2.Params["site/password"]) != `"********"` {
		t.Errorf("get p2: site/password = %s", p2.Params["site/password"])
	}
	l, err := e.admin.List(ctx, "profiles", "")
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := json.Marshal(l)
	if strings.Contains(string(lb), secretValue) || strings.Contains(string(lb), "enc:v1:") || !strings.Contains(string(lb), `"site/password":"********"`) {
		t.Errorf("list profiles: %s", lb)
	}

	// Re-applying the masked value keeps the stored secret as it was.
	p2.Description = "touched"
	e.mustApply(e.admin, &p2)
	rec2 := e.storeRecord(api.KindProfile, "p2")
	if !strings.Contains(string(rec2.Data), "touched") {
		t.Fatalf("p2 not updated: %s", rec2.Data)
	}
	var before, after api.Profile
	_ = json.Unmarshal(rec.Data, &before)
	_ = json.Unmarshal(rec2.Data, &after)
	if string(before.Params["site/password"]) != string(after.Params["site/password"]) {
		t.Errorf("re-applying the masked value changed the stored secret: %s -> %s", before.Params["site/password"], after.Params["site/password"])
	}
	// ... and it still renders to the secret.
	spec := e.startJobSpec(ag, "n1", "wf")
	if !strings.Contains(spec.Script, "pw="+secretValue+" ") {
		t.Errorf("after re-applying the masked value the script renders %q", spec.Script)
	}

	// The masked value is no value of its own: on an object without a
	// stored secret it is refused, naming the param.
	before2 := e.rev()
	_, err = e.admin.ApplyObjects(ctx, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p3"}, Params: params("site/password", `"********"`)})
	ae := apiErr(t, err, 400)
	if !strings.Contains(ae.Message, "site/password") {
		t.Errorf("masked value on a new object: %s", ae.Message)
	}
	if e.rev() != before2 {
		t.Error("refused apply wrote")
	}

	// A new secret replaces the old one, sealed again.
	e.mustApply(e.admin, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p2"}, Params: params("b", `"p2"`, "c", `"p2"`, "d", `"p2"`, "site/password", `"another-secret"`)})
	if d := string(e.storeRecord(api.KindProfile, "p2").Data); strings.Contains(d, "another-secret") || strings.Contains(d, string(after.Params["site/password"])) {
		t.Errorf("new secret not sealed anew: %s", d)
	}

	// Events show the value masked too.
	end := e.rev()
	sawSecure := false
	for done := false; !done; {
		var ev api.Event
		select {
		case ev = <-events:
		case <-time.After(10 * time.Second):
			t.Fatalf("no event up to revision %d", end)
		}
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), secretValue) || strings.Contains(string(b), "another-secret") || strings.Contains(string(b), "enc:v1:") {
			t.Errorf("event shows the secret: %s", b)
		}
		if strings.Contains(string(b), `"site/password":"********"`) {
			sawSecure = true
		}
		done = ev.Revision >= end
	}
	if !sawSecure {
		t.Error("no event carried the masked secure value")
	}
}

// Values that break a param's type or schema are refused naming the param,
// and nothing is written; a secret that breaks its schema is not echoed.
func TestParamTypeAndSchemaViolations(t *testing.T) {
	e, _ := paramFixture(t)
	ctx := context.Background()
	cases := []struct {
		name string
		obj  api.Object
		want []string
	}{
		{"integer gets a string", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "px"}, Params: params("size", `"big"`)}, []string{"size", "integer"}},
		{"integer gets a float", &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "mx"}, Params: params("size", `2.5`)}, []string{"size"}},
		{"schema maximum", &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}, Params: params("size", `11`)}, []string{"size", "schema"}},
		{"schema in a global profile", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "global"}, Params: params("size", `0`)}, []string{"size"}},
		{"string gets a number", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "px"}, Params: params("greeting", `5`)}, []string{"greeting", "string"}},
		{"secret breaks its schema", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "px"}, Params: params("site/password", `"shortpw"`)}, []string{"site/password"}},
		{"secret breaks its pattern", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "px"}, Params: params("site/pin", `"abcSECRETpin"`)}, []string{"site/pin", "pattern"}},
		{"secret that only looks sealed", &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "px"}, Params: params("site/password", `"enc:v1:notsealedSECRET"`)}, []string{"site/password", "sealed"}},
		{"bad default", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "size2"}, Type: "integer", Default: json.RawMessage(`"x"`)}, []string{"size2", "default"}},
		{"default breaks schema", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "size2"}, Type: "integer", Schema: json.RawMessage(`{"maximum":1}`), Default: json.RawMessage(`5`)}, []string{"size2", "default"}},
		{"bad schema", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "size2"}, Schema: json.RawMessage(`{"type":"nonsense"}`)}, []string{"size2", "schema"}},
		{"unknown type", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "size2"}, Type: "int"}, []string{"size2", "type", "int"}},
		{"secure with a default", &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "pw2"}, Secure: true, Default: json.RawMessage(`"x"`)}, []string{"pw2", "default"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.rev()
			_, err := e.admin.ApplyObjects(ctx, c.obj)
			ae := apiErr(t, err, 400)
			t.Logf("%s", ae.Message)
			for _, w := range c.want {
				if !strings.Contains(ae.Message, w) {
					t.Errorf("message %q does not name %q", ae.Message, w)
				}
			}
			if strings.Contains(ae.Message, "shortpw") || strings.Contains(ae.Message, "notsealedSECRET") || strings.Contains(ae.Message, "abcSECRETpin") {
				t.Errorf("the error echoes a secure value: %s", ae.Message)
			}
			if e.rev() != before {
				t.Error("a refused apply wrote")
			}
		})
	}
}

// A param declared secure after values were stored in clear: the values
// are sealed then, and never shown.
func TestParamDeclaredSecureLater(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	e.mustApply(e.admin,
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1"}, Params: params("bmc/password", `"plain-first"`)},
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}, Params: params("bmc/password", `"plain-machine"`)},
	)
	e.mustApply(e.admin, &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "bmc/password"}, Type: "string", Secure: true})
	if all := e.allStoreData("Profile", "Machine"); strings.Contains(all, "plain-first") || strings.Contains(all, "plain-machine") {
		t.Errorf("values stay in clear after the param was declared secure: %s", all)
	}
	var p1 api.Profile
	if err := e.admin.Get(ctx, "profiles", "p1", &p1); err != nil {
		t.Fatal(err)
	}
	if string(p1.Params["bmc/password"]) != `"********"` {
		t.Errorf("p1 shows %s", p1.Params["bmc/password"])
	}
	// Rendering still sees the value.
	var m api.Machine
	if err := model.Decode(e.storeRecord(api.KindMachine, "n1"), &m); err != nil {
		t.Fatal(err)
	}
	in, err := e.srv.Engine().RenderInput(ctx, &m)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := in.Param("bmc/password"); err != nil || v != "plain-machine" {
		t.Errorf("render sees %v, %v", v, err)
	}
}

func TestEffectiveWithMissingProfile(t *testing.T) {
	e := startServer(t, nil)
	e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}, Profiles: []string{"nope"}})
	status, body := e.send(e.admin.Token, request{"GET", "/api/v1/objects/machines/n1?effective=1", nil})
	var ae api.Error
	_ = json.Unmarshal(body, &ae)
	if status != http.StatusConflict || !strings.Contains(ae.Message, `"nope"`) {
		t.Errorf("effective with a missing profile: %d %s", status, body)
	}
	// Without profiles the view is empty, not an error.
	e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}})
	status, body = e.send(e.admin.Token, request{"GET", "/api/v1/objects/machines/n1?effective=1", nil})
	if status != 200 || !strings.Contains(string(body), `"params":{}`) {
		t.Errorf("effective without params: %d %s", status, body)
	}
}
