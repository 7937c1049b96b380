package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/agent"
	"github.com/pin/tftp/v3"
)

// TestBootServices runs the server with its HTTP boot and TFTP servers on
// loopback: a registered machine is found by its MAC, its bootEnv written
// through the API is what its next script boots, secure params reach its
// installer files decrypted, and the installer's last step switches it
// to local.
func TestBootServices(t *testing.T) {
	tftpDir, filesDir := t.TempDir(), t.TempDir()
	kpxe := bytes.Repeat([]byte("iPXE"), 20000)
	if err := os.WriteFile(filepath.Join(tftpDir, "undionly.kpxe"), kpxe, 0o644); err != nil {
		t.Fatal(err)
	}
	e := startServer(t, func(c *Config) {
		c.NoDefaultContent = false
		c.BootListen, c.BootAddress, c.BootFilesDir = "127.0.0.1:0", "127.0.0.1", filesDir
		c.TFTPListen, c.TFTPDir = "127.0.0.1:0", tftpDir
	})
	ctx := context.Background()
	boot := "http://" + e.srv.BootAddr()
	if e.srv.BootURL() != boot {
		t.Fatalf("boot URL %s, bound at %s", e.srv.BootURL(), boot)
	}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(boot + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	agentClient := e.agent("n1")
	var m api.Machine
	if err := e.admin.Get(ctx, api.KindMachine, "n1", &m); err != nil {
		t.Fatal(err)
	}
	mac := m.Status.Hardware.PrimaryMAC
	resp, body := get("/boot/" + mac + ".ipxe")
	if !strings.Contains(resp.Header.Get("X-Drover-Error"), `"agent/join-token"`) {
		t.Fatalf("without a join token: %v\n%s", resp.Header, body)
	}
	e.mustApply(e.admin,
		&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: api.GlobalProfile}, Params: map[string]json.RawMessage{
			"agent/join-token": json.RawMessage(`"drj_site_secret"`), "install/disk": json.RawMessage(`"/dev/vda"`),
			"install/root-password-hash": json.RawMessage(`"$6$salt$hash"`)}})
	resp, body = get("/boot/" + mac + ".ipxe")
	if resp.Header.Get("X-Drover-Boot-Env") != "discovery" || resp.Header.Get("X-Drover-Machine") != "n1" ||
		!strings.Contains(body, "drover.endpoint=https://"+e.srv.Addr()+" drover.join-token=drj_site_secret drover.ca-url="+boot+"/ca.pem") {
		t.Fatalf("discovery script: %v\n%s", resp.Header, body)
	}
	if _, ca := get("/ca.pem"); ca != string(e.srv.CACertPEM()) {
		t.Fatal("the CA served is not the server's")
	}

	// Each bootEnv applied through the API is the next script's.
	for _, env := range []string{"rocky-9-kickstart", "local", "debian-12-preseed", "rocky-9-kickstart"} {
		if err := e.admin.Get(ctx, api.KindMachine, "n1", &m); err != nil {
			t.Fatal(err)
		}
		m.BootEnv, m.Revision = env, 0
		e.mustApply(e.admin, &m)
		if resp, body := get("/boot/" + mac + ".ipxe"); resp.Header.Get("X-Drover-Boot-Env") != env {
			t.Fatalf("bootEnv %s applied, script of %q served:\n%s", env, resp.Header.Get("X-Drover-Boot-Env"), body)
		}
	}
	_, ks := get("/render/" + mac + "/ks.cfg")
	if !strings.Contains(ks, "rootpw --iscrypted $6$salt$hash\n") {
		t.Fatalf("ks.cfg:\n%s", ks)
	}
	_, post := get("/render/" + mac + "/post-install.sh")
	found := regexp.MustCompile(`url='(http://[^']+/local)'\nauth='Authorization: Bearer ([A-Za-z0-9_-]+)'`).FindStringSubmatch(post)
	if found == nil || !strings.Contains(post, "DROVER_JOIN_TOKEN=drj_site_secret\n") {
		t.Fatalf("post-install.sh:\n%s", post)
	}
	req, _ := http.NewRequest("POST", found[1], nil)
	req.Header.Set("Authorization", "Bearer "+found[2])
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if err := e.admin.Get(ctx, api.KindMachine, "n1", &m); err != nil || r.StatusCode != http.StatusOK || m.BootEnv != api.BootEnvLocal {
		t.Fatalf("switch to local: %d, machine in %q (%v)", r.StatusCode, m.BootEnv, err)
	}

	// A task on the machine sets its boot environment with the agent's
	// credential, as drover agent boot-env does; the answer says the boot
	// server serves it already.
	var set api.SetBootEnvResponse
	if err := agentClient.Do(ctx, http.MethodPost, "/api/v1/agent/boot-env", api.SetBootEnvRequest{BootEnv: "debian-12-preseed"}, &set); err != nil {
		t.Fatal(err)
	}
	if set.Machine != "n1" || set.BootEnv != "debian-12-preseed" || set.Served != "debian-12-preseed" {
		t.Fatalf("set boot env: %+v", set)
	}
	if resp, _ := get("/boot/" + mac + ".ipxe"); resp.Header.Get("X-Drover-Boot-Env") != "debian-12-preseed" {
		t.Fatalf("served %s", resp.Header.Get("X-Drover-Boot-Env"))
	}
	err = agentClient.Do(ctx, http.MethodPost, "/api/v1/agent/boot-env", api.SetBootEnvRequest{BootEnv: "nonesuch"}, &set)
	if err == nil || !strings.Contains(err.Error(), `boot environment "nonesuch" does not exist`) {
		t.Fatalf("unknown env: %v", err)
	}
	if err := e.admin.Do(ctx, http.MethodPost, "/api/v1/agent/boot-env", api.SetBootEnvRequest{BootEnv: "local"}, &set); err == nil {
		t.Fatal("a user set a boot env through the agent API")
	}
	// drover agent boot-env, from the agent's state dir.
	stateDir := t.TempDir()
	st, _ := json.Marshal(map[string]string{"agentID": "x", "machine": "n1", "endpoint": e.url, "token": agentClient.Token})
	if err := os.WriteFile(filepath.Join(stateDir, "agent.json"), st, 0o600); err != nil {
		t.Fatal(err)
	}
	if resp, err := agent.SetBootEnv(ctx, "", e.srv.CACertPEM(), stateDir, "local"); err != nil || resp.Served != "local" {
		t.Fatalf("agent.SetBootEnv: %+v %v", resp, err)
	}

	c, err := tftp.NewClient(e.srv.TFTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	wt, err := c.Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), kpxe) {
		t.Fatalf("tftp: %d bytes, %v", got.Len(), err)
	}
}

func TestBootFlagsChecked(t *testing.T) {
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.BootListen = ":0" }, "--boot-listen :0 needs --boot-address"},
		{func(c *Config) { c.BootListen = "nonsense" }, "want HOST:PORT"},
		{func(c *Config) { c.BootFilesDir = "/tmp" }, "--boot-files-dir and --discovery-dir need --boot-listen"},
		{func(c *Config) { c.TFTPListen, c.TFTPDir = ":0", "/nonexistent" }, "tftp directory"},
	} {
		cfg := Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", NoDefaultContent: true}
		c.mod(&cfg)
		srv, err := New(cfg)
		if err == nil {
			srv.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
	cfg := Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", NoDefaultContent: true, BootListen: "10.0.0.1:8080"}
	if err := bootDefaults(&cfg); err != nil || cfg.BootAddress != "10.0.0.1" || cfg.BootURL != "http://10.0.0.1:8080" {
		t.Errorf("defaults from --boot-listen: %v %+v", err, cfg)
	}
}
