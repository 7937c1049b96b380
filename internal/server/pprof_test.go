package server

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/drover-project/drover/api"
)

// Profiles are for admins only: they show what the server holds.
func TestPprofAdminOnly(t *testing.T) {
	e := startServer(t, nil)
	op := e.user("op", api.RoleOperator)
	viewer := e.user("vw", api.RoleViewer)
	agent := e.agent("pp1")
	for _, c := range []struct {
		name   string
		token  string
		status int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"viewer", viewer.Token, http.StatusForbidden},
		{"operator", op.Token, http.StatusForbidden},
		{"agent", agent.Token, http.StatusForbidden},
		{"admin", e.admin.Token, http.StatusOK},
	} {
		status, body := e.raw(c.token, http.MethodGet, "/debug/pprof/heap?debug=1", "", nil)
		if status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, status, c.status, body)
		}
		if c.status == http.StatusOK && !bytes.Contains(body, []byte("heap profile")) {
			t.Errorf("admin got no heap profile: %.200s", body)
		}
	}
}
