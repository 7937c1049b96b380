package model

import "github.com/drover-project/drover/api"

// WorkflowParam names the param that chooses the workflow a lifecycle
// action runs when none is given: commission/workflow for commission.
func WorkflowParam(action string) string { return action + "/workflow" }

// lifecycleActions are the actions whose workflow a param chooses.
var lifecycleActions = []string{api.ActionCommission, api.ActionDeploy, api.ActionUpgrade, api.ActionDecommission, api.ActionVerify}

// BuiltinParams lists the params drover itself reads, which content may
// use without declaring them.
func BuiltinParams() []string {
	out := make([]string, 0, len(lifecycleActions))
	for _, a := range lifecycleActions {
		out = append(out, WorkflowParam(a))
	}
	return out
}

// IsBuiltinParam reports whether drover itself reads the param.
func IsBuiltinParam(name string) bool {
	for _, a := range lifecycleActions {
		if name == WorkflowParam(a) {
			return true
		}
	}
	return false
}
