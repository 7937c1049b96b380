package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func TestVersionSetValidation(t *testing.T) {
	cases := []struct {
		name, in, field, want string
	}{
		{"bad semver", "packs: [{name: site, version: \"1.2\"}]", "packs[0].version", `"1.2" is not a semantic version`},
		{"a range", "packs: [{name: site, version: ^1.2.0}]", "packs[0].version", "pins an exact version, not a range"},
		{"missing version", "packs: [{name: site}]", "packs[0].version", `missing version of pack "site"`},
		{"duplicate pack", "packs: [{name: site, version: 1.0.0}, {name: base, version: 1.0.0}, {name: site, version: 1.1.0}]", "packs[2].name", `pack "site" is named twice (packs[0] and packs[2])`},
		{"bad pack name", "packs: [{name: Site_1, version: 1.0.0}]", "packs[0].name", `invalid pack name "Site_1"`},
		{"bad drover version", "packs: [{name: site, version: 1.0.0}]\ndrover: latest", "drover", `"latest" is not a semantic version`},
		{"empty", "packs: []", "packs", "at least one pack"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs := split(t, "kind: VersionSet\nname: prod\n"+c.in+"\n")
			obj, err := ParseDocument(docs[0])
			if err != nil {
				t.Fatal(err)
			}
			err = Validate(obj)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v; want field %s with %q", err, c.field, c.want)
			}
		})
	}
	t.Run("unknown field", func(t *testing.T) {
		_, err := ParseDocument(split(t, "kind: VersionSet\nname: prod\npacks: [{name: site, versoin: 1.0.0}]\n")[0])
		if err == nil || !strings.Contains(err.Error(), `unknown field "versoin"`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("valid, v dropped", func(t *testing.T) {
		obj, err := ParseDocument(split(t, "kind: VersionSet\nname: prod\npacks:\n  - {name: drover-default, version: v1.2.0}\n  - {name: site, version: 2.0.0-rc.1}\ndrover: v1.4.0\n")[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(obj); err != nil {
			t.Fatal(err)
		}
		vs := obj.(*api.VersionSet)
		if vs.Packs[0].Version != "1.2.0" || vs.Packs[1].Version != "2.0.0-rc.1" || vs.Drover != "v1.4.0" {
			t.Fatalf("got %+v", vs)
		}
	})
}
