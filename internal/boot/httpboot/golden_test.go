package httpboot

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/golden")

// fixedSealer makes the switch-to-local token the same on every run.
type fixedSealer struct{}

func (fixedSealer) Seal([]byte) (string, error) { return "sealed", nil }
func (fixedSealer) Open(string) ([]byte, error) { return nil, os.ErrInvalid }

const (
	sampleHash  = "$6$drover$Q0x3m4gKn1nQ3mZKqL0mW5oL3o6z9Yk2w7dXk1Yq5a3v8b2n4m6c0x9z8y7w6v5u4t3s2r1q0p"
	sampleToken = "drj_9f3k2_Zm9vYmFyYmF6cXV4"
)

// sample sets up machine n1 with every param the installers read, as an
// operator would: secrets sealed, the disk and network on the machine.
// static chooses a static address over DHCP.
func sample(t *testing.T, static bool) *env {
	e := newEnv(t)
	e.srv.sealer = fixedSealer{}
	e.global(map[string]json.RawMessage{
		"agent/join-token": e.sealed(sampleToken),
		"ubuntu/iso-url":   raw(`"http://mirror.example.com/ubuntu/ubuntu-24.04.2-live-server-amd64.iso"`),
		"rocky/mirror":     raw(`"http://mirror.example.com/rocky/9"`),
		"install/packages": raw(`["vim", "jq"]`),
	})
	params := map[string]json.RawMessage{
		"install/root-password-hash": e.sealed(sampleHash),
		"install/disk":               raw(`"/dev/vda"`),
		"install/timezone":           raw(`"Europe/Paris"`),
	}
	if static {
		params["install/network"] = raw(`{"address": "192.0.2.10/24", "gateway": "192.0.2.1", "dns": ["192.0.2.53", "192.0.2.54"], "domain": "lab.example.com"}`)
	}
	e.machine("n1", mac1, "", params)
	return e
}

