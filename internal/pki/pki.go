// Package pki gives an endpoint TLS by default: on first start it creates a
// private CA and a server certificate signed by it, and on later starts it
// reuses them. Clients (the CLI, agents, a manager) trust the endpoint by
// trusting its ca.crt, or by pinning the CA fingerprint.
//
// The CA is never replaced automatically: every client that trusts it would
// break. The server certificate is cheap and is re-issued from the existing
// CA whenever it lacks a requested name or nears expiry.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside the TLS directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Lifetimes of generated certificates.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	// RenewBefore is how close to expiry a server certificate may get
	// before EnsureServerTLS re-issues it.
	RenewBefore = 30 * 24 * time.Hour
	// backdate covers clock skew between the endpoint and its clients.
	backdate = time.Hour
)

// ErrNoCAKey is returned by Issue methods of a Bundle that holds no CA key
// (one loaded with LoadKeyPair).
var ErrNoCAKey = errors.New("this TLS bundle has no CA key to issue certificates with (certificate was supplied with --tls-cert)")

// Bundle is an endpoint's TLS material.
type Bundle struct {
	// CACertPEM is the PEM of the CA that clients should trust. Empty for a
	// bring-your-own certificate whose chain has no self-signed root.
	CACertPEM []byte
	// CAPath, CertPath and KeyPath are the files the bundle was loaded from
	// (CAPath is empty for a bring-your-own certificate).
	CAPath, CertPath, KeyPath string
	// Certificate is the server certificate with its chain and key.
	Certificate tls.Certificate
	// Reissued reports that EnsureServerTLS wrote a new server certificate
	// on this call (first start, new name, or near expiry), for logging.
	Reissued bool

	caCert *x509.Certificate
	caKey  crypto.Signer
}

// TLSConfig returns a new server configuration serving the bundle's
// certificate with TLS 1.2 or later.
func (b *Bundle) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{b.Certificate},
	}
}

// Leaf returns the parsed server certificate.
func (b *Bundle) Leaf() *x509.Certificate { return b.Certificate.Leaf }

// CAFingerprint returns "sha256:<hex>" of the CA certificate, for clients
// that pin the CA instead of receiving ca.crt out of band. Empty if the
// bundle has no CA certificate.
func (b *Bundle) CAFingerprint() string {
	if b.caCert == nil {
		return ""
	}
	return Fingerprint(b.caCert)
}

// Fingerprint returns "sha256:<hex>" of a certificate's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// IssueServerCert signs a new server certificate for the given names
// (DNS names or IP addresses) and returns its PEM and the PEM of its
// PKCS#8 private key. Defaults (localhost, loopback addresses, hostname)
// are not added; pass them if wanted.
func (b *Bundle) IssueServerCert(names []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if b.caKey == nil {
		return nil, nil, ErrNoCAKey
	}
	sans, err := parseSANs(names)
	if err != nil {
		return nil, nil, err
	}
	cn := "drover server"
	if len(sans.dns) > 0 {
		cn = sans.dns[0]
	}
	return issueLeaf(b.caCert, b.caKey, pkix.Name{CommonName: cn, Organization: []string{"drover"}},
		sans, x509.ExtKeyUsageServerAuth, validity)
}

// IssueClientCert signs a client certificate (for mutual TLS, e.g. agents or
// a manager talking to a site) with the given common name.
func (b *Bundle) IssueClientCert(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if b.caKey == nil {
		return nil, nil, ErrNoCAKey
	}
	if commonName == "" {
		return nil, nil, errors.New("client certificate needs a common name")
	}
	return issueLeaf(b.caCert, b.caKey, pkix.Name{CommonName: commonName, Organization: []string{"drover"}},
		sanSet{}, x509.ExtKeyUsageClientAuth, validity)
}

