package engine

import (
	"fmt"

	"github.com/drover-project/drover/api"
)

// transition is what an action does to a machine: the states it may start
// from, the state while it runs and the state it reaches on success.
type transition struct {
	from    []string
	during  string // "" keeps the state (verify)
	success string // "" keeps the state
	// hint says what to do when the machine is in a state not in from.
	hint map[string]string
}

var transitions = map[string]transition{
	api.ActionCommission: {
		from:    []string{api.StateDiscovered, api.StateReady, api.StateBroken, api.StateDecommissioned},
		during:  api.StateCommissioning,
		success: api.StateReady,
		hint: map[string]string{
			api.StateDeployed: "decommission it first",
		},
	},
	api.ActionDeploy: {
		from:    []string{api.StateReady},
		during:  api.StateDeploying,
		success: api.StateDeployed,
		hint: map[string]string{
			api.StateDiscovered:     "commission it first",
			api.StateDecommissioned: "commission it first",
			api.StateBroken:         "commission it again first",
			api.StateDeployed:       "it is deployed already; upgrade it instead",
		},
	},
	api.ActionUpgrade: {
		from:    []string{api.StateDeployed},
		during:  api.StateUpgrading,
		success: api.StateDeployed,
		hint: map[string]string{
			api.StateDiscovered: "commission and deploy it first",
			api.StateReady:      "deploy it first",
			api.StateBroken:     "commission it again first",
		},
	},
	api.ActionDecommission: {
		from:    []string{api.StateReady, api.StateDeployed, api.StateBroken, api.StateDiscovered},
		during:  api.StateDecommissioning,
		success: api.StateDecommissioned,
		hint: map[string]string{
			api.StateDecommissioned: "it is decommissioned already",
		},
	},
	api.ActionVerify: {
		from: []string{api.StateReady, api.StateDeployed},
		hint: map[string]string{
			api.StateDiscovered: "commission it first",
			api.StateBroken:     "commission it again first",
		},
	},
}

// Actions lists the lifecycle actions.
var Actions = []string{api.ActionCommission, api.ActionDeploy, api.ActionUpgrade, api.ActionDecommission, api.ActionVerify}

// TransitionError refuses an action in the machine's state.
type TransitionError struct {
	Machine, Action, State, Hint string
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("machine %q: cannot %s from state %s", e.Machine, e.Action, e.State)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// BusyError refuses an action on a machine that is running a workflow.
type BusyError struct {
	Machine, Run string
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("machine %q is busy with run %s (wait for it to finish)", e.Machine, e.Run)
}

func checkTransition(m *api.Machine, action string) (transition, error) {
	t, ok := transitions[action]
	if !ok {
		return t, fmt.Errorf("unknown action %q (use one of commission, deploy, upgrade, decommission, verify)", action)
	}
	if m.Status.Run != "" {
		return t, &BusyError{Machine: m.Name, Run: m.Status.Run}
	}
	for _, s := range t.from {
		if s == m.Status.State {
			return t, nil
		}
	}
	return t, &TransitionError{Machine: m.Name, Action: action, State: m.Status.State, Hint: t.hint[m.Status.State]}
}
