package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
)

func docs(ss ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(ss))
	for i, s := range ss {
		out[i] = json.RawMessage(s)
	}
	return out
}

// Bad input is refused with a message naming what is wrong, and nothing is
// written.
func TestBadInputChangesNothing(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	e.mustApply(e.admin,
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1", Labels: map[string]string{"role": "compute"}}},
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n2"}},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1"}},
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t1"}, Script: "true"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"t1"}},
	)
	var p1 api.Profile
	if err := e.admin.Get(ctx, "profiles", "p1", &p1); err != nil {
		t.Fatal(err)
	}
	stale := p1.Revision
	e.mustApply(e.admin, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1", Description: "changed"}})

	const good1 = `{"kind":"Profile","name":"new1"}`
	const good2 = `{"kind":"Template","name":"new2","content":"x"}`
	apply := func(d ...string) func() error {
		return func() error { _, err := e.admin.Apply(ctx, docs(d...)); return err }
	}
	rawCall := func(method, path, ct, body string) func() error {
		return func() error {
			status, b := e.raw(e.admin.Token, method, path, ct, []byte(body))
			if status < 300 {
				return nil
			}
			var ae api.Error
			if err := json.Unmarshal(b, &ae); err != nil {
				t.Errorf("%s %s: error body is not JSON: %s", method, path, b)
			}
			ae.Status = status
			return &ae
		}
	}
	cases := []struct {
		name   string
		call   func() error
		status int
		code   string
		want   []string // substrings of the message
	}{
		{"unknown kind", apply(good1, `{"kind":"Widget","name":"w"}`), 400, "invalid", []string{"document 2", `"Widget"`, "kind"}},
		{"kind in the wrong case", apply(`{"kind":"machine","name":"w"}`), 400, "invalid", []string{"document 1", `"machine"`, `"Machine"`}},
		{"missing kind", apply(`{"name":"w"}`), 400, "invalid", []string{"document 1", "kind"}},
		{"unknown field", apply(`{"kind":"Task","name":"t2","scirpt":"echo"}`), 400, "invalid", []string{"document 1", `Task "t2"`, "scirpt"}},
		{"unknown nested field", apply(`{"kind":"Machine","name":"n9","status":{"stat":"ready"}}`), 400, "invalid", []string{"document 1", "stat"}},
		{"wrong field type", apply(`{"kind":"Task","name":"t2","script":"x","retries":"3"}`), 400, "invalid", []string{"document 1", "retries"}},
		{"bad template", apply(`{"kind":"Task","name":"t2","script":"echo {{ .Param \"x\" "}`), 400, "invalid", []string{"document 1", `Task "t2"`, "script", "template"}},
		{"undefined template function", apply(`{"kind":"Task","name":"t2","script":"{{ nosuchfunc }}"}`), 400, "invalid", []string{"script", "nosuchfunc"}},
		{"bad Template content", apply(`{"kind":"Template","name":"x","content":"{{ end }}"}`), 400, "invalid", []string{"document 1", "content"}},
		{"bad timeout", apply(`{"kind":"Task","name":"t2","script":"x","timeout":"5 minutes"}`), 400, "invalid", []string{"document 1", "timeout", "5 minutes"}},
		{"negative timeout", apply(`{"kind":"Task","name":"t2","script":"x","timeout":"-5m"}`), 400, "invalid", []string{"timeout"}},
		{"bad name", apply(`{"kind":"Profile","name":"a b"}`), 400, "invalid", []string{"document 1", "name", `"a b"`}},
		{"bad label", apply(`{"kind":"Profile","name":"ok","labels":{"bad key!":"x"}}`), 400, "invalid", []string{"document 1", "labels"}},
		{"bad role", apply(`{"kind":"User","name":"u","role":"root","password":"long-enough-pw"}`), 400, "invalid", []string{"document 1", "role", "root"}},
		{"user without password", apply(`{"kind":"User","name":"u","role":"viewer"}`), 400, "invalid", []string{"document 1", "password"}},
		{"empty workflow", apply(`{"kind":"Workflow","name":"w2","tasks":[]}`), 400, "invalid", []string{"document 1", "tasks"}},
		{"document 3 of 3 is bad", apply(good1, good2, `{"kind":"Task","name":"t3","script":"{{"}`), 400, "invalid", []string{"document 3", `Task "t3"`}},
		{"document 3 of 3 is stale", apply(good1, good2, `{"kind":"Profile","name":"p1","revision":`+itoa(stale)+`}`), 409, "conflict", []string{"document 3", `Profile "p1"`, "revision"}},
		{"duplicate documents", apply(good1, good2, good1), 400, "invalid", []string{"document 3", "document 1", `Profile "new1"`}},
		{"Job is managed", apply(good1, `{"kind":"Job","name":"j1","machine":"n1","task":"t1"}`), 400, "invalid", []string{"document 2", "Job", "managed"}},
		{"Run is managed", apply(`{"kind":"Run","name":"r1","machine":"n1"}`), 400, "invalid", []string{"document 1", "Run", "managed"}},
		{"Token is managed", apply(`{"kind":"Token","name":"0123456789abcdef","role":"admin","user":"admin"}`), 400, "invalid", []string{"Token", "managed"}},
		{"password hash given", apply(`{"kind":"User","name":"u","role":"admin","passwordHash":"$2a$10$abc"}`), 400, "invalid", []string{"passwordHash"}},
		{"document not an object", apply(`[1,2]`), 400, "invalid", []string{"document 1"}},
		{"no documents", apply(), 400, "bad_request", []string{"no documents"}},
		{"demoting the last admin", apply(`{"kind":"User","name":"admin","role":"operator"}`), 409, "conflict", []string{"document 1", `User "admin"`, "role", "no enabled admin"}},
		{"disabling the last admin", apply(good1, `{"kind":"User","name":"admin","role":"admin","disabled":true}`), 409, "conflict", []string{"document 2", "disabled", "no enabled admin"}},
		{"non-JSON body", rawCall("POST", "/api/v1/apply", "application/json", "kind: Profile\nname: x\n"), 400, "bad_request", []string{"body"}},
		{"trailing garbage", rawCall("POST", "/api/v1/apply", "application/json", `{"documents":[]} {}`), 400, "bad_request", []string{"body"}},
		{"unknown request field", rawCall("POST", "/api/v1/apply", "application/json", `{"docs":[]}`), 400, "bad_request", []string{"docs"}},
		{"wrong content type", rawCall("POST", "/api/v1/apply", "text/yaml", `{"documents":[`+good1+`]}`), 415, "unsupported_media_type", []string{"application/json", "text/yaml"}},
		{"put: body does not match URL", rawCall("PUT", "/api/v1/objects/profiles/other", "application/json", good1), 400, "bad_request", []string{"new1", "other"}},
		{"put: unknown field", rawCall("PUT", "/api/v1/objects/profiles/new1", "application/json", `{"kind":"Profile","name":"new1","parms":{}}`), 400, "invalid", []string{"parms"}},
		{"put: stale revision", rawCall("PUT", "/api/v1/objects/profiles/p1", "application/json", `{"kind":"Profile","name":"p1","revision":`+itoa(stale)+`}`), 409, "conflict", []string{`Profile "p1"`, "revision"}},
		{"put: unknown kind", rawCall("PUT", "/api/v1/objects/widgets/w", "application/json", `{"kind":"Widget","name":"w"}`), 404, "unknown_kind", []string{"widgets"}},
		{"delete: stale revision", rawCall("DELETE", "/api/v1/objects/profiles/p1?revision="+itoa(stale), "", ""), 409, "conflict", []string{"p1"}},
		{"delete: missing", rawCall("DELETE", "/api/v1/objects/profiles/nope", "", ""), 404, "not_found", []string{"nope"}},
		{"delete: own user", rawCall("DELETE", "/api/v1/objects/users/admin", "", ""), 409, "conflict", []string{"your own user"}},
		{"list: bad selector", func() error { _, err := e.admin.List(ctx, "machines", "role in (a"); return err }, 400, "bad_request", []string{"selector", "role in (a"}},
		{"list: unknown kind", func() error { _, err := e.admin.List(ctx, "widgets", ""); return err }, 404, "unknown_kind", []string{"widgets"}},
		{"action: bad node range", func() error { _, err := e.admin.Action(ctx, "commission", "n[1-", "wf"); return err }, 400, "bad_request", []string{"n[1-"}},
		{"action: unknown machine", func() error { _, err := e.admin.Action(ctx, "commission", "n1,n7", "wf"); return err }, 400, "bad_request", []string{"n7"}},
		{"action: unknown machine in a range", func() error { _, err := e.admin.Action(ctx, "commission", "n[1-3]", "wf"); return err }, 400, "bad_request", []string{"n3"}},
		{"action: empty node range", func() error { _, err := e.admin.Action(ctx, "commission", "", "wf"); return err }, 400, "bad_request", []string{"nodes"}},
		{"action: label selects nothing", func() error { _, err := e.admin.Action(ctx, "commission", "@role=storage", "wf"); return err }, 400, "bad_request", []string{"@role=storage"}},
		{"action: bad workflow name", func() error { _, err := e.admin.Action(ctx, "commission", "n1", "a b"); return err }, 400, "bad_request", []string{"workflow"}},
		{"action: unknown action", func() error { _, err := e.admin.Action(ctx, "explode", "n1", "wf"); return err }, 404, "unknown_action", []string{"explode"}},
		{"action: unknown workflow", func() error { _, err := e.admin.Action(ctx, "commission", "n1", "nowf"); return err }, 409, "", []string{}},
		{"join token: bad ttl", func() error { _, err := e.admin.CreateJoinToken(ctx, "forever", nil); return err }, 400, "bad_request", []string{"ttl", "forever"}},
		{"join token: bad label", func() error { _, err := e.admin.CreateJoinToken(ctx, "1h", map[string]string{"a b": "c"}); return err }, 400, "bad_request", []string{"machineLabels"}},
		{"events: bad from", rawCall("GET", "/api/v1/events?from=abc", "", ""), 400, "bad_request", []string{"from", "abc"}},
		{"events: unknown kind", rawCall("GET", "/api/v1/events?kinds=Widget", "", ""), 400, "bad_request", []string{"Widget"}},
		{"login: bad ttl", func() error { _, err := e.client("").Login(ctx, "admin", testAdminPassword, "1y"); return err }, 400, "bad_request", []string{"ttl"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.rev()
			err := c.call()
			ae := apiErr(t, err, c.status)
			t.Logf("%d %s: %s", ae.Status, ae.Code, ae.Message)
			if c.code != "" && ae.Code != c.code {
				t.Errorf("code %q, want %q (%s)", ae.Code, c.code, ae.Message)
			}
			for _, w := range c.want {
				if !strings.Contains(ae.Message, w) {
					t.Errorf("message %q does not name %q", ae.Message, w)
				}
			}
			if after := e.rev(); after != before {
				t.Errorf("store revision moved from %d to %d", before, after)
			}
		})
	}
	for _, name := range []string{"new1"} {
		var p api.Profile
		if err := e.admin.Get(ctx, "profiles", name, &p); !api.IsStatus(err, http.StatusNotFound) {
			t.Errorf("profile %s exists after failed applies (%v)", name, err)
		}
	}
	var tpl api.Template
	if err := e.admin.Get(ctx, "templates", "new2", &tpl); !api.IsStatus(err, http.StatusNotFound) {
		t.Errorf("template new2 exists after failed applies (%v)", err)
	}
}