// EnsureServerTLS loads the CA and server certificate from dir (normally
// <data dir>/tls), creating any that are missing. The server certificate
// names localhost, 127.0.0.1, ::1 and the machine's hostname plus sans
// (DNS names or IP addresses; unspecified addresses like 0.0.0.0 are
// ignored, so a listen address can be passed as is).
//
// Existing files are validated: the CA key must match the CA certificate,
// the server certificate must chain to the CA and match its key. If the
// server certificate lacks a requested name or expires within RenewBefore,
// it is re-issued from the existing CA. The CA itself is never replaced;
// if only one of ca.crt and ca.key exists, that is an error.
func EnsureServerTLS(dir string, sans []string) (*Bundle, error) {
	want, err := parseSANs(append(defaultSANs(), sans...))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating TLS directory: %w", err)
	}
	b := &Bundle{
		CAPath:   filepath.Join(dir, CACertFile),
		CertPath: filepath.Join(dir, ServerCertFile),
		KeyPath:  filepath.Join(dir, ServerKeyFile),
	}
	caKeyPath := filepath.Join(dir, CAKeyFile)
	now := time.Now()

	caCertExists, caKeyExists := exists(b.CAPath), exists(caKeyPath)
	newCA := false
	switch {
	case caCertExists && caKeyExists:
		if err := b.loadCA(caKeyPath, now); err != nil {
			return nil, err
		}
	case caCertExists != caKeyExists:
		present, missing := b.CAPath, caKeyPath
		if caKeyExists {
			present, missing = caKeyPath, b.CAPath
		}
		return nil, fmt.Errorf("found %s but not %s: restore the missing file, or remove %s to create a new CA (every client must then trust the new %s)",
			present, missing, dir, CACertFile)
	default:
		if err := b.createCA(caKeyPath, now); err != nil {
			return nil, err
		}
		// Server files left from a removed CA cannot chain to the new one.
		newCA = true
	}

	if !newCA && exists(b.CertPath) && exists(b.KeyPath) {
		reason, err := b.loadServer(want, now)
		if err != nil {
			return nil, err
		}
		if reason == "" {
			return b, nil
		}
	}
	if err := b.writeServer(want); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bundle) loadCA(keyPath string, now time.Time) error {
	certs, err := readCerts(b.CAPath)
	if err != nil {
		return err
	}
	if len(certs) != 1 {
		return fmt.Errorf("%s: want exactly one certificate, found %d", b.CAPath, len(certs))
	}
	ca := certs[0]
	if !ca.IsCA {
		return fmt.Errorf("%s: certificate %q is not a CA certificate", b.CAPath, ca.Subject.CommonName)
	}
	if now.After(ca.NotAfter) {
		return fmt.Errorf("%s: CA certificate expired on %s: remove %s to create a new CA (every client must then trust the new %s)",
			b.CAPath, ca.NotAfter.Format(time.DateOnly), filepath.Dir(b.CAPath), CACertFile)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return err
	}
	if !publicKeysEqual(key.Public(), ca.PublicKey) {
		return fmt.Errorf("%s does not belong to %s (the key does not match the certificate)", keyPath, b.CAPath)
	}
	b.caCert, b.caKey = ca, key
	b.CACertPEM = encodeCert(ca.Raw)
	return nil
}

