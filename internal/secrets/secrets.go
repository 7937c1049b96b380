// Package secrets encrypts values at rest: secure params and stored
// credentials (BMC passwords, site tokens) are sealed with a per-endpoint key
// before they reach the store, so a copy of the database alone reveals nothing.
//
// A sealed value is a self-describing string:
//
//	enc:v1:<base64url(keyID[4] | nonce[12] | AES-256-GCM ciphertext+tag)>
//
// The key ID lets Open tell "sealed with a different key" (a database moved
// to another endpoint without its secret.key) apart from "corrupted or
// tampered with". The "enc:v1:" header and the key ID are authenticated as
// GCM additional data, so neither can be altered without detection.
package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length of the secret key in bytes (AES-256).
const KeySize = 32

const (
	prefix      = "enc:"
	version     = "v1"
	header      = prefix + version + ":"
	keyIDSize   = 4
	nonceSize   = 12
	minSealSize = keyIDSize + nonceSize + 16 // 16 = GCM tag
)

var encoding = base64.RawURLEncoding

var (
	// ErrNotSealed means the string is not a sealed value at all.
	ErrNotSealed = errors.New("value is not sealed (no enc: prefix)")
	// ErrWrongKey means the value was sealed by a different key, typically
	// a store copied from another endpoint without its secret key file.
	ErrWrongKey = errors.New("value was sealed with a different key")
	// ErrCorrupt means the value is malformed, truncated or was modified.
	ErrCorrupt = errors.New("sealed value is corrupted or was tampered with")
	// ErrUnsupportedVersion means the value uses a format this build does
	// not understand, e.g. it was written by a newer drover.
	ErrUnsupportedVersion = errors.New("sealed value has an unsupported format version")
)

// Box seals and opens values with one key. It is safe for concurrent use.
type Box struct {
	aead  cipher.AEAD
	keyID [keyIDSize]byte
}

// OpenBox loads the key from path, creating the file with a fresh random key
// (mode 0600) if it does not exist. An existing file that cannot be read or
// holds no valid key is an error: silently replacing it would make every
// value sealed with the old key unreadable.
func OpenBox(path string) (*Box, error) {
	key, err := loadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	return NewBox(key)
}

// NewBox returns a Box for a key of KeySize bytes.
func NewBox(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	b := &Box{aead: aead}
	// The key ID is an HMAC of a fixed label rather than a hash of the key
	// itself, so it reveals nothing usable about the key.
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("drover secrets key id v1"))
	copy(b.keyID[:], mac.Sum(nil))
	return b, nil
}

// KeyID identifies the box's key in sealed values (8 hex digits). It is
// safe to log and show to operators.
func (b *Box) KeyID() string { return hex.EncodeToString(b.keyID[:]) }

// Seal encrypts plaintext with a fresh random nonce and returns a sealed
// string of the form "enc:v1:<base64url>".
func (b *Box) Seal(plaintext []byte) (string, error) {
	buf := make([]byte, keyIDSize+nonceSize, minSealSize+len(plaintext))
	copy(buf, b.keyID[:])
	nonce := buf[keyIDSize : keyIDSize+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: reading random nonce: %w", err)
	}
	buf = b.aead.Seal(buf, nonce, plaintext, b.additionalData())
	return header + encoding.EncodeToString(buf), nil
}

// Open decrypts a value produced by Seal. Errors wrap ErrNotSealed,
// ErrUnsupportedVersion, ErrWrongKey or ErrCorrupt.
func (b *Box) Open(s string) ([]byte, error) {
	if !strings.HasPrefix(s, prefix) {
		return nil, ErrNotSealed
	}
	if !strings.HasPrefix(s, header) {
		v, _, _ := strings.Cut(strings.TrimPrefix(s, prefix), ":")
		if len(v) > 16 {
			v = v[:16] + "..."
		}
		return nil, fmt.Errorf("%w: %q (this drover reads %s; upgrade drover)", ErrUnsupportedVersion, v, version)
	}
	raw, err := encoding.Strict().DecodeString(s[len(header):])
	if err != nil {
		return nil, fmt.Errorf("%w: invalid base64: %v", ErrCorrupt, err)
	}
	if len(raw) < minSealSize {
		return nil, fmt.Errorf("%w: %d bytes is too short to be a sealed value", ErrCorrupt, len(raw))
	}
	if !bytes.Equal(raw[:keyIDSize], b.keyID[:]) {
		return nil, fmt.Errorf("%w: sealed with key %s, this endpoint's key is %s (was the store copied without its secret.key?)",
			ErrWrongKey, hex.EncodeToString(raw[:keyIDSize]), b.KeyID())
	}
	nonce := raw[keyIDSize : keyIDSize+nonceSize]
	plaintext, err := b.aead.Open(nil, nonce, raw[keyIDSize+nonceSize:], b.additionalData())
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrCorrupt)
	}
	return plaintext, nil
}

func (b *Box) additionalData() []byte {
	return append([]byte(header), b.keyID[:]...)
}

// IsSealed is the package-level IsSealed, as a method so that a *Box can
// stand in wherever both "is this sealed?" and Open are needed.
func (b *Box) IsSealed(s string) bool { return IsSealed(s) }

// IsSealed reports whether s looks like a sealed value ("enc:v<N>:..."),
// whatever its version or key. It does not check that s can be opened.
func IsSealed(s string) bool {
	rest, ok := strings.CutPrefix(s, prefix+"v")
	if !ok {
		return false
	}
	digits, _, ok := strings.Cut(rest, ":")
	if !ok || digits == "" {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// loadOrCreateKey reads the key file, or creates it if it does not exist.
// The file holds the key as one line of standard base64 so that operators
// can back it up or move it through a secret manager as text.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating secret key: %w", err)
	}
	created, err := createExclusive(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"))
	if err != nil {
		return nil, fmt.Errorf("creating secret key file: %w", err)
	}
	if !created {
		// Another process created it first; use theirs.
		return readKey(path)
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading secret key file: %w", err)
	}
	text := bytes.TrimSpace(data)
	key, err := base64.StdEncoding.Strict().DecodeString(string(text))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("secret key file %s: want one line of base64 encoding %d bytes; the file is damaged (restore it from backup: without it sealed values cannot be read)", path, KeySize)
	}
	return key, nil
}

// createExclusive writes data to a temporary file and links it into place
// only if path does not exist yet, so the file appears complete or not at
// all and a concurrent creator never has its key overwritten. It reports
// false if path already existed.
func createExclusive(path string, data []byte) (bool, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		// Some file systems have no hard links; fall back to a rename,
		// which is atomic but can race with another creator.
		if _, statErr := os.Lstat(path); statErr == nil {
			return false, nil
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return false, err
		}
	}
	syncDir(dir)
	return true, nil
}

// syncDir makes a rename or link in dir durable. Errors are ignored: some
// file systems do not support syncing directories, and the data itself has
// already been synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
