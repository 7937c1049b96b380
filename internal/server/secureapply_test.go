package server

import (
	"encoding/json"
	"testing"

	"github.com/drover-project/drover/api"
)

// Re-applying the same secret is "unchanged" (no new revision, no event);
// a different one is an update.
func TestReapplySameSecretIsUnchanged(t *testing.T) {
	e := startServer(t, nil)
	decl := &api.Param{Meta: api.Meta{Kind: api.KindParam, Name: "bmc/password"}, Type: "string", Secure: true}
	prof := func(v string) *api.Profile {
		return &api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: "rack1"}, Params: map[string]json.RawMessage{"bmc/password": json.RawMessage(v)}}
	}
	e.mustApply(e.admin, decl, prof(`"s3cret"`))
	rev := e.rev()
	res := e.mustApply(e.admin, decl, prof(`  "s3cret" `))
	for _, r := range res.Results {
		if r.Action != "unchanged" {
			t.Fatalf("re-apply of the same secret: %s %s %s", r.Kind, r.Name, r.Action)
		}
	}
	if e.rev() != rev {
		t.Fatalf("re-apply of the same secret wrote (revision %d -> %d)", rev, e.rev())
	}
	res = e.mustApply(e.admin, prof(`"other"`))
	if res.Results[0].Action != "updated" {
		t.Fatalf("a new secret: %+v", res.Results[0])
	}
}
