package model

import (
	"fmt"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/labels"
)

// MaxPauseBetween bounds a rollout's pause between batches.
const MaxPauseBetween = 24 * time.Hour

// RolloutActions are the lifecycle actions a rollout may run.
var RolloutActions = []string{api.ActionCommission, api.ActionDeploy, api.ActionUpgrade, api.ActionDecommission}

// ValidateRolloutSettings checks the batch settings of a rollout or a
// policy, naming the field (as in YAML) that is wrong.
func ValidateRolloutSettings(batchSize, maxUnavailable, maxFailures int, pauseBetween string) error {
	for _, f := range []struct {
		name string
		v    int
	}{{"batchSize", batchSize}, {"maxUnavailable", maxUnavailable}, {"maxFailures", maxFailures}} {
		if f.v < 0 {
			return fieldErr(f.name, "%d is negative (0 means no limit)", f.v)
		}
	}
	if _, err := ParsePauseBetween(pauseBetween); err != nil {
		return &FieldError{Field: "pauseBetween", Err: err}
	}
	return nil
}

// ParsePauseBetween reads a pause between batches ("" is none).
func ParsePauseBetween(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > MaxPauseBetween {
		return 0, fmt.Errorf("%q is not a duration between 0s and %s (for example 30s or 5m)", s, MaxPauseBetween)
	}
	return d, nil
}

func validatePolicy(p *api.Policy) error {
	// Status is drover's: what a user writes there is dropped.
	p.Status = api.PolicyStatus{}
	switch p.Type {
	case api.PolicyAutoCommission, api.PolicyAutoUpgrade:
	case "":
		return fieldErr("type", "missing type (use %s or %s)", api.PolicyAutoCommission, api.PolicyAutoUpgrade)
	default:
		return fieldErr("type", "unknown policy type %q (use %s or %s)", p.Type, api.PolicyAutoCommission, api.PolicyAutoUpgrade)
	}
	if p.Selector != "" {
		if _, err := labels.Parse(p.Selector); err != nil {
			return &FieldError{Field: "selector", Err: err}
		}
	}
	if p.Workflow != "" {
		if err := ValidateName(p.Workflow); err != nil {
			return &FieldError{Field: "workflow", Err: err}
		}
	}
	maxFailures := 0
	if p.MaxFailures != nil {
		maxFailures = *p.MaxFailures
	}
	return ValidateRolloutSettings(p.BatchSize, p.MaxUnavailable, maxFailures, p.PauseBetween)
}
