package model

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/drover-project/drover/api"
)

var packNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidatePackName checks a content pack's name: a DNS label (1 to 63
// lowercase letters, digits and '-', starting and ending with a letter or
// digit).
func ValidatePackName(name string) error {
	if name == "" {
		return errors.New("missing name")
	}
	if len(name) > 63 || !packNameRE.MatchString(name) {
		return fmt.Errorf("invalid pack name %q: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// validateVersionSet checks a version set: each pack named once, as a pack
// name, at an exact semantic version (a leading v is dropped, as content
// packs drop it), and the drover version, if given, a semantic version.
func validateVersionSet(vs *api.VersionSet) error {
	if len(vs.Packs) == 0 && vs.Drover == "" {
		return fieldErr("packs", "a version set names at least one pack (packs: [{name: drover-default, version: 1.2.0}]) or a drover version")
	}
	seen := map[string]int{}
	for i := range vs.Packs {
		p := &vs.Packs[i]
		field := fmt.Sprintf("packs[%d]", i)
		if err := ValidatePackName(p.Name); err != nil {
			return &FieldError{Field: field + ".name", Err: err}
		}
		if j, dup := seen[p.Name]; dup {
			return fieldErr(field+".name", "pack %q is named twice (packs[%d] and packs[%d]): a version set holds one version of each pack", p.Name, j, i)
		}
		seen[p.Name] = i
		if p.Version == "" {
			return fieldErr(field+".version", "missing version of pack %q (an exact version like 1.2.0)", p.Name)
		}
		v := strings.TrimPrefix(p.Version, "v")
		if _, err := semver.StrictNewVersion(v); err != nil {
			hint := "MAJOR.MINOR.PATCH, like 1.2.0"
			if strings.ContainsAny(p.Version, "<>=^~*|, x") {
				hint = "a version set pins an exact version, not a range: " + hint
			}
			return fieldErr(field+".version", "%q is not a semantic version (%s)", p.Version, hint)
		}
		p.Version = v
	}
	if vs.Drover != "" {
		if _, err := semver.StrictNewVersion(strings.TrimPrefix(vs.Drover, "v")); err != nil {
			return fieldErr("drover", "%q is not a semantic version (the drover release the sites should run, like v1.4.0)", vs.Drover)
		}
	}
	return nil
}
