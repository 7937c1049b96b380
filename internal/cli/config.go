package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-project/drover/api"
	"github.com/spf13/cobra"
)

// clientConfig is what `drover login` saves.
type clientConfig struct {
	Endpoint string `json:"endpoint"`
	CACert   string `json:"caCert,omitempty"`
	Token    string `json:"token"`
	User     string `json:"user,omitempty"`
}

func configPath() string {
	if p := os.Getenv("DROVER_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "drover", "config.json")
}

func loadConfig() (clientConfig, error) {
	var c clientConfig
	b, err := os.ReadFile(configPath())
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", configPath(), err)
	}
	return c, nil
}

func saveConfig(c clientConfig) error {
	p := configPath()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return os.WriteFile(p, append(b, '\n'), 0o600)
}

func addClientFlags(cmd *cobra.Command) {
	cmd.Flags().String("endpoint", "", "endpoint URL (default $DROVER_ENDPOINT or the saved login)")
	cmd.Flags().String("ca-cert", "", "CA certificate to trust (default $DROVER_CA_CERT or the saved login)")
}

// endpointFlags gives --endpoint and --ca-cert, each falling back to
// DROVER_ENDPOINT and DROVER_CA_CERT.
func endpointFlags(cmd *cobra.Command) (endpoint, ca string) {
	endpoint, _ = cmd.Flags().GetString("endpoint")
	ca, _ = cmd.Flags().GetString("ca-cert")
	if endpoint == "" {
		endpoint = os.Getenv("DROVER_ENDPOINT")
	}
	if ca == "" {
		ca = os.Getenv("DROVER_CA_CERT")
	}
	return endpoint, ca
}

// client builds an API client: flags, then the environment
// (DROVER_ENDPOINT, DROVER_CA_CERT, DROVER_TOKEN or DROVER_USERNAME and
// DROVER_PASSWORD), then the config saved by `drover login`.
func client(cmd *cobra.Command) (*api.Client, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, err
	}
	endpoint, ca := endpointFlags(cmd)
	token := os.Getenv("DROVER_TOKEN")
	fromSaved := false
	if endpoint == "" {
		endpoint = cfg.Endpoint
		fromSaved = true
	}
	if ca == "" && (fromSaved || endpoint == cfg.Endpoint) {
		ca = cfg.CACert
	}
	if token == "" && endpoint == cfg.Endpoint {
		token = cfg.Token
	}
	if endpoint == "" {
		return nil, errors.New("no endpoint: run `drover login --endpoint URL --ca-cert FILE` or set DROVER_ENDPOINT")
	}
	c, err := api.NewClientFromFile(endpoint, ca, "")
	if err != nil {
		return nil, err
	}
	c.UseHTTP1()
	user, pass := os.Getenv("DROVER_USERNAME"), os.Getenv("DROVER_PASSWORD")
	if os.Getenv("DROVER_TOKEN") == "" && user != "" && pass != "" {
		resp, err := c.Login(cmd.Context(), user, pass, "1h")
		if err != nil {
			return nil, fmt.Errorf("login as %s: %w", user, err)
		}
		token = resp.Token
	}
	if token == "" {
		return nil, errors.New("not logged in: run `drover login` or set DROVER_TOKEN (or DROVER_USERNAME and DROVER_PASSWORD)")
	}
	c.Token = token
	return c, nil
}

func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
