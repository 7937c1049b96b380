package httpboot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

const mac1 = "52:54:00:12:34:56"

func TestUnknownMACGetsDiscovery(t *testing.T) {
	e := newEnv(t)
	// Without a join token, the console says which param to set.
	r := e.get("/boot/52-54-00-aa-bb-cc.ipxe")
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, "#!ipxe\n") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	contains(t, "error script", r.body, `echo drover: MAC 52:54:00:aa:bb:cc (no machine has it): boot environment "discovery" needs param "agent/join-token", which is not set`,
		"sleep 30", "chain --replace --autofree http://10.0.0.1:8080/boot/52-54-00-aa-bb-cc.ipxe || reboot")
	contains(t, "X-Drover-Error", r.header.Get("X-Drover-Error"), `param "agent/join-token"`)

	e.global(map[string]json.RawMessage{"agent/join-token": e.sealed("drj_abc_s3cret")})
	for _, mac := range []string{"52-54-00-aa-bb-cc", "52:54:00:AA:BB:CC", "5254.00aa.bbcc"} {
		r = e.must("/boot/" + mac + ".ipxe")
		if r.header.Get("X-Drover-Boot-Env") != "discovery" || r.header.Get("X-Drover-Machine") != "" {
			t.Fatalf("headers %v", r.header)
		}
	}
	contains(t, "discovery script", r.body,
		"kernel http://10.0.0.1:8080/files/discovery/vmlinuz console=tty0 console=ttyS0,115200n8 drover.endpoint=https://10.0.0.1:8443 drover.join-token=drj_abc_s3cret drover.ca-url=http://10.0.0.1:8080/ca.pem drover.ca-sha256=",
		"drover.mac=52:54:00:aa:bb:cc initrd=initrd.img || goto failed\n",
		"initrd --name initrd.img http://10.0.0.1:8080/files/discovery/initrd.img || goto failed\n",
		"boot || goto failed\n")

	// A bad MAC is the client's mistake.
	if r := e.get("/boot/not-a-mac.ipxe"); r.status != http.StatusBadRequest {
		t.Errorf("bad MAC: %d %s", r.status, r.body)
	}
	if r := e.get("/boot/" + mac1); r.status != http.StatusNotFound {
		t.Errorf("no .ipxe: %d %s", r.status, r.body)
	}
}

// TestBootEnvChangeSeenByNextRequest: a bootEnv written is what the very
// next request gets, every time (no cache lag, no race with a reboot).
func TestBootEnvChangeSeenByNextRequest(t *testing.T) {
	e := newEnv(t)
	e.global(map[string]json.RawMessage{"agent/join-token": e.sealed("drj_x_y"), "install/disk": raw(`"/dev/vda"`),
		"install/root-password-hash": e.sealed("$6$salt$hash"), "ubuntu/iso-url": raw(`"http://mirror.invalid/u.iso"`)})
	envs := []string{"local", "debian-12-preseed", "", "rocky-9-kickstart", "ubuntu-24.04-autoinstall"}
	for i := 0; i < 40; i++ {
		want := envs[i%len(envs)]
		m := e.machine("n1", mac1, want, nil)
		r := e.must("/boot/" + mac1 + ".ipxe")
		if got := r.header.Get("X-Drover-Boot-Env"); got != m.BootEnvName() || r.header.Get("X-Drover-Machine") != "n1" {
			t.Fatalf("write %d: bootEnv %q written, script of %q served:\n%s", i, m.BootEnvName(), got, r.body)
		}
	}
	r := e.must("/boot/" + mac1 + ".ipxe")
	contains(t, "ubuntu script", r.body, "kernel http://10.0.0.1:8080/files/ubuntu-24.04/vmlinuz console=tty0 console=ttyS0,115200n8 ip=dhcp url=http://mirror.invalid/u.iso cloud-config-url=/dev/null autoinstall ds=nocloud;s=http://10.0.0.1:8080/render/52-54-00-12-34-56/ initrd=initrd ")

	e.machine("n1", mac1, "local", nil)
	r = e.must("/boot/" + mac1 + ".ipxe")
	if r.body != "#!ipxe\necho drover: n1: booting from the local disk\nexit\n" {
		t.Fatalf("local script:\n%s", r.body)
	}
	// A machine set to an environment that does not exist is told so.
	e.machine("n1", mac1, "nonesuch", nil)
	r = e.get("/boot/" + mac1 + ".ipxe")
	contains(t, "error script", r.body, `echo drover: machine "n1" (52:54:00:12:34:56) boots into boot environment "nonesuch", which does not exist (apply a BootEnv "nonesuch"`)
}