// setBootEnv changes only n1's bootEnv, as drover apply would.
func setBootEnv(t *testing.T, e *env, bootEnv string) {
	t.Helper()
	rec, err := e.st.Get(context.Background(), api.KindMachine, "n1")
	if err != nil {
		t.Fatal(err)
	}
	var m api.Machine
	if err := model.Decode(rec, &m); err != nil {
		t.Fatal(err)
	}
	m.BootEnv = bootEnv
	e.put(&m)
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run Golden -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from its golden file (after a deliberate change, go test -run Golden -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// TestGoldenInstallerFiles renders every built-in environment's script
// and files for a sample machine, by DHCP and with a static address,
// compares them with the golden files, and checks each file's structure.
func TestGoldenInstallerFiles(t *testing.T) {
	for _, variant := range []string{"dhcp", "static"} {
		t.Run(variant, func(t *testing.T) {
			e := sample(t, variant == "static")
			for _, c := range []struct {
				env   string
				files []string
			}{
				{"discovery", nil},
				{"local", nil},
				{"debian-12-preseed", []string{"preseed.cfg", "post-install.sh"}},
				{"ubuntu-24.04-autoinstall", []string{"user-data", "meta-data", "post-install.sh"}},
				{"rocky-9-kickstart", []string{"ks.cfg", "post-install.sh"}},
			} {
				setBootEnv(t, e, c.env)
				golden(t, variant+"/"+c.env+".ipxe", e.must("/boot/"+mac1+".ipxe").body)
				for _, f := range c.files {
					body := e.must("/render/" + mac1 + "/" + f).body
					golden(t, variant+"/"+c.env+"/"+f, body)
					checks[f](t, body, variant == "static")
				}
			}
		})
	}
}

var checks = map[string]func(t *testing.T, body string, static bool){
	"preseed.cfg":     checkPreseed,
	"user-data":       checkUserData,
	"meta-data":       checkMetaData,
	"ks.cfg":          checkKickstart,
	"post-install.sh": checkPostInstall,
}

// preseedLine is "owner question type value": debconf's preseed format.
var preseedLine = regexp.MustCompile(`^(d-i|tasksel|popularity-contest) [a-z0-9-]+/[A-Za-z0-9_/-]+ (string|boolean|select|multiselect|password|note)( .*)?$`)

func checkPreseed(t *testing.T, body string, static bool) {
	t.Helper()
	set := map[string]string{}
	for i, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !preseedLine.MatchString(line) {
			t.Errorf("preseed line %d is not owner question type value: %q", i+1, line)
			continue
		}
		f := strings.SplitN(line, " ", 4)
		if _, dup := set[f[1]]; dup {
			t.Errorf("preseed line %d: %s set twice", i+1, f[1])
		}
		val := ""
		if len(f) == 4 {
			val = f[3]
		}
		if f[2] == "boolean" && val != "true" && val != "false" {
			t.Errorf("preseed line %d: boolean %q", i+1, val)
		}
		set[f[1]] = val
	}
	for q, want := range map[string]string{
		"passwd/root-password-crypted": sampleHash,
		"partman-auto/disk":            "/dev/vda",
		"grub-installer/bootdev":       "/dev/vda",
		"mirror/http/hostname":         "deb.debian.org",
		"mirror/http/directory":        "/debian",
		"netcfg/get_hostname":          "n1",
		"time/zone":                    "Europe/Paris",
		"pkgsel/include":               "curl ca-certificates vim jq",
		"preseed/late_command":         "in-target sh -c 'curl -fsS --retry 5 -o /root/drover-post-install.sh http://10.0.0.1:8080/render/52-54-00-12-34-56/post-install.sh && sh /root/drover-post-install.sh'",
	} {
		if set[q] != want {
			t.Errorf("preseed %s = %q, want %q", q, set[q], want)
		}
	}
	if static && (set["netcfg/get_ipaddress"] != "192.0.2.10" || set["netcfg/get_netmask"] != "255.255.255.0" || set["netcfg/get_nameservers"] != "192.0.2.53 192.0.2.54") {
		t.Errorf("static network: %v", set)
	}
	if !static && set["netcfg/get_ipaddress"] != "" {
		t.Errorf("DHCP machine has a static address")
	}
}

func checkUserData(t *testing.T, body string, static bool) {
	t.Helper()
	if !strings.HasPrefix(body, "#cloud-config\n") {
		t.Fatalf("user-data does not start with #cloud-config:\n%s", body)
	}
	var doc struct {
		Autoinstall struct {
			Version  int    `yaml:"version"`
			Timezone string `yaml:"timezone"`
			Network  struct {
				Version   int `yaml:"version"`
				Ethernets map[string]struct {
					Match       map[string]string `yaml:"match"`
					DHCP4       bool              `yaml:"dhcp4"`
					Addresses   []string          `yaml:"addresses"`
					Nameservers struct {
						Addresses []string `yaml:"addresses"`
						Search    []string `yaml:"search"`
					} `yaml:"nameservers"`
				} `yaml:"ethernets"`
			} `yaml:"network"`
			Storage struct {
				Layout struct {
					Name  string            `yaml:"name"`
					Match map[string]string `yaml:"match"`
				} `yaml:"layout"`
			} `yaml:"storage"`
			Packages []string `yaml:"packages"`
			UserData struct {
				Hostname string `yaml:"hostname"`
				Chpasswd struct {
					Users []map[string]string `yaml:"users"`
				} `yaml:"chpasswd"`
			} `yaml:"user-data"`
			LateCommands []string `yaml:"late-commands"`
		} `yaml:"autoinstall"`
	}
	dec := yaml.NewDecoder(strings.NewReader(body))
	dec.KnownFields(true)
	if err := dec.Decode(&struct {
		Autoinstall map[string]any `yaml:"autoinstall"`
	}{}); err != nil {
		t.Fatalf("user-data is not YAML with only an autoinstall key: %v\n%s", err, body)
	}
	if err := yaml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("user-data: %v", err)
	}
	a := doc.Autoinstall
	nic := a.Network.Ethernets["boot"]
	switch {
	case a.Version != 1, a.Timezone != "Europe/Paris", a.Network.Version != 2:
		t.Errorf("autoinstall header: %+v", a)
	case nic.Match["macaddress"] != mac1:
		t.Errorf("network matches %v", nic.Match)
	case static && (nic.DHCP4 || len(nic.Addresses) != 1 || nic.Addresses[0] != "192.0.2.10/24" || len(nic.Nameservers.Addresses) != 2 || nic.Nameservers.Search[0] != "lab.example.com"):
		t.Errorf("static network: %+v", nic)
	case !static && !nic.DHCP4:
		t.Errorf("DHCP network: %+v", nic)
	case a.Storage.Layout.Match["path"] != "/dev/vda":
		t.Errorf("storage: %+v", a.Storage)
	case strings.Join(a.Packages, ",") != "vim,jq":
		t.Errorf("packages %v", a.Packages)
	case a.UserData.Hostname != "n1" || len(a.UserData.Chpasswd.Users) != 1 || a.UserData.Chpasswd.Users[0]["password"] != sampleHash || a.UserData.Chpasswd.Users[0]["type"] != "hash":
		t.Errorf("user-data: %+v", a.UserData)
	case len(a.LateCommands) != 1 || !strings.Contains(a.LateCommands[0], "http://10.0.0.1:8080/render/52-54-00-12-34-56/post-install.sh"):
		t.Errorf("late-commands %v", a.LateCommands)
	}
}

