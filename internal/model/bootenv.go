package model

import (
	"errors"
	"fmt"
	"strings"

	"github.com/drover-project/drover/api"
)

// MaxBootPathLen bounds the path a boot environment serves a file at.
const MaxBootPathLen = 255

// validateBootEnv checks a boot environment on its own: every template
// parses, file paths are clean and unique, names are valid. Whether the
// Template objects it names exist is checked when it is served (and by
// content pack validation).
func validateBootEnv(b *api.BootEnv) error {
	if strings.TrimSpace(b.Kernel) == "" && strings.TrimSpace(b.IPXEScript) == "" {
		return fieldErr("kernel", "a boot environment needs a kernel, or an ipxeScript that boots without one (local has \"#!ipxe\\nexit\")")
	}
	if strings.TrimSpace(b.Kernel) == "" && len(b.Initrds) > 0 {
		return fieldErr("initrds", "initrds need a kernel")
	}
	check := func(field, body string) error {
		if _, err := ParseTemplate(b.Name+" "+field, body); err != nil {
			return &FieldError{Field: field, Err: fmt.Errorf("bad template: %v", err)}
		}
		return nil
	}
	if err := check("kernel", b.Kernel); err != nil {
		return err
	}
	for i, s := range b.Initrds {
		field := fmt.Sprintf("initrds[%d]", i)
		if strings.TrimSpace(s) == "" {
			return fieldErr(field, "empty initrd")
		}
		if err := check(field, s); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, body string }{
		{"kernelParams", b.KernelParams}, {"installSource", b.InstallSource}, {"ipxeScript", b.IPXEScript},
	} {
		if err := check(f.name, f.body); err != nil {
			return err
		}
	}
	paths := map[string]int{}
	for i, t := range b.Templates {
		field := fmt.Sprintf("templates[%d]", i)
		if err := ValidateBootPath(t.Path); err != nil {
			return fieldErr(field+".path", "%v", err)
		}
		if j, dup := paths[t.Path]; dup {
			return fieldErr(field+".path", "%q is served by templates[%d] already", t.Path, j)
		}
		paths[t.Path] = i
		switch {
		case t.Template != "" && t.Content != "":
			return fieldErr(field, "give template (a Template's name) or content, not both")
		case t.Template != "":
			if err := ValidateName(t.Template); err != nil {
				return fieldErr(field+".template", "%v", err)
			}
		case t.Content != "":
			if err := check(field+".content", t.Content); err != nil {
				return err
			}
		default:
			return fieldErr(field, "give template (a Template's name) or content")
		}
	}
	seen := map[string]bool{}
	for i, p := range b.RequiredParams {
		field := fmt.Sprintf("requiredParams[%d]", i)
		if err := ValidateParamName(p); err != nil {
			return fieldErr(field, "%v", err)
		}
		if seen[p] {
			return fieldErr(field, "param %q is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// ValidateBootPath checks where a boot environment serves a rendered
// file: a relative path of parts made of letters, digits, '-', '_' and
// '.', none of them starting with '.' (so no "..", no hidden files).
func ValidateBootPath(p string) error {
	if p == "" {
		return errors.New("missing path")
	}
	if len(p) > MaxBootPathLen {
		return fmt.Errorf("path is %d characters long (at most %d)", len(p), MaxBootPathLen)
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part[0] == '.' {
			return fmt.Errorf("invalid path %q: use a relative path like \"ks.cfg\" or \"autoinstall/user-data\" (no empty parts, no part starting with '.')", p)
		}
		for _, c := range part {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
			if !ok {
				return fmt.Errorf("invalid path %q: use letters, digits, '-', '_' and '.' between '/'", p)
			}
		}
	}
	return nil
}