func TestRenderErrorsNameTheProblem(t *testing.T) {
	e := newEnv(t)
	e.machine("n1", mac1, "rocky-9-kickstart", map[string]json.RawMessage{"install/disk": raw(`"/dev/vda"`)})
	r := e.get("/render/" + mac1 + "/ks.cfg")
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("%d %s", r.status, r.body)
	}
	contains(t, "error", r.body, `"code":"missing_param"`, `needs param \"install/root-password-hash\" and \"agent/join-token\", which is not set`)
	e.machine("n1", mac1, "rocky-9-kickstart", map[string]json.RawMessage{"install/disk": raw(`"/dev/vda"`),
		"install/root-password-hash": e.sealed("$6$s$h"), "agent/join-token": e.sealed("drj_a_b")})
	if r := e.get("/render/" + mac1 + "/preseed.cfg"); r.status != http.StatusNotFound || !strings.Contains(r.body, `serves no \"preseed.cfg\" (it serves ks.cfg, post-install.sh)`) {
		t.Errorf("%d %s", r.status, r.body)
	}
	for _, p := range []string{"..%2F..%2Fetc%2Fpasswd", ".ks.cfg"} {
		if r := e.get("/render/" + mac1 + "/" + p); r.status != http.StatusNotFound {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
	if r := e.get("/render/52:54:00:00:00:99/ks.cfg"); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "agent/join-token") {
		t.Errorf("unknown machine (discovery): %d %s", r.status, r.body)
	}
	r = e.must("/render/" + mac1 + "/ks.cfg")
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("rendered files may hold secrets, yet Cache-Control is %q", r.header.Get("Cache-Control"))
	}
	contains(t, "ks.cfg", r.body, "rootpw --iscrypted $6$s$h\n")

	// A template the machine's params break is reported with the param.
	e.machine("n1", mac1, "rocky-9-kickstart", map[string]json.RawMessage{"install/disk": raw(`"/dev/vda"`),
		"install/root-password-hash": e.sealed("$6$s$h"), "agent/join-token": e.sealed("drj_a_b"), "install/network": raw(`{"address": "10.9.9.9"}`)})
	if r := e.get("/render/" + mac1 + "/ks.cfg"); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, `is not an address with a prefix length`) {
		t.Errorf("bad network: %d %s", r.status, r.body)
	}
}

// TestSecureParamsOnlyInTheirMachinesFiles: a machine's secure params are
// decrypted into its own files, never into another's.
func TestSecureParamsOnlyInTheirMachinesFiles(t *testing.T) {
	e := newEnv(t)
	e.global(map[string]json.RawMessage{"agent/join-token": e.sealed("drj_shared_token"), "install/disk": raw(`"/dev/sda"`)})
	e.machine("n1", mac1, "debian-12-preseed", map[string]json.RawMessage{"install/root-password-hash": e.sealed("$6$n1salt$n1hash")})
	e.machine("n2", "52:54:00:00:00:02", "debian-12-preseed", map[string]json.RawMessage{"install/root-password-hash": e.sealed("$6$n2salt$n2hash")})
	r1 := e.must("/render/" + mac1 + "/preseed.cfg")
	r2 := e.must("/render/52:54:00:00:00:02/preseed.cfg")
	contains(t, "n1 preseed", r1.body, "d-i passwd/root-password-crypted password $6$n1salt$n1hash\n")
	contains(t, "n2 preseed", r2.body, "d-i passwd/root-password-crypted password $6$n2salt$n2hash\n")
	if strings.Contains(r1.body, "n2hash") || strings.Contains(r2.body, "n1hash") || strings.Contains(r1.body, "enc:") {
		t.Fatal("a machine's file holds another's secret, or a sealed value")
	}
}

// postInstallToken renders the machine's post-install step and returns
// the switch-to-local URL path and token in it.
func postInstallToken(t *testing.T, e *env, mac string) (string, string) {
	t.Helper()
	r := e.must("/render/" + mac + "/post-install.sh")
	m := regexp.MustCompile(`url='http://10\.0\.0\.1:8080(/boot/[^']+/local)'\nauth='Authorization: Bearer ([A-Za-z0-9_-]+)'`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no switch to local in the post-install step:\n%s", r.body)
	}
	return m[1], m[2]
}

func bootEnvOf(t *testing.T, e *env, name string) string {
	t.Helper()
	rec, err := e.st.Get(context.Background(), api.KindMachine, name)
	if err != nil {
		t.Fatal(err)
	}
	var m api.Machine
	if err := model.Decode(rec, &m); err != nil {
		t.Fatal(err)
	}
	return m.BootEnvName()
}

