package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/content"
	"golang.org/x/crypto/bcrypt"
)

func mustPack(t *testing.T, yaml string) *content.Pack {
	t.Helper()
	p, err := content.Parse("pack.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("parse pack: %v", err)
	}
	return p
}

func (e *env) push(c *api.Client, p *content.Pack) (*api.ContentPushResponse, error) {
	var resp api.ContentPushResponse
	err := c.Do(context.Background(), http.MethodPost, "/api/v1/content", p, &resp)
	return &resp, err
}

func (e *env) source(kind, name string) (string, bool) {
	e.t.Helper()
	var obj struct {
		Source string `json:"source"`
		Script string `json:"script"`
	}
	err := e.admin.Get(context.Background(), kind, name, &obj)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return "", false
		}
		e.t.Fatalf("get %s %s: %v", kind, name, err)
	}
	return obj.Source + "|" + obj.Script, true
}

const packV1 = `kind: ContentPack
name: site
version: 1.0.0
description: site tasks
---
kind: Param
name: greeting
type: string
default: hello
---
kind: Task
name: hello
script: echo {{ param "greeting" }} v1
---
kind: Task
name: old
script: echo old
---
kind: Workflow
name: hello
tasks: [hello, old]
`

const packV2 = `kind: ContentPack
name: site
version: 1.1.0
---
kind: Param
name: greeting
type: string
default: hello
---
kind: Task
name: hello
script: echo {{ param "greeting" }} v2
---
kind: Task
name: new
script: echo new
---
kind: Workflow
name: hello
tasks: [hello, new]
`

// A pack installs all its objects with their source; a user's object of
// the same name overrides the pack's and survives upgrades; deleting the
// override brings the pack's back; a pack's object cannot be deleted on
// its own; an upgrade records what changed and drops what the new version
// no longer has.
func TestContentPackLayers(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	resp, err := e.push(e.admin, mustPack(t, packV1))
	if err != nil {
		t.Fatalf("push v1: %v", err)
	}
	if resp.Version != "1.0.0" || len(resp.Changes.Added) != 4 {
		t.Fatalf("push v1 = %+v", resp)
	}
	if got, _ := e.source("tasks", "hello"); got != `pack:site@1.0.0|echo {{ param "greeting" }} v1` {
		t.Fatalf("task hello after v1 = %q", got)
	}
	// Pushing the same pack again changes nothing.
	rev := e.rev()
	if resp, err := e.push(e.admin, mustPack(t, packV1)); err != nil || !resp.Unchanged || e.rev() != rev {
		t.Fatalf("push v1 again: %+v, %v, revision %d -> %d", resp, err, rev, e.rev())
	}

	// Override a task.
	ar := e.mustApply(e.admin, &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "old", Source: "pack:forged@9.9.9"}, Script: "echo mine"})
	if ar.Results[0].Action != "overridden" {
		t.Fatalf("applying over a pack's task: %+v", ar.Results[0])
	}
	if got, _ := e.source("tasks", "old"); got != "|echo mine" {
		t.Fatalf("override = %q (the source a user sends must be ignored)", got)
	}
	// A pack's object cannot be deleted on its own.
	err = e.admin.Delete(ctx, "tasks", "hello")
	if ae := apiErr(t, err, http.StatusConflict); ae.Code != "from_pack" || !strings.Contains(ae.Message, "site@1.0.0") {
		t.Fatalf("delete of a pack's task: %v", err)
	}

	// Override hello too: an upgrade must keep it.
	e.mustApply(e.admin, &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "hello"}, Script: "echo local"})

	// Upgrade: hello changes, new is added, old goes from the pack but the
	// user's override of it stays.
	resp, err = e.push(e.admin, mustPack(t, packV2))
	if err != nil {
		t.Fatalf("push v2: %v", err)
	}
	if strings.Join(resp.Overridden, ",") != "Task/hello" {
		t.Fatalf("push v2 says overridden %v, want Task/hello", resp.Overridden)
	}
	if got, _ := e.source("tasks", "hello"); got != "|echo local" {
		t.Fatalf("the user's hello after an upgrade = %q", got)
	}
	if err := e.admin.Delete(ctx, "tasks", "hello"); err != nil {
		t.Fatalf("delete override: %v", err)
	}
	want := api.PackChanges{Added: []string{"Task/new"}, Changed: []string{"Task/hello", "Workflow/hello"}, Removed: []string{"Task/old"}}
	if resp.PreviousVersion != "1.0.0" || strings.Join(resp.Changes.Added, ",") != strings.Join(want.Added, ",") ||
		strings.Join(resp.Changes.Changed, ",") != strings.Join(want.Changed, ",") || strings.Join(resp.Changes.Removed, ",") != strings.Join(want.Removed, ",") {
		t.Fatalf("push v2 = %+v, want changes %+v", resp, want)
	}
	if got, _ := e.source("tasks", "hello"); got != `pack:site@1.1.0|echo {{ param "greeting" }} v2` {
		t.Fatalf("task hello after v2 = %q", got)
	}
	if got, _ := e.source("tasks", "old"); got != "|echo mine" {
		t.Fatalf("the user's task old after v2 dropped it = %q", got)
	}
	var cp api.ContentPack
	if err := e.admin.Get(ctx, "contentpacks", "site", &cp); err != nil {
		t.Fatal(err)
	}
	if cp.Version != "1.1.0" || cp.Status.PreviousVersion != "1.0.0" || len(cp.Status.Changes.Changed) != 2 {
		t.Fatalf("stored pack = %+v", cp.Status)
	}

	// Override hello, push v2 again (unchanged), then delete the override:
	// the pack's hello is back.
	e.mustApply(e.admin, &api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "hello"}, Script: "echo local"})
	if got, _ := e.source("tasks", "hello"); got != "|echo local" {
		t.Fatalf("override of hello = %q", got)
	}
	if err := e.admin.Delete(ctx, "tasks", "hello"); err != nil {
		t.Fatalf("delete override: %v", err)
	}
	if got, _ := e.source("tasks", "hello"); got != `pack:site@1.1.0|echo {{ param "greeting" }} v2` {
		t.Fatalf("task hello after deleting the override = %q", got)
	}
	// A user's object no pack provides is deleted as usual.
	if err := e.admin.Delete(ctx, "tasks", "old"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.source("tasks", "old"); ok {
		t.Fatal("task old still there after delete")
	}
}

