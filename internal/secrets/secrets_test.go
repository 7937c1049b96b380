package secrets

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openTestBox(t *testing.T) (*Box, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret.key")
	b, err := OpenBox(path)
	if err != nil {
		t.Fatalf("OpenBox: %v", err)
	}
	return b, path
}

func TestSealOpenRoundTrip(t *testing.T) {
	b, _ := openTestBox(t)
	for _, plain := range [][]byte{nil, []byte(""), []byte("hunter2"), bytes.Repeat([]byte{0, 1, 2, 255}, 4096)} {
		s, err := b.Seal(plain)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if !strings.HasPrefix(s, "enc:v1:") || !IsSealed(s) {
			t.Fatalf("sealed value %q lacks enc:v1: header", s)
		}
		if len(plain) > 0 && strings.Contains(s, string(plain)) {
			t.Fatalf("sealed value contains the plaintext")
		}
		got, err := b.Open(s)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("Open = %q, want %q", got, plain)
		}
	}
}

func TestSealUsesFreshNonce(t *testing.T) {
	b, _ := openTestBox(t)
	s1, _ := b.Seal([]byte("same"))
	s2, _ := b.Seal([]byte("same"))
	if s1 == s2 {
		t.Fatal("sealing the same plaintext twice gave identical output")
	}
}

func TestKeyFileCreatedPrivateAndPersistent(t *testing.T) {
	b1, path := openTestBox(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode = %o, want 600", perm)
	}
	sealed, err := b1.Seal([]byte("bmc-password"))
	if err != nil {
		t.Fatal(err)
	}

	b2, err := OpenBox(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if b1.KeyID() != b2.KeyID() {
		t.Fatalf("key id changed across OpenBox: %s vs %s", b1.KeyID(), b2.KeyID())
	}
	got, err := b2.Open(sealed)
	if err != nil || string(got) != "bmc-password" {
		t.Fatalf("Open after reopen = %q, %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestConcurrentOpenBoxAgreesOnOneKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "secret.key")
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b, err := OpenBox(path)
			if err != nil {
				t.Errorf("OpenBox: %v", err)
				return
			}
			ids[i] = b.KeyID()
		})
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("concurrent OpenBox calls produced different keys: %v", ids)
		}
	}
}

func TestTamperDetected(t *testing.T) {
	b, _ := openTestBox(t)
	sealed, _ := b.Seal([]byte("secret value"))
	raw, err := encoding.DecodeString(strings.TrimPrefix(sealed, header))
	if err != nil {
		t.Fatal(err)
	}
	// Flip one bit in every byte after the key id in turn: nonce,
	// ciphertext and tag must all be covered by authentication.
	for i := keyIDSize; i < len(raw); i++ {
		mod := bytes.Clone(raw)
		mod[i] ^= 0x01
		_, err := b.Open(header + encoding.EncodeToString(mod))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipping byte %d: err = %v, want ErrCorrupt", i, err)
		}
	}
	// Truncation and garbage.
	for _, s := range []string{
		header,
		header + "!!!notbase64",
		header + encoding.EncodeToString(raw[:len(raw)-1]),
		header + encoding.EncodeToString(raw[:minSealSize-1]),
		sealed + "A",
	} {
		if _, err := b.Open(s); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open(%q): err = %v, want ErrCorrupt", s, err)
		}
	}
}

func TestForeignKeyDetected(t *testing.T) {
	a, _ := openTestBox(t)
	other, _ := openTestBox(t)
	sealed, _ := other.Seal([]byte("from another site"))
	_, err := a.Open(sealed)
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("err = %v, want ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), other.KeyID()) || !strings.Contains(err.Error(), a.KeyID()) {
		t.Fatalf("error should name both key ids: %v", err)
	}
	// Forging the key id does not help: the id is authenticated.
	raw, _ := encoding.DecodeString(strings.TrimPrefix(sealed, header))
	copy(raw, a.keyID[:])
	if _, err := a.Open(header + encoding.EncodeToString(raw)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("forged key id: err = %v, want ErrCorrupt", err)
	}
}

func TestOpenRejectsUnsealedAndOtherVersions(t *testing.T) {
	b, _ := openTestBox(t)
	if _, err := b.Open("plain text"); !errors.Is(err, ErrNotSealed) {
		t.Errorf("plain: err = %v, want ErrNotSealed", err)
	}
	if _, err := b.Open("enc:v2:AAAA"); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("v2: err = %v, want ErrUnsupportedVersion", err)
	}
}

func TestIsSealed(t *testing.T) {
	cases := map[string]bool{
		"enc:v1:abc":  true,
		"enc:v12:abc": true,
		"enc:v1:":     true,
		"enc:v:abc":   false,
		"enc:vx:abc":  false,
		"enc:v1":      false,
		"enc:":        false,
		"hunter2":     false,
		"":            false,
		"ENC:v1:abc":  false,
	}
	b, _ := openTestBox(t)
	for s, want := range cases {
		if got := IsSealed(s); got != want {
			t.Errorf("IsSealed(%q) = %v, want %v", s, got, want)
		}
		if got := b.IsSealed(s); got != want {
			t.Errorf("Box.IsSealed(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestDamagedKeyFileIsNotReplaced(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":   "",
		"short":   "c2hvcnQ=\n",
		"garbage": "not base64 at all\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := OpenBox(path)
		if err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("%s: err = %v, want a 'damaged' error", name, err)
		}
		after, _ := os.ReadFile(path)
		if string(after) != content {
			t.Errorf("%s: key file was modified", name)
		}
	}
}

func TestNewBoxRejectsWrongKeySize(t *testing.T) {
	if _, err := NewBox(make([]byte, 16)); err == nil {
		t.Fatal("NewBox accepted a 16-byte key")
	}
}
