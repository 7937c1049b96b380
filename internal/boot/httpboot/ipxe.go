package httpboot

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/render"
)

// retrySeconds is how long a machine whose script could not be made waits
// before asking again.
const retrySeconds = 30

func (s *Server) handleScript(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("script")
	mac, ok := strings.CutSuffix(file, ".ipxe")
	if !ok {
		writeError(w, bootErr(http.StatusNotFound, "not_found", "no such boot script %q (scripts are /boot/<mac>.ipxe)", file))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	t, e := s.resolve(r.Context(), mac)
	var script string
	if e == nil {
		script, e = s.script(t)
	}
	if e != nil {
		if e.Status == http.StatusBadRequest || e.Status == http.StatusInternalServerError {
			writeError(w, e)
			return
		}
		// iPXE shows nothing of a failed download: answer with a script
		// that says on the console what is wrong, then asks again.
		s.log.Warn("boot script not made", "mac", mac, "client", r.RemoteAddr, "err", e.Message)
		w.Header().Set("X-Drover-Error", headerSafe(e.Message))
		self := s.URL() + "/boot/" + url.PathEscape(file)
		if t != nil {
			self = t.info.ScriptURL
		}
		_, _ = fmt.Fprint(w, errorScript(e.Message, self))
		return
	}
	w.Header().Set("X-Drover-Boot-Env", t.env.Name)
	if t.known {
		w.Header().Set("X-Drover-Machine", t.machine.Name)
	}
	s.log.Info("boot script", "mac", t.mac, "machine", t.machine.Name, "bootEnv", t.env.Name, "client", r.RemoteAddr)
	_, _ = fmt.Fprint(w, script)
}

// script is the machine's iPXE script: the environment's own, or one
// that boots its kernel and initrds.
func (s *Server) script(t *target) (string, *api.Error) {
	if t.env.IPXEScript != "" {
		out, err := render.Render(t.in, "BootEnv "+t.env.Name+" ipxeScript", t.env.IPXEScript)
		if err != nil {
			return "", renderErr(t, "ipxeScript", err)
		}
		if !strings.HasPrefix(out, "#!ipxe") {
			out = "#!ipxe\n" + out
		}
		return out, nil
	}
	return defaultScript(t), nil
}

// defaultScript boots the kernel with its initrds. Each initrd is named
// and the kernel told its name (initrd=NAME): kernels booted through
// UEFI's stub find their initrds that way.
func defaultScript(t *target) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!ipxe\n# drover: %s, boot environment %s\n", strings.ReplaceAll(t.who(), "\n", " "), t.env.Name)
	fmt.Fprintf(&b, "echo drover: booting %s\n", consoleSafe(t.env.Name))
	names := initrdNames(t.info.Initrds)
	args := t.info.KernelParams
	for _, n := range names {
		args = strings.TrimSpace(args + " initrd=" + n)
	}
	fmt.Fprintf(&b, "kernel %s %s || goto failed\n", t.info.Kernel, scriptSafe(args))
	for i, u := range t.info.Initrds {
		fmt.Fprintf(&b, "initrd --name %s %s || goto failed\n", names[i], u)
	}
	b.WriteString("boot || goto failed\n:failed\n")
	fmt.Fprintf(&b, "echo drover: booting %s failed; asking again in %d seconds\nsleep %d\n", consoleSafe(t.env.Name), retrySeconds, retrySeconds)
	fmt.Fprintf(&b, "chain --replace --autofree %s || reboot\n", t.info.ScriptURL)
	return b.String()
}

// initrdNames names initrds after their files, made unique.
func initrdNames(urls []string) []string {
	out := make([]string, len(urls))
	seen := map[string]bool{}
	for i, u := range urls {
		name := "initrd"
		if p, err := url.Parse(u); err == nil {
			if base := path.Base(p.Path); base != "." && base != "/" && base != "" {
				name = base
			}
		}
		name = safeName(name)
		if seen[name] {
			name = fmt.Sprintf("%d-%s", i, name)
		}
		seen[name] = true
		out[i] = name
	}
	return out
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// errorScript shows a message on the machine's console, waits, and asks
// for the script again, so the machine boots as soon as the problem is
// fixed.
func errorScript(msg, self string) string {
	return fmt.Sprintf("#!ipxe\necho drover: %s\necho drover: asking again in %d seconds\nsleep %d\nchain --replace --autofree %s || reboot\n",
		consoleSafe(msg), retrySeconds, retrySeconds, self)
}

// scriptSafe keeps a kernel command line on its line. iPXE settings
// (${net0/ip}) are left for iPXE to expand: a boot environment may use
// them.
func scriptSafe(s string) string { return strings.Join(strings.Fields(s), " ") }

// consoleSafe makes a message one line of printable ASCII that iPXE's
// echo prints as is.
func consoleSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, s)
	return strings.ReplaceAll(scriptSafe(s), "${", "$ {")
}

func headerSafe(s string) string {
	s = consoleSafe(s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
