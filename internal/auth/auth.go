// Package auth holds drover's credentials: password hashing, API tokens and
// what each role may do.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is bcrypt's default: about 50 ms a check on this class of CPU,
// paid only at login; sessions then use tokens, checked by a SHA-256.
const bcryptCost = bcrypt.DefaultCost

// HashPassword hashes a password for storage.
func HashPassword(password string) (string, error) {
	if len(password) < 8 {
		return "", errors.New("password must have at least 8 characters")
	}
	if len(password) > 72 {
		return "", errors.New("password must have at most 72 bytes")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// CheckPassword reports whether password matches hash.
func CheckPassword(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// dummyHash is compared against when a user does not exist, so that a login
// for an unknown user takes as long as one with a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("drover-timing-equaliser"), bcryptCost)

// BurnPasswordCheck spends the time of one password check.
func BurnPasswordCheck(password string) {
	_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
}

// Token prefixes tell what a secret is for when it shows up in a log or a
// shell history.
const (
	PrefixSession = "drs"
	PrefixAgent   = "dra"
	PrefixJoin    = "drj"
)

// NewToken makes a token "<prefix>_<id>_<secret>". The id names the stored
// object; only a hash of the secret is stored.
func NewToken(prefix string) (token, id, secretHash string, err error) {
	idb := make([]byte, 8)
	sec := make([]byte, 24)
	if _, err = rand.Read(idb); err != nil {
		return
	}
	if _, err = rand.Read(sec); err != nil {
		return
	}
	id = hex.EncodeToString(idb)
	secret := base64.RawURLEncoding.EncodeToString(sec)
	token = prefix + "_" + id + "_" + secret
	return token, id, HashSecret(secret), nil
}

// ParseToken splits a token into its prefix, id and secret.
func ParseToken(token string) (prefix, id, secret string, err error) {
	parts := strings.SplitN(token, "_", 3)
	if len(parts) != 3 || len(parts[1]) != 16 || parts[2] == "" {
		return "", "", "", errors.New("malformed token")
	}
	if _, err := hex.DecodeString(parts[1]); err != nil {
		return "", "", "", errors.New("malformed token")
	}
	return parts[0], parts[1], parts[2], nil
}

// HashSecret hashes a token secret for storage. Secrets are 192 random bits,
// so a plain SHA-256 is enough (no need for a slow hash).
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches compares a secret with a stored hash in constant time.
func SecretMatches(secret, hash string) bool {
	h := HashSecret(secret)
	return subtle.ConstantTimeCompare([]byte(h), []byte(hash)) == 1
}

// RandomPassword makes a password for a first admin or a management user.
func RandomPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
