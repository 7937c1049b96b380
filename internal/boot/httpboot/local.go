package httpboot

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

func (s *Server) handleRender(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	if err := model.ValidateBootPath(path); err != nil {
		writeError(w, bootErr(http.StatusNotFound, "not_found", "%v", err))
		return
	}
	t, e := s.resolve(r.Context(), r.PathValue("mac"))
	var out string
	if e == nil {
		out, e = s.file(t, path)
	}
	if e != nil {
		s.log.Warn("boot file not rendered", "mac", r.PathValue("mac"), "path", path, "client", r.RemoteAddr, "err", e.Message)
		writeError(w, e)
		return
	}
	s.log.Info("boot file rendered", "mac", t.mac, "machine", t.machine.Name, "bootEnv", t.env.Name, "path", path, "client", r.RemoteAddr)
	// It may hold decrypted secure params: never cached on the way.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Drover-Boot-Env", t.env.Name)
	_, _ = w.Write([]byte(out))
}

// localClaim is what a switch-to-local token says: this machine, while in
// this environment, until then.
type localClaim struct {
	Machine string `json:"m"`
	Env     string `json:"e"`
	Expires int64  `json:"x"`
}

// localToken seals a claim with the server's key: only this server can
// make or read one, and nothing needs to be stored.
func (s *Server) localToken(machine, env string) (string, error) {
	if s.sealer == nil {
		return "", errors.New("no key to seal boot tokens with")
	}
	b, _ := json.Marshal(localClaim{Machine: machine, Env: env, Expires: s.now().Add(s.cfg.LocalTokenTTL).Unix()})
	sealed, err := s.sealer.Seal(b)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString([]byte(sealed)), nil
}

func (s *Server) openLocalToken(token string) (localClaim, error) {
	var c localClaim
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || s.sealer == nil {
		return c, errors.New("not a boot token")
	}
	b, err := s.sealer.Open(string(raw))
	if err != nil {
		return c, errors.New("not a boot token of this server")
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, errors.New("not a boot token")
	}
	return c, nil
}

// handleLocal switches a machine to the local boot environment: an
// installer's last step, with the token rendered into its files. The
// token is good only for the machine it was rendered for, while that
// machine is still in the environment it was rendered from (so a token
// seen on the wire cannot undo a later reinstall), and until it expires.
func (s *Server) handleLocal(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeError(w, bootErr(http.StatusUnauthorized, "unauthorized", "send the token rendered into the machine's files as Authorization: Bearer TOKEN"))
		return
	}
	claim, err := s.openLocalToken(strings.TrimSpace(token))
	if err != nil {
		writeError(w, bootErr(http.StatusUnauthorized, "unauthorized", "%v", err))
		return
	}
	if s.now().Unix() > claim.Expires {
		writeError(w, bootErr(http.StatusUnauthorized, "unauthorized", "the boot token of machine %q expired at %s; set its bootEnv through the API", claim.Machine, time.Unix(claim.Expires, 0).UTC().Format(time.RFC3339)))
		return
	}
	mac, err := api.NormalizeMAC(r.PathValue("mac"))
	if err != nil {
		writeError(w, bootErr(http.StatusBadRequest, "bad_request", "%v", err))
		return
	}
	name, err := s.index.Lookup(r.Context(), mac)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	if name != claim.Machine {
		writeError(w, bootErr(http.StatusForbidden, "forbidden", "the token is machine %q's, and %s is not its MAC", claim.Machine, mac))
		return
	}
	rev, changed, e := s.setLocal(r.Context(), claim)
	if e != nil {
		s.log.Warn("switch to local refused", "machine", claim.Machine, "client", r.RemoteAddr, "err", e.Message)
		writeError(w, e)
		return
	}
	if changed {
		s.log.Info("machine switched to local boot by its installer", "machine", claim.Machine, "from", claim.Env, "client", r.RemoteAddr, "revision", rev)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"machine": claim.Machine, "bootEnv": api.BootEnvLocal, "revision": rev})
}

// setLocal writes bootEnv local on the machine, with an audit record in
// the same transaction, retrying when another write got in between.
func (s *Server) setLocal(ctx context.Context, claim localClaim) (int64, bool, *api.Error) {
	for attempt := 0; ; attempt++ {
		rec, err := s.st.Get(ctx, api.KindMachine, claim.Machine)
		if errors.Is(err, store.ErrNotFound) {
			return 0, false, bootErr(http.StatusNotFound, "not_found", "machine %q no longer exists", claim.Machine)
		}
		if err != nil {
			return 0, false, internal(err)
		}
		var m api.Machine
		if err := model.Decode(rec, &m); err != nil {
			return 0, false, internal(err)
		}
		switch m.BootEnvName() {
		case api.BootEnvLocal:
			return rec.Revision, false, nil // asked twice: done already
		case claim.Env:
		default:
			return 0, false, bootErr(http.StatusConflict, "conflict", "machine %q is in boot environment %q now, not %q the token was made for; nothing changed", m.Name, m.BootEnvName(), claim.Env)
		}
		m.BootEnv = api.BootEnvLocal
		m.Revision, m.CreateRevision = 0, 0
		lbls, data, err := model.Encode(&m)
		if err != nil {
			return 0, false, internal(err)
		}
		now := s.now().UTC()
		audit := &api.Audit{
			Meta:   api.Meta{Kind: api.KindAudit, Name: fmt.Sprintf("%d-boot-%s-0000", now.UnixNano(), m.Name), Labels: map[string]string{"user": "boot"}},
			Time:   now,
			User:   "boot:" + m.Name,
			Action: "updated",
			Target: api.KindMachine + "/" + m.Name,
			Detail: fmt.Sprintf("bootEnv %s -> local (the installer's last step)", claim.Env),
		}
		albls, adata, err := model.Encode(audit)
		if err != nil {
			return 0, false, internal(err)
		}
		_, rev, err := s.st.Txn(ctx, []store.Op{
			{Type: store.OpUpdate, Kind: api.KindMachine, Name: m.Name, Labels: lbls, Data: data, ExpectRevision: rec.Revision},
			{Type: store.OpPut, Kind: api.KindAudit, Name: audit.Name, Labels: albls, Data: adata},
		})
		if errors.Is(err, store.ErrConflict) && attempt < 10 {
			continue // a heartbeat or another write got in between
		}
		if err != nil {
			return 0, false, internal(err)
		}
		return rev, true, nil
	}
}
