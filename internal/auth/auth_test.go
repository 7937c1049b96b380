package auth

import (
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
	"golang.org/x/crypto/bcrypt"
)

func TestPasswords(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := bcrypt.Cost([]byte(h)); c != DefaultCost {
		t.Errorf("default cost %d, want %d", c, DefaultCost)
	}
	if strings.Contains(h, "correct horse") || !CheckPassword(h, "correct horse") || CheckPassword(h, "correct horsE") {
		t.Error("hash does not check as it should")
	}
	low, err := HashPasswordCost("correct horse", bcrypt.MinCost)
	if err != nil || !CheckPassword(low, "correct horse") {
		t.Errorf("low cost: %v", err)
	}
	for _, c := range []struct {
		pw   string
		cost int
	}{{"short", 0}, {strings.Repeat("x", 73), 0}, {"long enough", 3}, {"long enough", 32}} {
		if _, err := HashPasswordCost(c.pw, c.cost); err == nil {
			t.Errorf("HashPasswordCost(%d chars, %d) accepted", len(c.pw), c.cost)
		}
	}
	BurnPasswordCheck("x", bcrypt.MinCost) // must not panic
}

func TestTokens(t *testing.T) {
	tok, id, hash, err := NewToken(PrefixSession)
	if err != nil {
		t.Fatal(err)
	}
	prefix, gotID, secret, err := ParseToken(tok)
	if err != nil || prefix != PrefixSession || gotID != id {
		t.Fatalf("ParseToken(%q) = %q %q %v", tok, prefix, gotID, err)
	}
	if !SecretMatches(secret, hash) || SecretMatches(secret+"x", hash) || strings.Contains(hash, secret) {
		t.Error("secret and hash do not match as they should")
	}
	for _, bad := range []string{"", "drs", "drs_abc_x", "drs_0123456789abcdeg_x", "drs_0123456789abcdef_", "nounderscores"} {
		if _, _, _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
	tok2, id2, _, _ := NewToken(PrefixSession)
	if tok2 == tok || id2 == id {
		t.Error("two tokens are the same")
	}
}

func TestAllowed(t *testing.T) {
	kinds := []string{api.KindMachine, api.KindProfile, api.KindJob, api.KindAudit, api.KindJoinToken, api.KindUser, api.KindToken}
	userAdmin := map[string]bool{api.KindUser: true, api.KindToken: true}
	for _, k := range kinds {
		for _, c := range []struct {
			role        string
			read, write bool
		}{
			{api.RoleAdmin, true, true},
			{api.RoleOperator, !userAdmin[k], !userAdmin[k]},
			{api.RoleViewer, !userAdmin[k], false},
			{api.RoleAgent, false, false},
			{"", false, false},
			{"root", false, false},
		} {
			if got := Allowed(c.role, Read, k); got != c.read {
				t.Errorf("Allowed(%q, Read, %s) = %v", c.role, k, got)
			}
			if got := Allowed(c.role, Write, k); got != c.write {
				t.Errorf("Allowed(%q, Write, %s) = %v", c.role, k, got)
			}
		}
	}
	for role, want := range map[string]bool{api.RoleAdmin: true, api.RoleOperator: true, api.RoleViewer: false, api.RoleAgent: false, "": false} {
		if CanAct(role) != want {
			t.Errorf("CanAct(%q) != %v", role, want)
		}
	}
}
