package model

import (
	"bytes"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func TestValidateSubnet(t *testing.T) {
	good := func() *api.Subnet {
		return &api.Subnet{
			Meta:      api.Meta{Kind: api.KindSubnet, Name: "lab"},
			CIDR:      "10.0.0.0/24",
			Range:     &api.IPRange{Start: "10.0.0.100", End: "10.0.0.200"},
			Router:    "10.0.0.1",
			DNS:       []string{"10.0.0.2"},
			Domain:    "lab.example",
			LeaseTime: "12h",
			Options:   map[string]string{"42": "10.0.0.3", "26": "u16:9000", "66": "text:tftp"},
		}
	}
	if err := Validate(good()); err != nil {
		t.Fatalf("good subnet: %v", err)
	}
	cases := []struct {
		name   string
		change func(*api.Subnet)
		field  string
		want   string
	}{
		{"bad cidr", func(s *api.Subnet) { s.CIDR = "10.0.0.0" }, "cidr", "not an IPv4 network"},
		{"host bits", func(s *api.Subnet) { s.CIDR = "10.0.0.5/24" }, "cidr", "host bits"},
		{"ipv6", func(s *api.Subnet) { s.CIDR = "fd00::/64" }, "cidr", "not an IPv4 network"},
		{"range outside", func(s *api.Subnet) { s.Range.End = "10.0.1.5" }, "range.end", "outside 10.0.0.0/24"},
		{"range reversed", func(s *api.Subnet) { s.Range.Start = "10.0.0.201" }, "range", "after end"},
		{"range broadcast", func(s *api.Subnet) { s.Range.End = "10.0.0.255" }, "range.end", "broadcast"},
		{"router outside", func(s *api.Subnet) { s.Router = "192.168.1.1" }, "router", "outside"},
		{"bad dns", func(s *api.Subnet) { s.DNS = []string{"dns.example"} }, "dns[0]", "not an IPv4"},
		{"short lease", func(s *api.Subnet) { s.LeaseTime = "1s" }, "leaseTime", "between"},
		{"reserved option", func(s *api.Subnet) { s.Options = map[string]string{"54": "10.0.0.1"} }, "options.54", "set by the server"},
		{"bad option code", func(s *api.Subnet) { s.Options = map[string]string{"300": "x"} }, "options.300", "1..254"},
		{"bad typed value", func(s *api.Subnet) { s.Options = map[string]string{"26": "u16:70000"} }, "options.26", "16-bit"},
	}
	for _, c := range cases {
		s := good()
		c.change(s)
		err := Validate(s)
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want field %s with %q", c.name, err, c.field, c.want)
		}
	}
}

func TestValidateReservationNormalizesMAC(t *testing.T) {
	r := &api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: "n1"}, MAC: "52-54-00-AB-CD-EF", IP: "10.0.0.7", Hostname: "n1"}
	if err := Validate(r); err != nil {
		t.Fatal(err)
	}
	if r.MAC != "52:54:00:ab:cd:ef" {
		t.Errorf("mac %q", r.MAC)
	}
	for _, bad := range []*api.Reservation{
		{Meta: api.Meta{Kind: api.KindReservation, Name: "n1"}, MAC: "nope", IP: "10.0.0.7"},
		{Meta: api.Meta{Kind: api.KindReservation, Name: "n1"}, MAC: "52:54:00:ab:cd:ef", IP: "10.0.0"},
		{Meta: api.Meta{Kind: api.KindReservation, Name: "n1"}, MAC: "52:54:00:ab:cd:ef", IP: "10.0.0.7", Hostname: "-x"},
	} {
		if err := Validate(bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestDHCPOptionValues(t *testing.T) {
	cases := map[string][]byte{
		"10.0.0.1,10.0.0.2": {10, 0, 0, 1, 10, 0, 0, 2},
		"ip:10.0.0.1":       {10, 0, 0, 1},
		"text:10.0.0.1":     []byte("10.0.0.1"),
		"hello":             []byte("hello"),
		"hex:0a:0b":         {10, 11},
		"u8:7":              {7},
		"u16:1500":          {5, 220},
		"u32:1":             {0, 0, 0, 1},
		"bool:true":         {1},
	}
	for v, want := range cases {
		_, got, err := DHCPOption("43", v)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q: got %v %v, want %v", v, got, err, want)
		}
	}
}
