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
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// DefaultCost is bcrypt's default: about 50 ms a check on this class of CPU,
// paid only at login; sessions then use tokens, checked by a SHA-256.
const DefaultCost = bcrypt.DefaultCost

// HashPassword hashes a password for storage at the default cost.
func HashPassword(password string) (string, error) {
	return HashPasswordCost(password, DefaultCost)
}

// HashPasswordCost hashes a password at a bcrypt cost (0: DefaultCost).
// The cost is kept in the hash, so hashes of any cost check alike.
func HashPasswordCost(password string, cost int) (string, error) {
	if len(password) < 8 {
		return "", errors.New("password must have at least 8 characters")
	}
	if len(password) > 72 {
		return "", errors.New("password must have at most 72 bytes")
	}
	if cost == 0 {
		cost = DefaultCost
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return "", fmt.Errorf("bcrypt cost %d is out of range %d..%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// CheckPassword reports whether password matches hash.
func CheckPassword(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// dummyHashes are compared against when a user does not exist, so that a
// login for an unknown user takes as long as one with a wrong password.
// They are made on first use, one per cost.
var dummyHashes = struct {
	sync.Mutex
	byCost map[int][]byte
}{byCost: map[int][]byte{}}

func dummyHash(cost int) []byte {
	if cost == 0 {
		cost = DefaultCost
	}
	dummyHashes.Lock()
	defer dummyHashes.Unlock()
	h, ok := dummyHashes.byCost[cost]
	if !ok {
		h, _ = bcrypt.GenerateFromPassword([]byte("drover-timing-equaliser"), cost)
		dummyHashes.byCost[cost] = h
	}
	return h
}

// BurnPasswordCheck spends the time of one password check at a cost.
func BurnPasswordCheck(password string, cost int) {
	_ = bcrypt.CompareHashAndPassword(dummyHash(cost), []byte(password))
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
