package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// principal is who is calling.
type principal struct {
	User    string // user name, or "" for an agent
	Machine string // machine name for an agent
	Role    string
	TokenID string
	// ExpiresAt ends the session (nil: never).
	ExpiresAt *time.Time
	// tokenCreated is the revision that created the token.
	tokenCreated int64
}

func (p *principal) String() string {
	if p.Machine != "" {
		return "agent:" + p.Machine
	}
	return p.User
}

type ctxKey struct{}

func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(ctxKey{}).(*principal)
	return p
}

var errUnauthorized = apiError(http.StatusUnauthorized, "unauthorized", "missing or invalid token: log in with `drover login` or set DROVER_TOKEN")

// authenticate resolves the bearer token of a request.
func (s *Server) authenticate(r *http.Request) (*principal, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return nil, errUnauthorized
	}
	prefix, id, secret, err := auth.ParseToken(tok)
	if err != nil || (prefix != auth.PrefixSession && prefix != auth.PrefixAgent) {
		return nil, errUnauthorized
	}
	var t api.Token
	rec, err := s.st.Get(r.Context(), api.KindToken, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errUnauthorized
	}
	if err != nil {
		return nil, err
	}
	if err := model.Decode(rec, &t); err != nil {
		return nil, err
	}
	if !auth.SecretMatches(secret, t.SecretHash) {
		return nil, errUnauthorized
	}
	if t.ExpiresAt != nil && time.Now().After(*t.ExpiresAt) {
		return nil, apiError(http.StatusUnauthorized, "token_expired", "token expired at %s: log in again", t.ExpiresAt.Format(time.RFC3339))
	}
	p := &principal{User: t.User, Machine: t.Machine, Role: t.Role, TokenID: t.Name, ExpiresAt: t.ExpiresAt, tokenCreated: rec.CreateRevision}
	if err := s.checkUser(r.Context(), p); err != nil {
		return nil, err
	}
	return p, nil
}

// checkUser checks that a session's user may still use it, and takes the
// user's current role.
func (s *Server) checkUser(ctx context.Context, p *principal) error {
	if p.User == "" {
		return nil
	}
	// A disabled or deleted user's sessions stop working at once.
	var u api.User
	if err := getObj(ctx, s.st, api.KindUser, p.User, &u); err != nil || u.Disabled {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return errUnauthorized
	}
	// A token older than its user belongs to an earlier user of the
	// same name.
	if p.tokenCreated < u.CreateRevision {
		return errUnauthorized
	}
	p.Role = u.Role
	return nil
}

// recheck checks again, for a long-running request, that its session is
// still good: the token still stored and unexpired, its user still
// allowed. It updates the role.
func (s *Server) recheck(ctx context.Context, p *principal) error {
	if p.ExpiresAt != nil && time.Now().After(*p.ExpiresAt) {
		return apiError(http.StatusUnauthorized, "token_expired", "token expired at %s: log in again", p.ExpiresAt.Format(time.RFC3339))
	}
	rec, err := s.st.Get(ctx, api.KindToken, p.TokenID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && rec.CreateRevision != p.tokenCreated) {
		return errUnauthorized
	}
	if err != nil {
		return err
	}
	return s.checkUser(ctx, p)
}

// concernsSession reports whether a change to (kind, name) may end or
// change p's session.
func concernsSession(p *principal, kind, name string) bool {
	return (kind == api.KindToken && name == p.TokenID) || (p.User != "" && kind == api.KindUser && name == p.User)
}

// withAuth wraps a handler that needs a logged-in caller.
func (s *Server) withAuth(h func(http.ResponseWriter, *http.Request, *principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			s.metrics.authFailures.Add(1)
			writeError(w, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)), p)
	}
}

// userOnly refuses agent tokens on user endpoints.
func (s *Server) userOnly(h func(http.ResponseWriter, *http.Request, *principal)) http.HandlerFunc {
	return s.withAuth(func(w http.ResponseWriter, r *http.Request, p *principal) {
		if p.Role == api.RoleAgent {
			writeError(w, apiError(http.StatusForbidden, "forbidden", "an agent token can only use the agent API of its own machine"))
			return
		}
		if isInteractive(r) {
			// Only once signed in can a request hold agents back.
			s.gate.enter()
			defer s.gate.leave()
		}
		h(w, r, p)
	})
}

// agentOnly admits only machine tokens.
func (s *Server) agentOnly(h func(http.ResponseWriter, *http.Request, *principal)) http.HandlerFunc {
	return s.withAuth(func(w http.ResponseWriter, r *http.Request, p *principal) {
		if p.Role != api.RoleAgent || p.Machine == "" {
			writeError(w, apiError(http.StatusForbidden, "forbidden", "this endpoint is for machine agents"))
			return
		}
		h(w, r, p)
	})
}

func forbidden(p *principal, what string) *api.Error {
	return apiError(http.StatusForbidden, "forbidden", "user %q (role %s) may not %s", p.User, p.Role, what)
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req api.LoginRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 30*24*time.Hour {
			writeError(w, badRequest("ttl %q: give a duration up to 720h", req.TTL))
			return
		}
		ttl = d
	}
	bad := apiError(http.StatusUnauthorized, "unauthorized", "wrong username or password")
	var u api.User
	if err := getObj(r.Context(), s.st, api.KindUser, req.Username, &u); err != nil {
		auth.BurnPasswordCheck(req.Password, s.cfg.PasswordHashCost)
		s.metrics.authFailures.Add(1)
		writeError(w, bad)
		return
	}
	if u.Disabled || !auth.CheckPassword(u.PasswordHash, req.Password) {
		s.metrics.authFailures.Add(1)
		writeError(w, bad)
		return
	}
	tok, exp, err := s.issueToken(r.Context(), auth.PrefixSession, u.Name, "", u.Role, ttl)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.LoginResponse{Token: tok, User: u.Name, Role: u.Role, ExpiresAt: exp})
}

// issueToken stores a new token and returns its secret form.
func (s *Server) issueToken(ctx context.Context, prefix, user, machine, role string, ttl time.Duration) (string, time.Time, error) {
	tok, op, err := s.newToken(prefix, user, machine, role, ttl)
	if err != nil {
		return "", time.Time{}, err
	}
	if _, _, err := s.st.Txn(ctx, []store.Op{op}); err != nil {
		return "", time.Time{}, err
	}
	var exp time.Time
	if ttl > 0 {
		exp = time.Now().UTC().Add(ttl)
	}
	return tok, exp, nil
}

// newToken makes a token and the op that stores it.
func (s *Server) newToken(prefix, user, machine, role string, ttl time.Duration) (string, store.Op, error) {
	tok, id, hash, err := auth.NewToken(prefix)
	if err != nil {
		return "", store.Op{}, err
	}
	now := time.Now().UTC()
	t := &api.Token{Meta: api.Meta{Kind: api.KindToken, Name: id}, User: user, Machine: machine, Role: role, SecretHash: hash, CreatedAt: now}
	var exp time.Time
	if ttl > 0 {
		exp = now.Add(ttl)
		t.ExpiresAt = &exp
	}
	if user != "" {
		t.Labels = map[string]string{"user": user}
	}
	if machine != "" {
		t.Labels = map[string]string{"machine": machine}
	}
	labels, data, err := model.Encode(t)
	if err != nil {
		return "", store.Op{}, err
	}
	return tok, store.Op{Type: store.OpCreate, Kind: api.KindToken, Name: id, Labels: labels, Data: data}, nil
}
