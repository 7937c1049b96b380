package model

import (
	"testing"

	"github.com/drover-project/drover/api"
)

func TestBuiltinParams(t *testing.T) {
	got := BuiltinParams()
	want := []string{"commission/workflow", "deploy/workflow", "upgrade/workflow", "decommission/workflow", "verify/workflow"}
	if len(got) != len(want) {
		t.Fatalf("BuiltinParams = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("BuiltinParams[%d] = %q, want %q", i, got[i], want[i])
		}
		if !IsBuiltinParam(want[i]) {
			t.Errorf("IsBuiltinParam(%q) = false", want[i])
		}
		if err := ValidateParamName(got[i]); err != nil {
			t.Error(err)
		}
	}
	for _, name := range []string{"commission", "role", "workflow", "commission/workflow/x", "burnin/workflow"} {
		if IsBuiltinParam(name) {
			t.Errorf("IsBuiltinParam(%q) = true", name)
		}
	}
	if WorkflowParam(api.ActionVerify) != "verify/workflow" {
		t.Errorf("WorkflowParam(verify) = %q", WorkflowParam(api.ActionVerify))
	}
}
