package model

import (
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func TestBootEnvValidation(t *testing.T) {
	parse := func(t *testing.T, doc string) api.Object {
		t.Helper()
		docs := split(t, doc)
		obj, err := ParseDocument(docs[0])
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		return obj
	}
	good := `kind: BootEnv
name: rocky-9
kernel: rocky-9/vmlinuz
initrds: [rocky-9/initrd.img]
kernelParams: 'inst.ks={{ .Boot.RenderURL }}/ks.cfg inst.repo={{ .Boot.InstallSource }}'
installSource: '{{ param "rocky/mirror" }}'
requiredParams: [install/disk, install/root-password-hash]
templates:
  - {path: ks.cfg, template: rocky-9.ks}
  - {path: extra/notes.txt, content: 'hello {{ .Machine.Name }}'}
`
	if err := Validate(parse(t, good)); err != nil {
		t.Fatalf("valid boot env refused: %v", err)
	}
	if err := Validate(parse(t, "kind: BootEnv\nname: local\nipxeScript: \"#!ipxe\\nexit\\n\"\n")); err != nil {
		t.Fatalf("local refused: %v", err)
	}
	cases := []struct{ name, doc, want string }{
		{"nothing to boot", "kind: BootEnv\nname: x\n", "field kernel: a boot environment needs a kernel"},
		{"initrd without kernel", "kind: BootEnv\nname: x\nipxeScript: exit\ninitrds: [a]\n", "field initrds: initrds need a kernel"},
		{"bad kernel params", "kind: BootEnv\nname: x\nkernel: k\nkernelParams: '{{ .Boot'\n", "field kernelParams: bad template"},
		{"bad inline template", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: a, content: '{{ if }}'}]\n", "field templates[0].content: bad template"},
		{"traversal", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: ../etc/passwd, template: t}]\n", "field templates[0].path: invalid path"},
		{"absolute", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: /ks.cfg, template: t}]\n", "field templates[0].path: invalid path"},
		{"hidden", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: a/.b, template: t}]\n", "field templates[0].path: invalid path"},
		{"duplicate path", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: a, template: t}, {path: a, template: u}]\n", "field templates[1].path: \"a\" is served by templates[0] already"},
		{"both", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: a, template: t, content: c}]\n", "not both"},
		{"neither", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: a}]\n", "field templates[0]: give template"},
		{"bad template name", "kind: BootEnv\nname: x\nkernel: k\ntemplates: [{path: a, template: 'a b'}]\n", "field templates[0].template: invalid name"},
		{"bad param", "kind: BootEnv\nname: x\nkernel: k\nrequiredParams: ['a b']\n", "field requiredParams[0]: invalid param name"},
		{"twice", "kind: BootEnv\nname: x\nkernel: k\nrequiredParams: [a, a]\n", "field requiredParams[1]: param \"a\" is listed twice"},
		{"machine boot env name", "kind: Machine\nname: m\nbootEnv: 'no good'\n", "field bootEnv: invalid name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(parse(t, c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	if k, err := Lookup("be"); err != nil || k.Kind != api.KindBootEnv {
		t.Fatalf("alias be: %v %v", k, err)
	}
}

func TestMachineBootEnvDefaultAndMACs(t *testing.T) {
	m := &api.Machine{}
	if m.BootEnvName() != api.BootEnvDiscovery {
		t.Fatalf("default boot env %q", m.BootEnvName())
	}
	m.Status.Hardware = &api.Hardware{PrimaryMAC: "52:54:00:AA:BB:CC"}
	m.Status.Inventory = &api.Inventory{NICs: []api.NIC{{MAC: "52-54-00-aa-bb-cc"}, {MAC: "52:54:00:00:00:01"}, {Name: "lo"}}}
	if got := strings.Join(m.MACs(), ","); got != "52:54:00:aa:bb:cc,52:54:00:00:00:01" {
		t.Fatalf("MACs: %s", got)
	}
}
