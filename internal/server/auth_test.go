package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/inventory"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// request is one call of the matrix.
type request struct {
	method, path string
	body         any // JSON-encoded unless []byte
}

// send makes a request with token and returns its status and body. Event
// streams are not read past their headers.
func (e *env) send(token string, r request) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := r.body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/octet-stream"
	default:
		rd, ct = bytes.NewReader(mustJSON(e.t, b)), "application/json"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.method, e.url+r.path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client("").HTTP.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp.StatusCode, nil
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *env) auditCount() int {
	e.t.Helper()
	recs, _, err := e.srv.Store().List(context.Background(), api.KindAudit, store.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(recs)
}

// tokenID is the stored object name of a token.
func tokenID(tok string) string {
	parts := strings.SplitN(tok, "_", 3)
	if len(parts) != 3 {
		return ""
	}
	return parts[1]
}

// startJob commissions machine with workflow wf and has its agent take the
// first job, which is then running. It returns the job's name.
func (e *env) startJob(agent *api.Client, machine, wf string) string {
	e.t.Helper()
	ctx := context.Background()
	resp, err := e.admin.Action(ctx, api.ActionCommission, machine, wf)
	if err != nil {
		e.t.Fatalf("commission %s: %v (%+v)", machine, err, resp)
	}
	var next api.NextJobResponse
	if err := agent.Do(ctx, http.MethodPost, "/api/v1/agent/jobs/next", api.NextJobRequest{Wait: "10s"}, &next); err != nil {
		e.t.Fatalf("next job for %s: %v", machine, err)
	}
	if next.Job == nil {
		e.t.Fatalf("no job for %s", machine)
	}
	return next.Job.Name
}

var principals = []string{"admin", "operator", "viewer", "agent", "expired", "garbage", "jointoken", "none"}

func isUser(p string) bool { return p == "admin" || p == "operator" || p == "viewer" }

// allow gives the expected status of each principal when only the listed
// ones may call: the others get 403 when they are authenticated, 401 when
// not.
func allow(ok ...string) map[string]int {
	want := map[string]int{}
	for _, p := range principals {
		switch {
		case contains(ok, p):
			want[p] = 200
		case isUser(p) || p == "agent":
			want[p] = 403
		default:
			want[p] = 401
		}
	}
	return want
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func with(m map[string]int, p string, status int) map[string]int {
	m[p] = status
	return m
}

func TestAuthMatrix(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	tokens := map[string]string{}
	tokens["admin"] = e.admin.Token
	tokens["operator"] = e.user("oper", api.RoleOperator).Token
	tokens["viewer"] = e.user("viewy", api.RoleViewer).Token
	agent := e.agent("m1")
	other := e.agent("m2")
	tokens["agent"] = agent.Token
	lr, err := e.client("").Login(ctx, "oper", "pw-oper-12345", "1ms")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	tokens["expired"] = lr.Token
	tokens["garbage"] = "drs_0123456789abcdef_notthesecretatall"
	jt, err := e.admin.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens["jointoken"] = jt.Token
	tokens["none"] = ""

	e.mustApply(e.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t1"}, Script: "echo hi"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"t1"}},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1"}},
	)
	job1 := e.startJob(agent, "m1", "wf")
	job2 := e.startJob(other, "m2", "wf")

	// setup runs as admin before each call and may return the request.
	type row struct {
		name  string
		req   func(p string) request
		want  map[string]int
		check func(t *testing.T, p string, body []byte)
	}
	fixed := func(method, path string, body any) func(string) request {
		return func(string) request { return request{method, path, body} }
	}
	rows := []row{
		{name: "healthz", req: fixed("GET", "/healthz", nil), want: map[string]int{"admin": 200, "operator": 200, "viewer": 200, "agent": 200, "expired": 200, "garbage": 200, "jointoken": 200, "none": 200}},
		{name: "metrics", req: fixed("GET", "/metrics", nil), want: allow("admin", "operator", "viewer")},
		{name: "whoami", req: fixed("GET", "/api/v1/whoami", nil), want: allow("admin", "operator", "viewer", "agent"),
			check: func(t *testing.T, p string, body []byte) {
				var who map[string]string
				_ = json.Unmarshal(body, &who)
				switch p {
				case "agent":
					if who["machine"] != "m1" || who["role"] != api.RoleAgent {
						t.Errorf("whoami as agent: %v", who)
					}
				case "operator":
					if who["user"] != "oper" || who["role"] != api.RoleOperator {
						t.Errorf("whoami as operator: %v", who)
					}
				}
			}},
		{name: "list machines", req: fixed("GET", "/api/v1/objects/machines", nil), want: allow("admin", "operator", "viewer")},
		{name: "get machine", req: fixed("GET", "/api/v1/objects/machines/m1", nil), want: allow("admin", "operator", "viewer")},
		{name: "get machine effective", req: fixed("GET", "/api/v1/objects/machines/m1?effective=1", nil), want: allow("admin", "operator", "viewer")},
		{name: "list profiles", req: fixed("GET", "/api/v1/objects/profiles", nil), want: allow("admin", "operator", "viewer")},
		{name: "list jobs", req: fixed("GET", "/api/v1/objects/jobs", nil), want: allow("admin", "operator", "viewer")},
		{name: "list users", req: fixed("GET", "/api/v1/objects/users", nil), want: allow("admin")},
		{name: "get user", req: fixed("GET", "/api/v1/objects/users/admin", nil), want: allow("admin")},
		{name: "list tokens", req: fixed("GET", "/api/v1/objects/tokens", nil), want: allow("admin")},
		{name: "get token", req: fixed("GET", "/api/v1/objects/tokens/"+tokenID(tokens["viewer"]), nil), want: allow("admin")},
		{name: "list jointokens", req: fixed("GET", "/api/v1/objects/jointokens", nil), want: allow("admin", "operator", "viewer")},
		{name: "list audit", req: fixed("GET", "/api/v1/objects/audit", nil), want: allow("admin", "operator", "viewer")},
		{name: "put profile", req: func(p string) request {
			return request{"PUT", "/api/v1/objects/profiles/put-" + p, api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "put-" + p}}}
		}, want: allow("admin", "operator")},
		{name: "put user", req: func(p string) request {
			return request{"PUT", "/api/v1/objects/users/put-" + p, api.User{Meta: api.Meta{Kind: api.KindUser, Name: "put-" + p}, Role: api.RoleViewer, Password: "long-enough-pw"}}
		}, want: allow("admin")},
		{name: "apply profile", req: func(p string) request {
			return request{"POST", "/api/v1/apply", api.ApplyRequest{Documents: []json.RawMessage{mustJSON(t, api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "ap-" + p}})}}}
		}, want: allow("admin", "operator")},
		{name: "apply user", req: func(p string) request {
			return request{"POST", "/api/v1/apply", api.ApplyRequest{Documents: []json.RawMessage{mustJSON(t, api.User{Meta: api.Meta{Kind: api.KindUser, Name: "ap-" + p}, Role: api.RoleViewer, Password: "long-enough-pw"})}}}
		}, want: allow("admin")},
		{name: "delete profile", req: func(p string) request {
			e.mustApply(e.admin, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "del-" + p}})
			return request{"DELETE", "/api/v1/objects/profiles/del-" + p, nil}
		}, want: allow("admin", "operator")},
		{name: "delete user", req: func(p string) request {
			e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "del-" + p}, Role: api.RoleViewer, Password: "long-enough-pw"})
			return request{"DELETE", "/api/v1/objects/users/del-" + p, nil}
		}, want: allow("admin")},
		{name: "delete token", req: func(p string) request {
			lr, err := e.client("").Login(ctx, "viewy", "pw-viewy-12345", "")
			if err != nil {
				t.Fatal(err)
			}
			return request{"DELETE", "/api/v1/objects/tokens/" + tokenID(lr.Token), nil}
		}, want: allow("admin")},
		{name: "action commission", req: func(p string) request {
			e.mustApply(e.admin, &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "act-" + p}})
			return request{"POST", "/api/v1/actions/commission", api.ActionRequest{Nodes: "act-" + p, Workflow: "wf"}}
		}, want: allow("admin", "operator")},
		{name: "job log", req: fixed("GET", "/api/v1/jobs/"+job1+"/log", nil), want: allow("admin", "operator", "viewer")},
		{name: "events", req: fixed("GET", "/api/v1/events", nil), want: allow("admin", "operator", "viewer")},
		{name: "create join token", req: fixed("POST", "/api/v1/join-tokens", api.JoinTokenRequest{TTL: "1h"}), want: allow("admin", "operator")},
		{name: "register with a session token", req: fixed("POST", "/api/v1/agent/register", api.RegisterRequest{Name: "reg", AgentID: "agent-id-0000000000000099"}),
			// Only a join token registers; every other credential is not one.
			want: with(with(with(with(allow("jointoken"), "admin", 401), "operator", 401), "viewer", 401), "agent", 401)},
		{name: "heartbeat", req: fixed("POST", "/api/v1/agent/heartbeat", nil), want: allow("agent")},
		{name: "agent machine", req: fixed("GET", "/api/v1/agent/machine", nil), want: allow("agent"),
			check: func(t *testing.T, p string, body []byte) {
				var m api.Machine
				if err := json.Unmarshal(body, &m); err != nil || m.Name != "m1" {
					t.Errorf("agent machine: %s (%v)", body, err)
				}
			}},
		{name: "next job", req: fixed("POST", "/api/v1/agent/jobs/next", api.NextJobRequest{Running: job1, Wait: "0s"}), want: allow("agent")},
		{name: "append own job log", req: fixed("POST", "/api/v1/agent/jobs/"+job1+"/log", []byte("hello from m1\n")), want: allow("agent")},
		{name: "append other machine's job log", req: fixed("POST", "/api/v1/agent/jobs/"+job2+"/log", []byte("forged\n")), want: allow()},
		{name: "complete other machine's job", req: fixed("POST", "/api/v1/agent/jobs/"+job2+"/complete", api.JobResult{ExitCode: 0}), want: allow()},
		{name: "complete unknown job", req: fixed("POST", "/api/v1/agent/jobs/no-such-job/complete", api.JobResult{ExitCode: 0}), want: with(allow(), "agent", 404)},
		{name: "complete own job", req: fixed("POST", "/api/v1/agent/jobs/"+job1+"/complete", api.JobResult{ExitCode: 0}), want: allow("agent")},
		{name: "unknown endpoint", req: fixed("GET", "/api/v1/nope", nil), want: map[string]int{"admin": 404, "operator": 404, "viewer": 404, "agent": 404, "expired": 404, "garbage": 404, "jointoken": 404, "none": 404}},
	}

	var bodies bytes.Buffer
	for _, r := range rows {
		for _, p := range principals {
			want, ok := r.want[p]
			if !ok {
				t.Fatalf("%s: no expectation for %s", r.name, p)
			}
			req := r.req(p)
			audits := e.auditCount()
			status, body := e.send(tokens[p], req)
			bodies.Write(body)
			ok = status == want || (want == 200 && status >= 200 && status < 300)
			if !ok {
				t.Errorf("%s as %s: %s %s = %d, want %d: %s", r.name, p, req.method, req.path, status, want, body)
				continue
			}
			if status >= 400 {
				var ae api.Error
				if err := json.Unmarshal(body, &ae); err != nil || ae.Message == "" || ae.Code == "" {
					t.Errorf("%s as %s: error body is not {error, code}: %s", r.name, p, body)
				}
				if p == "expired" && status == 401 && !strings.Contains(req.path, "/agent/register") && ae.Code != "token_expired" {
					t.Errorf("%s as expired: code %q, want token_expired", r.name, ae.Code)
				}
				if status == 401 || status == 403 {
					if n := e.auditCount(); n != audits {
						t.Errorf("%s as %s: refused, yet %d audit entries were written", r.name, p, n-audits)
					}
				}
			}
			if r.check != nil && status < 300 {
				r.check(t, p, body)
			}
		}
	}

	// The forged log line never reached m2's job, and m2's job still runs.
	var j2 api.Job
	if err := e.admin.Get(ctx, "jobs", job2, &j2); err != nil || j2.State != api.JobRunning {
		t.Errorf("job %s of m2: %+v %v; want still running", job2, j2, err)
	}
	var log2 bytes.Buffer
	if _, err := e.admin.JobLog(ctx, job2, 0, false, &log2); err != nil || strings.Contains(log2.String(), "forged") {
		t.Errorf("m2's job log: %q %v", log2.String(), err)
	}
	var log1 bytes.Buffer
	if _, err := e.admin.JobLog(ctx, job1, 0, false, &log1); err != nil || !strings.Contains(log1.String(), "hello from m1") {
		t.Errorf("m1's job log: %q %v", log1.String(), err)
	}
	checkNoHashes(t, e, bodies.String())
}

