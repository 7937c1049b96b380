package api

// KindBootEnv is the kind of boot environments.
const KindBootEnv = "BootEnv"

// Built-in boot environments.
const (
	// BootEnvDiscovery boots the discovery image, whose agent registers
	// the machine. Machines without a bootEnv, and MACs no machine has,
	// get it.
	BootEnvDiscovery = "discovery"
	// BootEnvLocal boots the machine's local disk.
	BootEnvLocal = "local"
)

// BootEnv is a boot environment: what a machine that network-boots gets
// (a kernel, initrds and kernel params, chained from a per-machine iPXE
// script) and the files rendered for it while it is in the environment
// (a kickstart, a preseed, cloud-init user-data). Every string field is a
// Go text/template rendered for the machine, like a task script, with
// .Machine, param functions and .Boot (see BootInfo).
type BootEnv struct {
	Meta
	// Kernel is the kernel to boot: a path under the boot server's files
	// directory (served at /files/PATH) or an http(s) URL. Empty for an
	// environment whose IPXEScript does not boot a kernel (local).
	Kernel string `json:"kernel,omitempty"`
	// Initrds are loaded in order, each a path or URL like Kernel.
	Initrds []string `json:"initrds,omitempty"`
	// KernelParams is the kernel command line.
	KernelParams string `json:"kernelParams,omitempty"`
	// InstallSource is where an installer gets the OS: a mirror or an
	// ISO URL, usually from a param. Rendered first, it is .Boot.InstallSource
	// in the other templates.
	InstallSource string `json:"installSource,omitempty"`
	// Templates are the files rendered per machine, served at
	// /render/<mac>/<path> while the machine is in this environment.
	Templates []BootTemplate `json:"templates,omitempty"`
	// RequiredParams must be set for a machine before anything of this
	// environment is served to it; a request names the missing ones.
	RequiredParams []string `json:"requiredParams,omitempty"`
	// IPXEScript replaces the iPXE script drover writes from Kernel,
	// Initrds and KernelParams ("#!ipxe\nexit" boots the local disk).
	IPXEScript string `json:"ipxeScript,omitempty"`
}

// BootTemplate is one file rendered per machine: a Template object by
// name, or content given inline.
type BootTemplate struct {
	// Path is where the file is served under /render/<mac>/: relative,
	// with '/' between parts ("ks.cfg", "autoinstall/user-data").
	Path string `json:"path"`
	// Template names a Template object holding the body.
	Template string `json:"template,omitempty"`
	// Content is the body, when not in a Template object.
	Content string `json:"content,omitempty"`
}

// FindTemplate returns the template served at path, or nil.
func (b *BootEnv) FindTemplate(path string) *BootTemplate {
	for i := range b.Templates {
		if b.Templates[i].Path == path {
			return &b.Templates[i]
		}
	}
	return nil
}

// BootEnvName is the boot environment a machine gets: its bootEnv, or
// discovery when it has none.
func (m *Machine) BootEnvName() string {
	if m.BootEnv == "" {
		return BootEnvDiscovery
	}
	return m.BootEnv
}

// MACs lists the machine's hardware addresses as registered (lower case,
// colon-separated): the primary one first, then the other NICs'.
func (m *Machine) MACs() []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if mac, err := NormalizeMAC(s); err == nil && !seen[mac] {
			seen[mac] = true
			out = append(out, mac)
		}
	}
	if h := m.Status.Hardware; h != nil {
		add(h.PrimaryMAC)
	}
	if inv := m.Status.Inventory; inv != nil {
		for _, n := range inv.NICs {
			add(n.MAC)
		}
	}
	return out
}

// BootInfo is what boot environment templates see as .Boot.
type BootInfo struct {
	// Env is the boot environment's name.
	Env string
	// MAC is the address the machine asked with.
	MAC string
	// Address is the boot server's advertised address (--boot-address);
	// URL is its base URL ("http://10.0.0.1:8080").
	Address string
	URL     string
	// Endpoint is the API's URL agents use ("https://10.0.0.1:8443").
	Endpoint string
	// CACert is the PEM of the CA agents trust for Endpoint; CAURL serves
	// it, and CAFingerprint is the SHA-256 of its DER, in hex.
	CACert        string
	CAURL         string
	CAFingerprint string
	// AgentURL serves the drover binary the installed OS runs as agent.
	AgentURL string
	// RenderURL is the base of this machine's rendered files
	// ("http://10.0.0.1:8080/render/52:54:00:ab:cd:ef"); a template's
	// file is at RenderURL/PATH.
	RenderURL string
	// ScriptURL is the machine's iPXE script.
	ScriptURL string
	// LocalURL, with LocalToken as a bearer token, switches the machine
	// to the local boot environment: an installer's last step POSTs to
	// it. The token is good for this machine in this environment only,
	// for a limited time.
	LocalURL   string
	LocalToken string
	// InstallSource, Kernel, Initrds and KernelParams are this
	// environment's, rendered for the machine (URLs absolute), as far as
	// they are rendered before the template that reads them.
	InstallSource string
	// InstallSourceScheme, InstallSourceHost (with its port, if any) and
	// InstallSourcePath are the parts of InstallSource, when it is a URL
	// (a preseed names the mirror's host and directory apart).
	InstallSourceScheme string
	InstallSourceHost   string
	InstallSourcePath   string
	Kernel              string
	Initrds             []string
	KernelParams        string
}

// SetBootEnvRequest is the body of POST /api/v1/agent/boot-env: a task
// run by a machine's agent sets its own machine's boot environment (an
// install task, before it reboots the machine).
type SetBootEnvRequest struct {
	BootEnv string `json:"bootEnv"`
}

// SetBootEnvResponse says what was written and what the boot server
// serves the machine now.
type SetBootEnvResponse struct {
	Machine  string `json:"machine"`
	BootEnv  string `json:"bootEnv"`
	Revision int64  `json:"revision"`
	// Served is the environment the boot server hands the machine's MACs
	// from now on, checked after the write (empty when the server runs no
	// boot server or the machine has no MAC).
	Served string `json:"served,omitempty"`
}
