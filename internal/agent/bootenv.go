package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/drover-project/drover/api"
)

// caFile is where the agent keeps the CA it trusts, for the tasks it runs
// (DROVER_CA_CERT).
const caFile = "ca.pem"

// SetBootEnv sets the boot environment of the machine whose agent keeps
// its state in stateDir, with that agent's own credential: a task runs
// `drover agent boot-env ENV` (the agent gives tasks DROVER_STATE_DIR,
// DROVER_ENDPOINT and DROVER_CA_CERT). It returns once the boot server
// serves the new environment, so the task can reboot the machine next.
func SetBootEnv(ctx context.Context, endpoint string, caPEM []byte, stateDir, bootEnv string) (*api.SetBootEnvResponse, error) {
	if stateDir == "" {
		return nil, errors.New("--state-dir is required (tasks have it as $DROVER_STATE_DIR)")
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "agent.json"))
	if err != nil {
		return nil, fmt.Errorf("agent state: %w (is %s the state dir of a registered agent?)", err, stateDir)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || st.Token == "" {
		return nil, fmt.Errorf("agent state %s holds no credential: the agent has not registered yet", filepath.Join(stateDir, "agent.json"))
	}
	if endpoint == "" {
		endpoint = st.Endpoint
	}
	if len(caPEM) == 0 {
		caPEM, _ = os.ReadFile(filepath.Join(stateDir, caFile))
	}
	c, err := api.NewClient(endpoint, caPEM, st.Token)
	if err != nil {
		return nil, err
	}
	var resp api.SetBootEnvResponse
	if err := c.Do(ctx, http.MethodPost, "/api/v1/agent/boot-env", api.SetBootEnvRequest{BootEnv: bootEnv}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