// checkNoHashes fails if any password hash or token secret hash held in the
// store shows up in out.
func checkNoHashes(t *testing.T, e *env, out string) {
	t.Helper()
	for _, bad := range []string{"passwordHash", "secretHash", "$2a$", "$2b$"} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q", bad)
		}
	}
	var hashes []string
	for _, kind := range []string{api.KindUser, api.KindToken, api.KindJoinToken} {
		recs, _, err := e.srv.Store().List(context.Background(), kind, store.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			obj, err := model.DecodeNew(rec)
			if err != nil {
				t.Fatal(err)
			}
			switch o := obj.(type) {
			case *api.User:
				hashes = append(hashes, o.PasswordHash)
			case *api.Token:
				hashes = append(hashes, o.SecretHash)
			case *api.JoinToken:
				hashes = append(hashes, o.SecretHash)
			}
		}
	}
	if len(hashes) < 3 {
		t.Fatalf("only %d hashes in the store", len(hashes))
	}
	for _, h := range hashes {
		if h == "" {
			t.Errorf("a stored credential has no hash")
			continue
		}
		if strings.Contains(out, h) {
			t.Errorf("output contains a stored hash %q", h)
		}
	}
}

// Every kind's list, get and event output as admin carries no hash.
func TestNoHashesInOutput(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	e.user("viewy", api.RoleViewer)
	e.agent("m1")
	if _, err := e.admin.CreateJoinToken(ctx, "1h", nil); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, k := range model.Kinds() {
		status, body := e.send(e.admin.Token, request{"GET", "/api/v1/objects/" + k.Plural, nil})
		if status != 200 {
			t.Fatalf("list %s: %d %s", k.Plural, status, body)
		}
		out.Write(body)
		var l api.List
		if err := json.Unmarshal(body, &l); err != nil {
			t.Fatal(err)
		}
		for _, it := range l.Items {
			var m api.Meta
			_ = json.Unmarshal(it, &m)
			status, body := e.send(e.admin.Token, request{"GET", "/api/v1/objects/" + k.Plural + "/" + m.Name, nil})
			if status != 200 {
				t.Fatalf("get %s %s: %d %s", k.Plural, m.Name, status, body)
			}
			out.Write(body)
		}
	}
	// Replay the whole history as events.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	end := e.rev()
	_, err := e.admin.Watch(wctx, 1, nil, func(ev api.Event) error {
		b, _ := json.Marshal(ev)
		out.Write(b)
		if ev.Revision >= end {
			cancel()
		}
		return nil
	})
	if err != nil && wctx.Err() == nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"kind":"Token"`) || !strings.Contains(out.String(), `"kind":"User"`) {
		t.Fatal("the output saw no users or tokens; the test is not testing anything")
	}
	checkNoHashes(t, e, out.String())
}

func TestDisabledOrDeletedUserLosesSessionAtOnce(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	bob := e.user("bob", api.RoleOperator)
	if _, err := bob.List(ctx, "machines", ""); err != nil {
		t.Fatalf("bob before: %v", err)
	}
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "bob"}, Role: api.RoleOperator, Disabled: true})
	_, err := bob.List(ctx, "machines", "")
	apiErr(t, err, 401)
	if _, err := e.client("").Login(ctx, "bob", "pw-bob-12345", ""); err == nil {
		t.Fatal("a disabled user logged in")
	}
	// Enabled again, bob logs in anew; the old session stays dead.
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "bob"}, Role: api.RoleOperator})
	_, err = bob.List(ctx, "machines", "")
	apiErr(t, err, 401)
	if _, err := e.login("bob", "pw-bob-12345").List(ctx, "machines", ""); err != nil {
		t.Fatalf("bob enabled again: %v", err)
	}

	carol := e.user("carol", api.RoleAdmin)
	if _, err := carol.List(ctx, "users", ""); err != nil {
		t.Fatalf("carol before: %v", err)
	}
	if err := e.admin.Delete(ctx, "users", "carol"); err != nil {
		t.Fatal(err)
	}
	_, err = carol.List(ctx, "machines", "")
	apiErr(t, err, 401)
	// A new user of the same name must not inherit the old sessions.
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "carol"}, Role: api.RoleAdmin, Password: "another-password"})
	_, err = carol.List(ctx, "machines", "")
	apiErr(t, err, 401)

	// A role change applies to existing sessions at once.
	dave := e.user("dave", api.RoleAdmin)
	if _, err := dave.List(ctx, "users", ""); err != nil {
		t.Fatal(err)
	}
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "dave"}, Role: api.RoleViewer})
	_, err = dave.List(ctx, "users", "")
	apiErr(t, err, 403)

	// Deleting a session token ends it.
	erin := e.user("erin", api.RoleViewer)
	if err := e.admin.Delete(ctx, "tokens", tokenID(erin.Token)); err != nil {
		t.Fatal(err)
	}
	_, err = erin.List(ctx, "machines", "")
	apiErr(t, err, 401)
}

func TestDeletedMachineLosesAgentToken(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	ag := e.agent("m1")
	if err := ag.Do(ctx, "POST", "/api/v1/agent/heartbeat", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Delete(ctx, "machines", "m1"); err != nil {
		t.Fatal(err)
	}
	err := ag.Do(ctx, "POST", "/api/v1/agent/heartbeat", nil, nil)
	apiErr(t, err, 401)
}

func TestAuditEntriesForWrites(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	op := e.user("oper", api.RoleOperator)
	e.mustApply(e.admin,
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "t1"}, Script: "true"},
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "wf"}, Tasks: []string{"t1"}},
		&api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"}},
	)
	before := time.Now().Add(-time.Second)
	e.mustApply(op, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1"}})
	e.mustApply(op, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "p1"}, Params: map[string]json.RawMessage{"a": json.RawMessage(`1`)}})
	if err := op.Delete(ctx, "profiles", "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Action(ctx, "commission", "n1", "wf"); err != nil {
		t.Fatal(err)
	}
	jt, err := op.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "zed"}, Role: api.RoleViewer, Password: "zed-password"})
	after := time.Now().Add(time.Second)

	l, err := e.admin.List(ctx, "audit", "")
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ user, action, target string }
	got := map[key]api.Audit{}
	for _, it := range l.Items {
		var a api.Audit
		if err := json.Unmarshal(it, &a); err != nil {
			t.Fatal(err)
		}
		got[key{a.User, a.Action, a.Target}] = a
	}
	for _, k := range []key{
		{"oper", "created", "Profile/p1"},
		{"oper", "updated", "Profile/p1"},
		{"oper", "deleted", "Profile/p1"},
		{"oper", "commission", "machines/n1"},
		{"oper", "created", "JoinToken/" + jt.Name},
		{"admin", "created", "User/zed"},
	} {
		a, ok := got[k]
		if !ok {
			t.Errorf("no audit entry %+v; have %v", k, got)
			continue
		}
		if a.Time.Before(before) || a.Time.After(after) {
			t.Errorf("audit %+v: time %v outside the test", k, a.Time)
		}
	}
	// Audit entries are not writable through the API, even by an admin.
	var a0 api.Audit
	_ = json.Unmarshal(l.Items[0], &a0)
	apiErr(t, e.admin.Delete(ctx, "audit", a0.Name), 403)
	_, err = e.admin.ApplyObjects(ctx, &api.Audit{Meta: api.Meta{Kind: api.KindAudit, Name: "forged"}, User: "someone"})
	apiErr(t, err, 400)
}

// A session of a user who was removed behind the API's back (so its tokens
// stayed) does not pass for a new user of the same name.
func TestTokenOlderThanItsUserIsRefused(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	old := e.user("frank", api.RoleAdmin)
	if _, err := store.Delete(ctx, e.srv.Store(), api.KindUser, "frank", 0); err != nil {
		t.Fatal(err)
	}
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: "frank"}, Role: api.RoleAdmin, Password: "new-frank-password"})
	if _, err := e.srv.Store().Get(ctx, api.KindToken, tokenID(old.Token)); err != nil {
		t.Fatalf("the old token should still be stored for this test: %v", err)
	}
	_, err := old.List(ctx, "users", "")
	apiErr(t, err, 401)
	if _, err := e.login("frank", "new-frank-password").List(ctx, "users", ""); err != nil {
		t.Errorf("the new frank: %v", err)
	}
}

// What the API shows about a machine's agent is not enough to register as
// that agent: with a join token and read access one must not get another
// machine's credential (and with it the machine's jobs and secrets).
func TestAgentIdentityCannotBeTakenFromTheAPI(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	victim := e.agent("m1")
	viewer := e.user("viewy", api.RoleViewer)
	var m api.Machine
	if err := viewer.Get(ctx, "machines", "m1", &m); err != nil {
		t.Fatal(err)
	}
	if m.Status.AgentID == "" {
		t.Skip("the API shows no agent identity")
	}
	jt, err := e.admin.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	// An attacker on other hardware claims the identity it read, as shown
	// and without a "kind:" prefix.
	shown := m.Status.AgentID
	claims := []string{shown}
	if _, rest, ok := strings.Cut(shown, ":"); ok {
		claims = append(claims, rest)
	}
	for _, id := range claims {
		req := api.RegisterRequest{Name: "m1", AgentID: id, Inventory: inventory.Simulated("evil", 424242)}
		var resp api.RegisterResponse
		err = e.client(jt.Token).Do(ctx, http.MethodPost, "/api/v1/agent/register", req, &resp)
		if err == nil {
			t.Fatalf("registered as m1 with agent ID %q from the API; got a credential for %s", id, resp.Machine)
		}
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status < 400 || ae.Status >= 500 {
			t.Errorf("claiming %q: %v", id, err)
		}
	}
	if err := victim.Do(ctx, http.MethodPost, "/api/v1/agent/heartbeat", nil, nil); err != nil {
		t.Errorf("the real agent lost its credential: %v", err)
	}

	// The real agent, registering again with its own ID, gets its machine
	// back, and its previous credential stops working.
	own := api.RegisterRequest{Name: "m2", AgentID: "own-agent-id-0123456789", Inventory: inventory.Simulated("m2", 77)}
	var first, second api.RegisterResponse
	if err := e.client(jt.Token).Do(ctx, http.MethodPost, "/api/v1/agent/register", own, &first); err != nil {
		t.Fatal(err)
	}
	if err := e.client(jt.Token).Do(ctx, http.MethodPost, "/api/v1/agent/register", own, &second); err != nil {
		t.Fatalf("registering again with its own ID: %v", err)
	}
	if err := e.client(second.Token).Do(ctx, http.MethodPost, "/api/v1/agent/heartbeat", nil, nil); err != nil {
		t.Errorf("new credential: %v", err)
	}
	apiErr(t, e.client(first.Token).Do(ctx, http.MethodPost, "/api/v1/agent/heartbeat", nil, nil), 401)
	if strings.Contains(string(e.storeRecord(api.KindMachine, "m2").Data), own.AgentID) {
		t.Error("the agent ID is stored in clear")
	}
}