// Removing a pack is refused while something that stays uses its objects,
// naming each user; once free, it goes with its objects and leaves users'
// overrides as their own.
func TestContentPackRemove(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	if _, err := e.push(e.admin, mustPack(t, packV1)); err != nil {
		t.Fatal(err)
	}
	e.mustApply(e.admin,
		&api.Workflow{Meta: api.Meta{Kind: api.KindWorkflow, Name: "mine"}, Tasks: []string{"hello"}},
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "global"}, Params: map[string]json.RawMessage{"deploy/workflow": json.RawMessage(`"hello"`)}},
		&api.Task{Meta: api.Meta{Kind: api.KindTask, Name: "old"}, Script: "echo mine"},
	)
	rev := e.rev()
	err := e.admin.Do(ctx, http.MethodDelete, "/api/v1/content/site", nil, nil)
	ae := apiErr(t, err, http.StatusConflict)
	for _, want := range []string{`Workflow "mine" uses Task "hello"`, `Profile "global" sets deploy/workflow to Workflow "hello"`} {
		if !strings.Contains(ae.Message, want) {
			t.Errorf("refusal does not say %q: %s", want, ae.Message)
		}
	}
	if e.rev() != rev {
		t.Fatalf("a refused removal wrote (revision %d -> %d)", rev, e.rev())
	}
	if err := e.admin.Delete(ctx, "workflows", "mine"); err != nil {
		t.Fatal(err)
	}
	e.mustApply(e.admin, &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "global"}})
	if err := e.admin.Do(ctx, http.MethodDelete, "/api/v1/content/site", nil, nil); err != nil {
		t.Fatalf("remove: %v", err)
	}
	for _, o := range []struct{ kind, name string }{{"tasks", "hello"}, {"workflows", "hello"}, {"params", "greeting"}, {"contentpacks", "site"}} {
		if _, ok := e.source(o.kind, o.name); ok {
			t.Errorf("%s %s still there after removing its pack", o.kind, o.name)
		}
	}
	if got, _ := e.source("tasks", "old"); got != "|echo mine" {
		t.Errorf("the user's override after removing the pack = %q", got)
	}
	err = e.admin.Do(ctx, http.MethodDelete, "/api/v1/content/site", nil, nil)
	apiErr(t, err, http.StatusNotFound)
}