func TestInstallerSwitchesToLocal(t *testing.T) {
	e := newEnv(t)
	e.global(map[string]json.RawMessage{"agent/join-token": e.sealed("drj_a_b"), "install/disk": raw(`"/dev/vda"`), "install/root-password-hash": e.sealed("$6$s$h")})
	e.machine("n1", mac1, "rocky-9-kickstart", nil)
	e.machine("n2", "52:54:00:00:00:02", "rocky-9-kickstart", nil)
	path, token := postInstallToken(t, e, mac1)
	if path != "/boot/52-54-00-12-34-56/local" {
		t.Fatalf("path %s", path)
	}
	auth := map[string]string{"Authorization": "Bearer " + token}

	if r := e.do("POST", path, nil); r.status != http.StatusUnauthorized {
		t.Errorf("no token: %d %s", r.status, r.body)
	}
	if r := e.do("POST", path, map[string]string{"Authorization": "Bearer " + token[:len(token)-4] + "AAAA"}); r.status != http.StatusUnauthorized {
		t.Errorf("forged token: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/boot/52-54-00-00-00-02/local", auth); r.status != http.StatusForbidden {
		t.Errorf("n1's token on n2: %d %s", r.status, r.body)
	}
	if bootEnvOf(t, e, "n2") != "rocky-9-kickstart" {
		t.Fatal("n2 changed")
	}
	r := e.do("POST", path, auth)
	if r.status != http.StatusOK || bootEnvOf(t, e, "n1") != api.BootEnvLocal {
		t.Fatalf("%d %s; n1 in %s", r.status, r.body, bootEnvOf(t, e, "n1"))
	}
	if got := e.must("/boot/" + mac1 + ".ipxe").header.Get("X-Drover-Boot-Env"); got != "local" {
		t.Fatalf("next script is %s", got)
	}
	// The write is audited.
	audits, _, err := e.st.List(context.Background(), api.KindAudit, store.ListOptions{})
	if err != nil || len(audits) != 1 || !strings.Contains(string(audits[0].Data), `"user":"boot:n1"`) {
		t.Fatalf("audit: %v %d", err, len(audits))
	}
	// Asked again (a retry): done already.
	if r := e.do("POST", path, auth); r.status != http.StatusOK {
		t.Errorf("again: %d %s", r.status, r.body)
	}
	// Reinstalled later: the old token cannot cut the new install short.
	e.machine("n1", mac1, "debian-12-preseed", nil)
	if r := e.do("POST", path, auth); r.status != http.StatusConflict || bootEnvOf(t, e, "n1") != "debian-12-preseed" {
		t.Errorf("stale token: %d %s", r.status, r.body)
	}
	// Tokens expire.
	_, token2 := postInstallToken(t, e, mac1)
	e.srv.now = func() time.Time { return time.Now().Add(25 * time.Hour) }
	if r := e.do("POST", path, map[string]string{"Authorization": "Bearer " + token2}); r.status != http.StatusUnauthorized || !strings.Contains(r.body, "expired") {
		t.Errorf("expired token: %d %s", r.status, r.body)
	}
}

func TestFilesTraversalRefused(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(filepath.Dir(e.files), "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.files, "debian-12"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.files, "debian-12", "linux"), []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.must("/files/debian-12/linux"); r.body != "kernel" {
		t.Fatalf("got %q", r.body)
	}
	for _, p := range []string{"/files/..%2Fsecret", "/files/debian-12%2F..%2F..%2Fsecret", "/files/%2E%2E/secret", "/files/debian-12", "/files/", "/files/debian-12/..%5C..%5Csecret", "/undionly.kpxe", "/..%2Fsecret"} {
		r := e.get(p)
		if r.status == http.StatusOK || strings.Contains(r.body, "secret\n") || r.body == "secret" {
			t.Errorf("%s: %d %q", p, r.status, r.body)
		}
	}
	if r := e.must("/ca.pem"); r.body != testCA {
		t.Errorf("ca.pem: %q", r.body)
	}
	if r := e.must("/agent/drover"); !strings.Contains(r.body, "echo agent") {
		t.Errorf("agent: %q", r.body)
	}
}

// TestLargeFileRangesStreamed serves a 1 GiB (sparse) initrd over a real
// connection: Range requests get exactly their bytes, and fetching the
// whole file does not grow memory with its size.
func TestLargeFileRangesStreamed(t *testing.T) {
	e := newEnv(t)
	const size = 1 << 30
	path := filepath.Join(e.files, "big.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	marks := map[int64]string{0: "START", 123456789: "MIDDLE", size - 3: "END"}
	for off, s := range marks {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := e.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	url := "http://" + e.srv.Addr() + "/files/big.img"

	get := func(rng string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", url, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	resp, b := get("bytes=123456789-123456794")
	if resp.StatusCode != http.StatusPartialContent || string(b) != "MIDDLE" || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 123456789-123456794/%d", size) {
		t.Fatalf("range: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	if _, b := get("bytes=-3"); string(b) != "END" {
		t.Fatalf("suffix range: %q", b)
	}
	if resp, _ := get(fmt.Sprintf("bytes=%d-", int64(size)+10)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", resp.StatusCode)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, head); err != nil || string(head) != "START" {
		t.Fatalf("head %q %v", head, err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n+5 != size {
		t.Fatalf("read %d bytes, %v", n+5, err)
	}
	runtime.ReadMemStats(&after)
	// Both ends run in this process: everything allocated to move 1 GiB,
	// server and client together, stays far below the file's size.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Fatalf("serving a 1 GiB file allocated %d MiB", alloc>>20)
	}
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 16<<20 {
		t.Fatalf("heap grew by %d MiB", grown>>20)
	}
}

func TestScriptOverrideAndDefaultScript(t *testing.T) {
	e := newEnv(t)
	e.put(&api.BootEnv{Meta: api.Meta{Kind: api.KindBootEnv, Name: "custom"},
		Kernel:       "https://example.invalid/k/vmlinuz",
		Initrds:      []string{"a/initrd.img", "b/initrd.img", "extra dir/firmware.cpio"},
		KernelParams: "root=/dev/ram0\n  ip=${net0/ip} hostname={{ .Machine.Name }}"})
	e.machine("n1", mac1, "custom", nil)
	r := e.must("/boot/" + mac1 + ".ipxe")
	want := `#!ipxe
# drover: machine "n1" (52:54:00:12:34:56), boot environment custom
echo drover: booting custom
kernel https://example.invalid/k/vmlinuz root=/dev/ram0 ip=${net0/ip} hostname=n1 initrd=initrd.img initrd=1-initrd.img initrd=firmware.cpio || goto failed
initrd --name initrd.img http://10.0.0.1:8080/files/a/initrd.img || goto failed
initrd --name 1-initrd.img http://10.0.0.1:8080/files/b/initrd.img || goto failed
initrd --name firmware.cpio http://10.0.0.1:8080/files/extra%20dir/firmware.cpio || goto failed
boot || goto failed
:failed
echo drover: booting custom failed; asking again in 30 seconds
sleep 30
chain --replace --autofree http://10.0.0.1:8080/boot/52-54-00-12-34-56.ipxe || reboot
`
	if r.body != want {
		t.Fatalf("script:\n%s\nwant:\n%s", r.body, want)
	}
	e.put(&api.BootEnv{Meta: api.Meta{Kind: api.KindBootEnv, Name: "custom"}, IPXEScript: "shell\n"})
	if r := e.must("/boot/" + mac1 + ".ipxe"); !bytes.Equal([]byte(r.body), []byte("#!ipxe\nshell\n")) {
		t.Fatalf("override: %q", r.body)
	}
}

// TestIPXEBinariesAtTheRoot: UEFI HTTP boot clients are handed
// BOOT-URL/ipxe.efi by DHCP.
func TestIPXEBinariesAtTheRoot(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("MZ efi"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.srv.cfg.IPXEDir = dir
	e.h = e.srv.Handler()
	if r := e.must("/ipxe.efi"); r.body != "MZ efi" {
		t.Fatalf("ipxe.efi: %q", r.body)
	}
	if r := e.must("/ca.pem"); r.body != testCA {
		t.Fatalf("ca.pem: %q", r.body)
	}
	if r := e.get("/snponly.efi"); r.status != http.StatusNotFound {
		t.Fatalf("missing file: %d", r.status)
	}
}

func TestDiscoveryDir(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("discovery kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.srv.cfg.DiscoveryDir = dir
	e.h = e.srv.Handler()
	if r := e.must("/files/discovery/vmlinuz"); r.body != "discovery kernel" {
		t.Fatalf("got %q", r.body)
	}
	if r := e.get("/files/discovery/..%2F..%2Fetc%2Fpasswd"); r.status != http.StatusNotFound {
		t.Fatalf("traversal: %d", r.status)
	}
}
