package httpboot

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/boot/macindex"
	"github.com/drover-project/drover/internal/content"
	"github.com/drover-project/drover/internal/engine"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/secrets"
	"github.com/drover-project/drover/internal/store"
	"github.com/drover-project/drover/internal/store/bolt"
)

// testCA is a stand-in CA certificate: only its bytes matter here.
const testCA = "-----BEGIN CERTIFICATE-----\nZHJvdmVyIHRlc3QgQ0E=\n-----END CERTIFICATE-----\n"

// env is a store with the built-in content, a running engine and MAC
// index, and a boot server advertising 10.0.0.1:8080 (never contacted:
// requests go to its handler or to its loopback listener).
type env struct {
	t     *testing.T
	st    store.Store
	box   *secrets.Box
	srv   *Server
	h     http.Handler
	files string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key := make([]byte, secrets.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	box, err := secrets.NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, box: box, files: t.TempDir()}
	pack := content.Default()
	for i := range pack.Objects {
		obj, err := pack.Objects[i].Decode()
		if err != nil {
			t.Fatal(err)
		}
		e.put(obj)
	}
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	eng := engine.New(st, engine.Config{}, box, log)
	index := macindex.New(st, log)
	done := make(chan struct{}, 2)
	go func() { _ = eng.Run(ctx); done <- struct{}{} }()
	go func() { index.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	<-eng.Ready()

	agent := filepath.Join(t.TempDir(), "drover")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\necho agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.srv, err = New(Config{
		Listen: "127.0.0.1:8080", Address: "10.0.0.1", FilesDir: e.files,
		Endpoint: "https://10.0.0.1:8443", CACertPEM: []byte(testCA), AgentBinary: agent, Logger: log,
	}, st, index, eng, box)
	if err != nil {
		t.Fatal(err)
	}
	e.h = e.srv.Handler()
	return e
}

func (e *env) put(obj api.Object) {
	e.t.Helper()
	lbls, data, err := model.Encode(obj)
	if err != nil {
		e.t.Fatal(err)
	}
	m := obj.GetMeta()
	if _, err := store.Put(context.Background(), e.st, m.Kind, m.Name, lbls, data, 0); err != nil {
		e.t.Fatal(err)
	}
}

// sealed is a secure param value as the server stores it.
func (e *env) sealed(v string) json.RawMessage {
	e.t.Helper()
	b, _ := json.Marshal(v)
	s, err := e.box.Seal(b)
	if err != nil {
		e.t.Fatal(err)
	}
	out, _ := json.Marshal(s)
	return out
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// machine writes a registered machine with a NIC of that MAC.
func (e *env) machine(name, mac, bootEnv string, params map[string]json.RawMessage) *api.Machine {
	e.t.Helper()
	m := &api.Machine{Meta: api.Meta{Kind: api.KindMachine, Name: name}, BootEnv: bootEnv, Params: params}
	m.Status.State = api.StateReady
	m.Status.Hardware = &api.Hardware{CPUs: 2, PrimaryMAC: mac}
	m.Status.Inventory = &api.Inventory{NICs: []api.NIC{{Name: "eth0", MAC: mac, Up: true}}}
	e.put(m)
	return m
}

// global sets the global profile's params.
func (e *env) global(params map[string]json.RawMessage) {
	e.put(&api.Profile{Meta: api.Meta{Kind: api.KindProfile, Name: api.GlobalProfile}, Params: params})
}

type response struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(method, target string, header map[string]string) response {
	e.t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req.WithContext(ctx))
	b, _ := io.ReadAll(rec.Result().Body)
	return response{status: rec.Code, header: rec.Result().Header, body: string(b)}
}

func (e *env) get(target string) response { return e.do("GET", target, nil) }

// must gets a target that must answer 200.
func (e *env) must(target string) response {
	e.t.Helper()
	r := e.get(target)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", target, r.status, r.body)
	}
	if msg := r.header.Get("X-Drover-Error"); msg != "" {
		e.t.Fatalf("GET %s: X-Drover-Error: %s\n%s", target, msg, r.body)
	}
	return r
}

func contains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, s)
		}
	}
}