// A bad pack is refused with every problem and its file and line, and
// nothing is written; so is a pack providing another pack's object, a
// pack whose requirement is not met, and a push by a viewer.
func TestContentPackRefusals(t *testing.T) {
	e := startServer(t, nil)
	if _, err := e.push(e.admin, mustPack(t, packV1)); err != nil {
		t.Fatal(err)
	}
	rev := e.rev()
	cases := []struct {
		name   string
		pack   string
		status int
		want   []string
	}{
		{"broken template", `kind: ContentPack
name: other
version: 1.0.0
---
kind: Task
name: broken
script: |
  echo ok
  echo {{ if }}
---
kind: Workflow
name: w
tasks: [broken, missing]
`, http.StatusUnprocessableEntity, []string{`pack.yaml:9: Task "broken": script`, `pack.yaml:13: Workflow "w": tasks[1]`, `"missing"`}},
		{"clash", `kind: ContentPack
name: other
version: 1.0.0
---
kind: Task
name: hello
script: echo
`, http.StatusConflict, []string{`pack.yaml:5: Task "hello" is already provided by content pack "site"`}},
		{"requirement", `kind: ContentPack
name: other
version: 1.0.0
requires:
  - name: site
    version: ">=2.0.0"
---
kind: Task
name: t2
script: echo
`, http.StatusUnprocessableEntity, []string{`site`, `>=2.0.0`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.push(e.admin, mustPack(t, tc.pack))
			ae := apiErr(t, err, tc.status)
			for _, w := range tc.want {
				if !strings.Contains(ae.Message, w) {
					t.Errorf("error does not say %q:\n%s", w, ae.Message)
				}
			}
			if e.rev() != rev {
				t.Fatalf("a refused pack wrote (revision %d -> %d)", rev, e.rev())
			}
		})
	}
	viewer := e.user("vic", api.RoleViewer)
	_, err := e.push(viewer, mustPack(t, packV2))
	apiErr(t, err, http.StatusForbidden)
	if e.rev() == rev {
		t.Log("ok")
	}
	// A body that is not a pack.
	code, body := e.raw(e.admin.Token, http.MethodPost, "/api/v1/content", "application/json", []byte(`{"name":"x","bogus":1}`))
	if code != http.StatusBadRequest || !strings.Contains(string(body), "bogus") {
		t.Fatalf("unknown field: %d %s", code, body)
	}
}

// The built-in pack is installed at first start, left alone on a restart,
// and its objects say where they come from.
func TestBuiltinContent(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0", AdminPassword: testAdminPassword, PasswordHashCost: bcrypt.MinCost,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	revs := make([]int64, 2)
	for i := range revs {
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		revs[i], _ = s.Store().Revision(context.Background())
		s.Close()
	}
	if revs[0] != revs[1] {
		t.Fatalf("a restart wrote to the store: revision %d -> %d", revs[0], revs[1])
	}
	e := startServer(t, func(c *Config) { c.DataDir = dir; c.NoDefaultContent = false })
	var cp api.ContentPack
	if err := e.admin.Get(context.Background(), "contentpacks", content.DefaultName, &cp); err != nil {
		t.Fatalf("built-in pack: %v", err)
	}
	if !cp.Status.Builtin || cp.Status.InstalledBy != "drover" || cp.Version != content.Default().Version {
		t.Fatalf("built-in pack = %s %+v", cp.Version, cp.Status)
	}
	got, ok := e.source("workflows", "commission")
	if !ok || !strings.HasPrefix(got, "pack:"+content.DefaultName+"@") {
		t.Fatalf("workflow commission = %q", got)
	}
}

// A drover binary with a newer built-in pack upgrades the installed one at
// start; an older or equal one leaves it alone.
func TestBuiltinContentUpgradesAtStart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0", AdminPassword: testAdminPassword, PasswordHashCost: bcrypt.MinCost,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoDefaultContent: true}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := mustPack(t, "kind: ContentPack\nname: "+content.DefaultName+"\nversion: 0.9.0\n---\nkind: Task\nname: retired\nscript: echo old\n")
	if _, err := s.installPack(context.Background(), systemPrincipal, old, true); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cfg.NoDefaultContent = false
	s, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	installed, err := s.installedPacks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cp := installed[content.DefaultName]
	if cp == nil || cp.Version != content.Default().Version || cp.Status.PreviousVersion != "0.9.0" {
		t.Fatalf("after start: %+v", cp)
	}
	if _, err := s.Store().Get(context.Background(), "Task", "retired"); err == nil {
		t.Fatal("the task only the old built-in pack had is still there")
	}
	if !strings.Contains(strings.Join(cp.Status.Changes.Removed, ","), "Task/retired") {
		t.Fatalf("changes = %+v", cp.Status.Changes)
	}
}
