package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/inventory"
	"github.com/drover-project/drover/internal/store"
	"golang.org/x/crypto/bcrypt"
)

const testAdminPassword = "admin-password-for-tests"

// env is one real server on loopback and an admin client for it.
type env struct {
	t     *testing.T
	srv   *Server
	url   string
	admin *api.Client
	ctx   context.Context

	mu   sync.Mutex
	base *api.Client
}

// startServer starts a real server (store, engine, HTTPS API) in a temp dir.
func startServer(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	cfg := Config{
		DataDir:       t.TempDir(),
		Listen:        "127.0.0.1:0",
		AdminPassword: testAdminPassword,
		// bcrypt at its default cost takes over a second under the race
		// detector; the cost does not change what the tests check.
		PasswordHashCost: bcrypt.MinCost,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Tests start from an empty site; content tests turn it on.
		NoDefaultContent: true,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		srv.Close()
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	e := &env{t: t, srv: srv, url: "https://" + srv.Addr(), ctx: ctx}
	t.Cleanup(func() {
		// Clients hang up first: the server would otherwise give each
		// HTTP/2 connection a second to do it after its GOAWAY.
		e.mu.Lock()
		if e.base != nil {
			e.base.HTTP.CloseIdleConnections()
		}
		e.mu.Unlock()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
		srv.Close()
	})
	select {
	case <-srv.Engine().Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("engine not ready")
	}
	anon := e.client("")
	lr, err := anon.Login(context.Background(), "admin", testAdminPassword, "")
	if err != nil {
		t.Fatalf("admin login: %v", err)
	}
	e.admin = anon.WithToken(lr.Token)
	return e
}

// client returns a client trusting the server's CA with a token. All
// clients share one transport, closed when the test ends.
func (e *env) client(token string) *api.Client {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.base == nil {
		c, err := api.NewClient(e.url, e.srv.CACertPEM(), "")
		if err != nil {
			e.t.Fatal(err)
		}
		e.base = c
	}
	return e.base.WithToken(token)
}

// user creates a user with a role and returns a logged-in client.
func (e *env) user(name, role string) *api.Client {
	e.t.Helper()
	pw := "pw-" + name + "-12345"
	e.mustApply(e.admin, &api.User{Meta: api.Meta{Kind: api.KindUser, Name: name}, Role: role, Password: pw})
	return e.login(name, pw)
}

func (e *env) login(name, pw string) *api.Client {
	e.t.Helper()
	lr, err := e.client("").Login(context.Background(), name, pw, "")
	if err != nil {
		e.t.Fatalf("login %s: %v", name, err)
	}
	return e.client(lr.Token)
}

var agentSeq atomic.Int64

// agent registers a machine with a fresh join token, as an agent does, and
// returns a client holding the agent's own credential.
func (e *env) agent(name string) *api.Client {
	e.t.Helper()
	ctx := context.Background()
	jt, err := e.admin.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		e.t.Fatalf("join token: %v", err)
	}
	seq := int(agentSeq.Add(1))
	req := api.RegisterRequest{
		Name:      name,
		AgentID:   fmt.Sprintf("agent-id-%016d", seq),
		Inventory: inventory.Simulated(name, seq),
	}
	var resp api.RegisterResponse
	if err := e.client(jt.Token).Do(ctx, http.MethodPost, "/api/v1/agent/register", req, &resp); err != nil {
		e.t.Fatalf("register %s: %v", name, err)
	}
	if resp.Machine != name || !strings.HasPrefix(resp.Token, "dra_") {
		e.t.Fatalf("register %s: got %+v", name, resp)
	}
	return e.client(resp.Token)
}

func (e *env) mustApply(c *api.Client, objs ...api.Object) *api.ApplyResponse {
	e.t.Helper()
	resp, err := c.ApplyObjects(context.Background(), objs...)
	if err != nil {
		e.t.Fatalf("apply: %v", err)
	}
	return resp
}

func (e *env) rev() int64 {
	e.t.Helper()
	rev, err := e.srv.Store().Revision(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return rev
}

// apiErr asserts err is an API error with status and returns it.
func apiErr(t *testing.T, err error, status int) *api.Error {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %d, got %v", status, err)
	}
	if ae.Status != status {
		t.Fatalf("want status %d, got %d (%s: %s)", status, ae.Status, ae.Code, ae.Message)
	}
	return ae
}

// raw sends a request with a raw body and content type and returns the
// status and body.
func (e *env) raw(token, method, path, contentType string, body []byte) (int, []byte) {
	e.t.Helper()
	c := e.client(token)
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// storeRecord reads a raw store record, bypassing the API.
func (e *env) storeRecord(kind, name string) store.Record {
	e.t.Helper()
	rec, err := e.srv.Store().Get(context.Background(), kind, name)
	if err != nil {
		e.t.Fatalf("store get %s %s: %v", kind, name, err)
	}
	return rec
}

// allStoreData concatenates the data of every record of the given kinds.
func (e *env) allStoreData(kinds ...string) string {
	e.t.Helper()
	var b strings.Builder
	for _, k := range kinds {
		recs, _, err := e.srv.Store().List(context.Background(), k, store.ListOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		for _, r := range recs {
			b.Write(r.Data)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFor polls cond (in tests only) until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