func (b *Bundle) createCA(keyPath string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown-host"
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("generating CA id: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The random id tells apart CAs of endpoints that share a
		// hostname, and of one endpoint before and after a reset.
		Subject:               pkix.Name{CommonName: fmt.Sprintf("drover CA %s %s", host, hex.EncodeToString(id)), Organization: []string{"drover"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("creating CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	// Key first: a crash in between leaves a key without a certificate,
	// which EnsureServerTLS reports instead of silently making a new CA.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing CA key: %w", err)
	}
	certPEM := encodeCert(der)
	if err := writeFileAtomic(b.CAPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("writing CA certificate: %w", err)
	}
	b.caCert, b.caKey, b.CACertPEM = ca, key, certPEM
	return nil
}

// loadServer loads and validates the existing server certificate. It
// returns a non-empty reason if the certificate is valid but should be
// re-issued, and an error if the files are damaged or do not belong to the
// CA.
func (b *Bundle) loadServer(want sanSet, now time.Time) (reason string, err error) {
	certPEM, err := os.ReadFile(b.CertPath)
	if err != nil {
		return "", err
	}
	keyPEM, err := os.ReadFile(b.KeyPath)
	if err != nil {
		return "", err
	}
	pair, err := keyPair(certPEM, keyPEM, b.CertPath, b.KeyPath)
	if err != nil {
		return "", err
	}
	leaf := pair.Leaf
	roots := x509.NewCertPool()
	roots.AddCert(b.caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: leaf.NotBefore.Add(time.Second), // expiry is handled below, by re-issuing
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return "", fmt.Errorf("%s is not a server certificate issued by %s: %w (remove %s and %s to issue a new one)",
			b.CertPath, b.CAPath, err, b.CertPath, b.KeyPath)
	}
	b.Certificate = pair
	if missing := want.missingFrom(leaf); len(missing) > 0 {
		return "missing names " + strings.Join(missing, ", "), nil
	}
	if now.Add(RenewBefore).After(leaf.NotAfter) {
		return "expires " + leaf.NotAfter.Format(time.DateOnly), nil
	}
	return "", nil
}

func (b *Bundle) writeServer(want sanSet) error {
	cn := "drover server"
	if host, err := os.Hostname(); err == nil && validDNSName(strings.ToLower(host)) {
		cn = strings.ToLower(host)
	}
	certPEM, keyPEM, err := issueLeaf(b.caCert, b.caKey, pkix.Name{CommonName: cn, Organization: []string{"drover"}},
		want, x509.ExtKeyUsageServerAuth, ServerValidity)
	if err != nil {
		return err
	}
	pair, err := keyPair(certPEM, keyPEM, b.CertPath, b.KeyPath)
	if err != nil {
		return err
	}
	// Key first, then certificate: until the certificate is replaced the
	// pair on disk mismatches, which the next start reports rather than
	// serving a wrong key.
	if err := writeFileAtomic(b.KeyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing server key: %w", err)
	}
	if err := writeFileAtomic(b.CertPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("writing server certificate: %w", err)
	}
	b.Certificate = pair
	b.Reissued = true
	return nil
}

func issueLeaf(ca *x509.Certificate, caKey crypto.Signer, subject pkix.Name, sans sanSet, usage x509.ExtKeyUsage, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("certificate validity must be positive, got %s", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		// A certificate cannot usefully outlive its issuer.
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
		DNSNames:              sans.dns,
		IPAddresses:           sans.ipList(),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// LoadKeyPair loads a certificate chain and private key supplied by the
// operator (--tls-cert, --tls-key). The certificate file may hold the leaf
// followed by intermediates; if it ends in a self-signed root, that root is
// exposed as CACertPEM.
func LoadKeyPair(certFile, keyFile string) (*Bundle, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("reading TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading TLS key: %w", err)
	}
	pair, err := keyPair(certPEM, keyPEM, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if time.Now().After(pair.Leaf.NotAfter) {
		return nil, fmt.Errorf("%s: certificate expired on %s", certFile, pair.Leaf.NotAfter.Format(time.DateOnly))
	}
	b := &Bundle{CertPath: certFile, KeyPath: keyFile, Certificate: pair}
	if n := len(pair.Certificate); n > 1 {
		last, err := x509.ParseCertificate(pair.Certificate[n-1])
		if err == nil && last.IsCA && last.CheckSignatureFrom(last) == nil {
			b.caCert = last
			b.CACertPEM = encodeCert(last.Raw)
		}
	}
	return b, nil
}

// ClientTLSConfig returns a client configuration that trusts only the CA
// certificates in caFile.
func ClientTLSConfig(caFile string) (*tls.Config, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w (copy ca.crt from the server's data directory, or pass the right path)", err)
	}
	cfg, err := ClientTLSConfigPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caFile, err)
	}
	return cfg, nil
}

// ClientTLSConfigPEM is ClientTLSConfig for CA certificates already in
// memory.
func ClientTLSConfigPEM(caPEM []byte) (*tls.Config, error) {
	certs, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

func keyPair(certPEM, keyPEM []byte, certFile, keyFile string) (tls.Certificate, error) {
	if _, err := parseCertsPEM(certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", certFile, err)
	}
	if _, err := parseKeyPEM(keyPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", keyFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// Both parse on their own, so they do not belong together.
		return tls.Certificate{}, fmt.Errorf("%s and %s do not match: %w", certFile, keyFile, err)
	}
	return pair, nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// parseCertsPEM returns every CERTIFICATE block in data and fails if there
// are none or one does not parse, so that a truncated or wrong file is
// reported as such instead of as an empty trust store.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return nil, fmt.Errorf("found a private key where certificates were expected (are the certificate and key swapped?)")
			}
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificates found (want -----BEGIN CERTIFICATE-----)")
	}
	return certs, nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

func parseKeyPEM(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found (want -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY)")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "CERTIFICATE":
			return nil, errors.New("found a certificate where a private key was expected (are the certificate and key swapped?)")
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the private key is encrypted; supply an unencrypted key file with mode 0600")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// sanSet is a normalised, de-duplicated set of subject alternative names.
type sanSet struct {
	dns []string
	ips []netip.Addr
}

func defaultSANs() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if host, err := os.Hostname(); err == nil && validDNSName(strings.ToLower(host)) {
		names = append(names, host)
	}
	return names
}

// parseSANs sorts names into DNS names and IP addresses. Unspecified
// addresses (0.0.0.0, ::) are dropped: they come from listen addresses that
// mean "all interfaces" and are not names a client can connect to.
func parseSANs(names []string) (sanSet, error) {
	var s sanSet
	for _, n := range names {
		n = strings.TrimSpace(n)
		if ip, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil {
			ip = ip.Unmap().WithZone("")
			if ip.IsUnspecified() || slices.Contains(s.ips, ip) {
				continue
			}
			s.ips = append(s.ips, ip)
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(n, "."))
		if !validDNSName(name) {
			return sanSet{}, fmt.Errorf("TLS subject alternative name %q is neither an IP address nor a valid DNS name", n)
		}
		if !slices.Contains(s.dns, name) {
			s.dns = append(s.dns, name)
		}
	}
	return s, nil
}

func (s sanSet) ipList() []net.IP {
	ips := make([]net.IP, len(s.ips))
	for i, ip := range s.ips {
		ips[i] = net.IP(ip.AsSlice())
	}
	return ips
}

// missingFrom lists the names in s that cert does not carry.
func (s sanSet) missingFrom(cert *x509.Certificate) []string {
	var missing []string
	for _, d := range s.dns {
		if !slices.ContainsFunc(cert.DNSNames, func(have string) bool { return strings.EqualFold(have, d) }) {
			missing = append(missing, d)
		}
	}
	for _, ip := range s.ips {
		if !slices.ContainsFunc(cert.IPAddresses, func(have net.IP) bool { return have.Equal(net.IP(ip.AsSlice())) }) {
			missing = append(missing, ip.String())
		}
	}
	return missing
}

// validDNSName accepts lower-case host names and a leading "*." wildcard.
func validDNSName(name string) bool {
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// writeFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so readers see the old or the new content, never a
// torn file, and a key never exists on disk with looser permissions.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // not supported everywhere; the file itself is synced
		d.Close()
	}
	return nil
}