func checkMetaData(t *testing.T, body string, _ bool) {
	t.Helper()
	var md map[string]string
	if err := yaml.Unmarshal([]byte(body), &md); err != nil || md["instance-id"] != "drover-n1" || md["local-hostname"] != "n1" {
		t.Errorf("meta-data %v: %v", md, err)
	}
}

// kickstartCommands are the commands the built-in kickstart may use
// (pykickstart's RHEL 9 handler has them all; Debian has no ksvalidator).
var kickstartCommands = map[string]bool{
	"text": true, "url": true, "repo": true, "lang": true, "keyboard": true, "timezone": true, "network": true,
	"rootpw": true, "firstboot": true, "selinux": true, "firewall": true, "services": true, "ignoredisk": true,
	"zerombr": true, "clearpart": true, "autopart": true, "bootloader": true, "reboot": true,
}

func checkKickstart(t *testing.T, body string, static bool) {
	t.Helper()
	if path, err := exec.LookPath("ksvalidator"); err == nil {
		f := filepath.Join(t.TempDir(), "ks.cfg")
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(path, "-v", "RHEL9", f).CombinedOutput(); err != nil {
			t.Errorf("ksvalidator: %v\n%s", err, out)
		}
	}
	section := ""
	seen := map[string]string{}
	for i, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "%") {
			word := strings.Fields(line)[0]
			switch {
			case word == "%end" && section != "":
				section = ""
			case (word == "%packages" || word == "%post") && section == "":
				section = word
			default:
				t.Errorf("ks line %d: %q inside %q", i+1, line, section)
			}
			continue
		}
		if section != "" || line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd := strings.Fields(line)[0]
		if !kickstartCommands[cmd] {
			t.Errorf("ks line %d: unknown command %q", i+1, cmd)
		}
		if _, dup := seen[cmd]; dup && cmd != "repo" {
			t.Errorf("ks line %d: %s given twice", i+1, cmd)
		}
		seen[cmd] = line
	}
	if section != "" {
		t.Errorf("section %s has no %%end", section)
	}
	for cmd, want := range map[string]string{
		"rootpw":     "rootpw --iscrypted " + sampleHash,
		"ignoredisk": "ignoredisk --only-use=vda",
		"clearpart":  "clearpart --all --initlabel --drives=vda",
		"bootloader": "bootloader --boot-drive=vda",
		"url":        "url --url=http://mirror.example.com/rocky/9/BaseOS/x86_64/os",
		"timezone":   "timezone Europe/Paris --utc",
	} {
		if seen[cmd] != want {
			t.Errorf("ks %s: %q, want %q", cmd, seen[cmd], want)
		}
	}
	if static != strings.Contains(seen["network"], "--bootproto=static --ip=192.0.2.10 --netmask=255.255.255.0 --gateway=192.0.2.1 --nameserver=192.0.2.53,192.0.2.54") {
		t.Errorf("network: %q", seen["network"])
	}
	if !strings.Contains(body, "%post --erroronfail --log=/root/drover-post-install.log\ncurl -fsS --retry 5 -o /root/drover-post-install.sh http://10.0.0.1:8080/render/52-54-00-12-34-56/post-install.sh\nsh /root/drover-post-install.sh\n%end\n") {
		t.Error("no post-install step")
	}
}

func checkPostInstall(t *testing.T, body string, _ bool) {
	t.Helper()
	for _, sh := range []string{"sh", "bash"} {
		if path, err := exec.LookPath(sh); err == nil {
			cmd := exec.Command(path, "-n")
			cmd.Stdin = strings.NewReader(body)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", sh, err, out)
			}
		}
	}
	contains(t, "post-install.sh", body,
		"fetch 'http://10.0.0.1:8080/agent/drover' /usr/local/bin/drover.new\n",
		"DROVER_ENDPOINT=https://10.0.0.1:8443\nDROVER_JOIN_TOKEN="+sampleToken+"\nDROVER_CA_CERT=/etc/drover/ca.pem\n",
		"cat >/etc/drover/ca.pem <<'DROVER_CA'\n"+testCA+"DROVER_CA\n",
		"ExecStart=/usr/local/bin/drover agent --name n1 --state-dir /var/lib/drover-agent\n",
		"url='http://10.0.0.1:8080/boot/52-54-00-12-34-56/local'\nauth='Authorization: Bearer c2VhbGVk'\n")
	// The switch to local is the last thing it does.
	if i, j := strings.Index(body, "systemd/system/drover-agent.service"), strings.Index(body, "-X POST"); i < 0 || j < i {
		t.Error("the switch to local is not after the agent's install")
	}
}
