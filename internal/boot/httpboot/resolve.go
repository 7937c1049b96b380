package httpboot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/render"
	"github.com/drover-project/drover/internal/store"
)

// target is a machine asking, its boot environment, and everything its
// templates see, with the environment's kernel, initrds and kernel
// params rendered.
type target struct {
	mac     string
	machine *api.Machine
	known   bool
	env     *api.BootEnv
	in      *render.Input
	info    *api.BootInfo
}

// who names the machine in messages.
func (t *target) who() string {
	if t.known {
		return fmt.Sprintf("machine %q (%s)", t.machine.Name, t.mac)
	}
	return fmt.Sprintf("MAC %s (no machine has it)", t.mac)
}

func bootErr(status int, code, format string, args ...any) *api.Error {
	return &api.Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// urlMAC is the MAC as it is written in the URLs drover hands out:
// hyphens, not colons, which installers' URL parsers (dracut's among them)
// may take for a port separator.
func urlMAC(mac string) string { return strings.ReplaceAll(mac, ":", "-") }

// resolve finds what a MAC gets now. The machine and its boot environment
// are read from the store after the MAC index has caught up with the
// store's revision at the time of the call, so a bootEnv written before
// the request is the one served.
func (s *Server) resolve(ctx context.Context, rawMAC string) (*target, *api.Error) {
	mac, err := api.NormalizeMAC(rawMAC)
	if err != nil {
		return nil, bootErr(http.StatusBadRequest, "bad_request", "%v", err)
	}
	t := &target{mac: mac}
	if t.machine, t.known, err = s.machineFor(ctx, mac); err != nil {
		return nil, internal(err)
	}
	envName := t.machine.BootEnvName()
	rec, err := s.st.Get(ctx, api.KindBootEnv, envName)
	if errors.Is(err, store.ErrNotFound) {
		hint := fmt.Sprintf("apply a BootEnv %q, or set the machine's bootEnv to one that exists", envName)
		if !t.known || t.machine.BootEnv == "" {
			hint = "the built-in content pack provides it: was it removed, or the server started with --no-default-content?"
		}
		return nil, bootErr(http.StatusConflict, "no_boot_env", "%s boots into boot environment %q, which does not exist (%s)", t.who(), envName, hint)
	}
	if err != nil {
		return nil, internal(err)
	}
	t.env = &api.BootEnv{}
	if err := model.Decode(rec, t.env); err != nil {
		return nil, internal(err)
	}
	if t.in, err = s.render.RenderInput(ctx, t.machine); err != nil {
		return nil, bootErr(http.StatusConflict, "cannot_render", "%s: %v", t.who(), err)
	}
	var missing []string
	for _, p := range t.env.RequiredParams {
		if _, ok := t.in.Lookup(p); !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return nil, bootErr(http.StatusUnprocessableEntity, "missing_param",
			"%s: boot environment %q needs param %s, which is not set (set it on the machine, a profile or global)",
			t.who(), t.env.Name, quoteList(missing))
	}
	if e := s.prepare(t); e != nil {
		return nil, e
	}
	return t, nil
}

// machineFor finds the machine that has mac, as of the store's revision
// at the time of the call. An unknown MAC gets a machine with no name and
// no bootEnv (discovery), rendered with the global profile, which holds
// the join token the discovery agent uses.
func (s *Server) machineFor(ctx context.Context, mac string) (*api.Machine, bool, error) {
	name, err := s.index.Lookup(ctx, mac)
	if err != nil {
		return nil, false, err
	}
	if name != "" {
		rec, err := s.st.Get(ctx, api.KindMachine, name)
		switch {
		case err == nil:
			var m api.Machine
			if err := model.Decode(rec, &m); err != nil {
				return nil, false, err
			}
			return &m, true, nil
		case !errors.Is(err, store.ErrNotFound):
			return nil, false, err
		}
	}
	return &api.Machine{Meta: api.Meta{Kind: api.KindMachine}}, false, nil
}

func internal(err error) *api.Error {
	return bootErr(http.StatusInternalServerError, "internal", "%v", err)
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

// prepare fills .Boot and renders the environment's install source,
// kernel, initrds and kernel params, each seeing those before it.
func (s *Server) prepare(t *target) *api.Error {
	base := s.URL()
	m := urlMAC(t.mac)
	info := &api.BootInfo{
		Env:           t.env.Name,
		MAC:           t.mac,
		Address:       s.cfg.Address,
		URL:           base,
		Endpoint:      s.cfg.Endpoint,
		CACert:        string(s.cfg.CACertPEM),
		CAFingerprint: s.caSum,
		AgentURL:      base + "/agent/drover",
		RenderURL:     base + "/render/" + m,
		ScriptURL:     base + "/boot/" + m + ".ipxe",
	}
	if len(s.cfg.CACertPEM) > 0 {
		info.CAURL = base + "/ca.pem"
	}
	if t.known {
		token, err := s.localToken(t.machine.Name, t.env.Name)
		if err != nil {
			return internal(err)
		}
		info.LocalURL = base + "/boot/" + m + "/local"
		info.LocalToken = token
	}
	t.info = info
	t.in.Boot = info
	var e *api.Error
	field := func(name, body string) string {
		if e != nil || body == "" {
			return ""
		}
		out, err := render.Render(t.in, "BootEnv "+t.env.Name+" "+name, body)
		if err != nil {
			e = renderErr(t, name, err)
		}
		return out
	}
	info.InstallSource = strings.TrimSpace(field("installSource", t.env.InstallSource))
	if u, err := url.Parse(info.InstallSource); err == nil && u.Host != "" {
		info.InstallSourceScheme, info.InstallSourceHost, info.InstallSourcePath = u.Scheme, u.Host, u.Path
	}
	info.Kernel = s.fileURL(field("kernel", t.env.Kernel))
	for i, body := range t.env.Initrds {
		if u := s.fileURL(field(fmt.Sprintf("initrds[%d]", i), body)); u != "" {
			info.Initrds = append(info.Initrds, u)
		}
	}
	info.KernelParams = strings.Join(strings.Fields(field("kernelParams", t.env.KernelParams)), " ")
	return e
}

// renderErr reports a template that failed: a missing param by name.
func renderErr(t *target, what string, err error) *api.Error {
	var mp *render.MissingParamError
	if errors.As(err, &mp) {
		return bootErr(http.StatusUnprocessableEntity, "missing_param", "%s: boot environment %q, %s: param %q is not set (set it on the machine, a profile or global)", t.who(), t.env.Name, what, mp.Param)
	}
	return bootErr(http.StatusUnprocessableEntity, "cannot_render", "%s: boot environment %q, %s: %v", t.who(), t.env.Name, what, err)
}

// fileURL makes a kernel or initrd reference a URL: URLs stay as they
// are, paths are files of --boot-files-dir under /files/.
func (s *Server) fileURL(ref string) string {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return ""
	}
	if u, err := url.Parse(ref); err == nil && u.Scheme != "" && u.Host != "" {
		return ref
	}
	u := url.URL{Path: "/files/" + strings.TrimPrefix(ref, "/")}
	return s.URL() + u.EscapedPath()
}

// file renders the environment's file at path for the machine.
func (s *Server) file(t *target, path string) (string, *api.Error) {
	bt := t.env.FindTemplate(path)
	if bt == nil {
		var have []string
		for _, x := range t.env.Templates {
			have = append(have, x.Path)
		}
		serves := "no files"
		if len(have) > 0 {
			serves = strings.Join(have, ", ")
		}
		return "", bootErr(http.StatusNotFound, "not_found", "%s is in boot environment %q, which serves no %q (it serves %s)", t.who(), t.env.Name, path, serves)
	}
	name, body := "BootEnv "+t.env.Name+" "+path, bt.Content
	if bt.Template != "" {
		tmpl := t.in.Templates[bt.Template]
		if tmpl == nil {
			return "", bootErr(http.StatusConflict, "cannot_render", "boot environment %q serves %q from template %q, which does not exist", t.env.Name, path, bt.Template)
		}
		name, body = bt.Template, tmpl.Content
	}
	out, err := render.Render(t.in, name, body)
	if err != nil {
		return "", renderErr(t, path, err)
	}
	return out, nil
}
