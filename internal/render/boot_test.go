package render

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func TestRenderBootAndCIDRFuncs(t *testing.T) {
	in := &Input{
		Machine: &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: "n1"},
			Params: map[string]json.RawMessage{"net": raw(`{"address": "10.1.2.3/23"}`)}},
		Boot: &api.BootInfo{Env: "rocky-9", URL: "http://10.0.0.1:8080"},
	}
	got, err := Render(in, "t", `{{ .Boot.Env }} {{ .Boot.URL }} {{ $a := index (param "net") "address" }}{{ cidrIP $a }} {{ cidrNetmask $a }} {{ cidrPrefix $a }}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := "rocky-9 http://10.0.0.1:8080 10.1.2.3 255.255.254.0 23"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := Render(in, "t", `{{ cidrIP "10.0.0.1" }}`); err == nil || !strings.Contains(err.Error(), "not an address with a prefix length") {
		t.Fatalf("bad CIDR: %v", err)
	}
	if _, err := Render(in, "t", `{{ cidrNetmask "fd00::1/64" }}`); err == nil || !strings.Contains(err.Error(), "not IPv4") {
		t.Fatalf("IPv6 netmask: %v", err)
	}
}
