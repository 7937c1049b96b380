package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/auth"
	"github.com/drover-project/drover/internal/store"
)

// Sessions and join tokens are deleted a while (the grace) after they
// expire; agent credentials and what has not expired stay.
func TestExpiredSessionsAndJoinTokensAreDeleted(t *testing.T) {
	e := startServer(t, func(c *Config) { c.ExpiredTokenGrace = 3 * time.Second })
	ctx := context.Background()
	agent := e.agent("n1")
	short, err := e.client("").Login(ctx, "admin", testAdminPassword, "2s")
	if err != nil {
		t.Fatal(err)
	}
	jt, err := e.admin.CreateJoinToken(ctx, "2s", nil)
	if err != nil {
		t.Fatal(err)
	}
	long, err := e.admin.CreateJoinToken(ctx, "1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	id := func(token string) string {
		_, id, _, err := auth.ParseToken(token)
		if err != nil {
			t.Fatalf("token %q: %v", token, err)
		}
		return id
	}
	exists := func(kind, name string) bool {
		_, err := e.srv.Store().Get(ctx, kind, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	if !exists(api.KindToken, id(short.Token)) || !exists(api.KindJoinToken, id(jt.Token)) {
		t.Fatal("the new session or join token is not stored")
	}
	// Within the grace, the session is answered "expired".
	time.Sleep(3 * time.Second)
	if _, err := e.client(short.Token).List(ctx, "machines", ""); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired session within the grace: %v, want token expired", err)
	}
	waitFor(t, "the expired session and join token to be deleted", 20*time.Second, func() bool {
		return !exists(api.KindToken, id(short.Token)) && !exists(api.KindJoinToken, id(jt.Token))
	})
	for _, k := range []struct{ kind, token string }{
		{api.KindToken, e.admin.Token}, {api.KindToken, agent.Token}, {api.KindJoinToken, long.Token},
	} {
		if !exists(k.kind, id(k.token)) {
			t.Errorf("%s %s was deleted but has not expired", k.kind, id(k.token))
		}
	}
	if _, err := e.admin.List(ctx, "machines", ""); err != nil {
		t.Errorf("the admin's session stopped working: %v", err)
	}
}