func itoa(n int64) string { return strings.TrimSpace(string(mustJSONAny(n))) }

func mustJSONAny(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// A good apply after the failures works, and reports one revision for all.
func TestApplyAllOrNothingThenGood(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	before := e.rev()
	resp, err := e.admin.Apply(ctx, docs(`{"kind":"Profile","name":"a"}`, `{"kind":"Profile","name":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Revision != before+1 || len(resp.Results) != 2 {
		t.Fatalf("apply: %+v (revision before %d)", resp, before)
	}
	for _, r := range resp.Results {
		if r.Action != "created" || r.Revision != resp.Revision {
			t.Errorf("result %+v", r)
		}
	}
	resp, err = e.admin.Apply(ctx, docs(`{"kind":"Profile","name":"a"}`, `{"kind":"Profile","name":"b","description":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Results[0].Action != "unchanged" || resp.Results[0].Revision != before+1 || resp.Results[1].Action != "updated" || resp.Results[1].Revision != before+2 {
		t.Errorf("second apply: %+v", resp)
	}
	// Re-applying what GET returned (revision included) works.
	var b json.RawMessage
	if err := e.admin.Get(ctx, "profiles", "b", &b); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Apply(ctx, []json.RawMessage{b}); err != nil {
		t.Fatalf("re-applying a GET: %v", err)
	}
}

// Unfinished jobs and running runs cannot be deleted: the engine would run
// their task again. Finished ones can.
func TestDeleteRunningJobOrRun(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	ag := e.agent("n1")
	e.mustApply(e.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t1"}, Script: "true"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"t1"}},
	)
	job := e.startJob(ag, "n1", "wf")
	var j api.Job
	if err := e.admin.Get(ctx, "jobs", job, &j); err != nil {
		t.Fatal(err)
	}
	apiErr(t, e.admin.Delete(ctx, "jobs", job), 409)
	apiErr(t, e.admin.Delete(ctx, "runs", j.Run), 409)
	if err := ag.Do(ctx, "POST", "/api/v1/agent/jobs/"+job+"/complete", api.JobResult{ExitCode: 0}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the run to finish", 10*time.Second, func() bool {
		var run api.Run
		return e.admin.Get(ctx, "runs", j.Run, &run) == nil && run.State != api.RunRunning
	})
	if err := e.admin.Delete(ctx, "jobs", job); err != nil {
		t.Errorf("deleting a finished job: %v", err)
	}
	if err := e.admin.Delete(ctx, "runs", j.Run); err != nil {
		t.Errorf("deleting a finished run: %v", err)
	}
}
