package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func ensure(t *testing.T, dir string, sans ...string) *Bundle {
	t.Helper()
	b, err := EnsureServerTLS(dir, sans)
	if err != nil {
		t.Fatalf("EnsureServerTLS: %v", err)
	}
	return b
}

func startTLSServer(t *testing.T, cfg *tls.Config) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(url string, cfg *tls.Config) (string, error) {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func TestHandshakeOverLoopback(t *testing.T) {
	b := ensure(t, t.TempDir())
	srv := startTLSServer(t, b.TLSConfig())

	trusting, err := ClientTLSConfig(b.CAPath)
	if err != nil {
		t.Fatalf("ClientTLSConfig: %v", err)
	}
	if body, err := get(srv.URL, trusting); err != nil || body != "hello" {
		t.Fatalf("client trusting ca.crt: body %q, err %v", body, err)
	}

	// The certificate also names "localhost".
	byName := trusting.Clone()
	byName.ServerName = "localhost"
	if _, err := get(srv.URL, byName); err != nil {
		t.Fatalf("client using name localhost: %v", err)
	}

	// Without ca.crt (system roots only) the server is unknown.
	_, err = get(srv.URL, &tls.Config{MinVersion: tls.VersionTLS12})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("client without ca.crt: err = %v, want x509.UnknownAuthorityError", err)
	}

	// Trusting another endpoint's CA is no better.
	other := ensure(t, t.TempDir())
	otherCfg, err := ClientTLSConfigPEM(other.CACertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(srv.URL, otherCfg); !errors.As(err, &unknown) {
		t.Fatalf("client trusting another CA: err = %v, want x509.UnknownAuthorityError", err)
	}

	// TLS 1.1 is refused.
	old := trusting.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := get(srv.URL, old); err == nil {
		t.Fatal("server accepted TLS 1.1")
	}
}

func TestGeneratedFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	b := ensure(t, dir)
	if !b.Reissued {
		t.Error("first start should report the server certificate as issued")
	}
	for name, want := range map[string]os.FileMode{
		CACertFile: 0o644, CAKeyFile: 0o600, ServerCertFile: 0o644, ServerKeyFile: 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode = %o, want %o", name, fi.Mode().Perm(), want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("want exactly 4 files in %s, got %v", dir, entries)
	}
	if b.CAPath != filepath.Join(dir, CACertFile) || b.CertPath != filepath.Join(dir, ServerCertFile) || b.KeyPath != filepath.Join(dir, ServerKeyFile) {
		t.Errorf("unexpected paths %q %q %q", b.CAPath, b.CertPath, b.KeyPath)
	}
	onDisk, _ := os.ReadFile(b.CAPath)
	if !bytes.Equal(onDisk, b.CACertPEM) {
		t.Error("CACertPEM differs from ca.crt")
	}
	if !strings.HasPrefix(b.CAFingerprint(), "sha256:") || len(b.CAFingerprint()) != len("sha256:")+64 {
		t.Errorf("CAFingerprint = %q", b.CAFingerprint())
	}
}

func TestCertificateProperties(t *testing.T) {
	b := ensure(t, t.TempDir(), "drover.example.com", "192.0.2.10", "0.0.0.0", "::")
	ca := b.caCert
	host, _ := os.Hostname()

	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA=%v valid=%v MaxPathLen=%d zero=%v", ca.IsCA, ca.BasicConstraintsValid, ca.MaxPathLen, ca.MaxPathLenZero)
	}
	if ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA lacks KeyUsageCertSign")
	}
	if !strings.HasPrefix(ca.Subject.CommonName, "drover CA "+host+" ") {
		t.Errorf("CA common name = %q", ca.Subject.CommonName)
	}
	checkValidity(t, "CA", ca, CAValidity)
	checkP256(t, "CA", ca)

	leaf := b.Leaf()
	if leaf.IsCA {
		t.Error("server certificate is a CA")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("server KeyUsage = %v", leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("server ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	checkValidity(t, "server", leaf, ServerValidity)
	checkP256(t, "server", leaf)
	if leaf.SerialNumber.Cmp(ca.SerialNumber) == 0 || leaf.SerialNumber.BitLen() > 128 || leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("serials: CA %x server %x", ca.SerialNumber, leaf.SerialNumber)
	}

	wantDNS := []string{"localhost", strings.ToLower(host), "drover.example.com"}
	for _, d := range wantDNS {
		if !slices.Contains(leaf.DNSNames, d) {
			t.Errorf("DNS SANs %v lack %q", leaf.DNSNames, d)
		}
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	slices.Sort(ips)
	if want := []string{"127.0.0.1", "192.0.2.10", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("IP SANs = %v, want %v (unspecified addresses dropped)", ips, want)
	}
}

func checkValidity(t *testing.T, what string, c *x509.Certificate, want time.Duration) {
	t.Helper()
	got := c.NotAfter.Sub(time.Now())
	if got < want-2*time.Minute || got > want+time.Minute {
		t.Errorf("%s valid for another %s, want about %s", what, got, want)
	}
	if c.NotBefore.After(time.Now()) {
		t.Errorf("%s NotBefore %s is in the future", what, c.NotBefore)
	}
}

func checkP256(t *testing.T, what string, c *x509.Certificate) {
	t.Helper()
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("%s key is %T, want ECDSA P-256", what, c.PublicKey)
	}
}

func TestRestartReusesEverything(t *testing.T) {
	dir := t.TempDir()
	first := ensure(t, dir, "10.0.0.1")
	second := ensure(t, dir, "10.0.0.1")
	if !bytes.Equal(first.CACertPEM, second.CACertPEM) {
		t.Fatal("restart replaced the CA")
	}
	if second.Reissued {
		t.Fatal("restart with the same names re-issued the server certificate")
	}
	if !bytes.Equal(first.Certificate.Certificate[0], second.Certificate.Certificate[0]) {
		t.Fatal("restart replaced the server certificate")
	}
	// A subset of the names already present is no reason to re-issue.
	if third := ensure(t, dir); third.Reissued {
		t.Fatal("fewer names re-issued the server certificate")
	}
}

func TestNewSANReissuesFromSameCA(t *testing.T) {
	dir := t.TempDir()
	first := ensure(t, dir)
	oldCAKey, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	clientCfg, err := ClientTLSConfig(first.CAPath)
	if err != nil {
		t.Fatal(err)
	}

	second := ensure(t, dir, "drover.example.com", "192.0.2.7")
	if !second.Reissued {
		t.Fatal("a new SAN did not re-issue the server certificate")
	}
	if !bytes.Equal(first.CACertPEM, second.CACertPEM) {
		t.Fatal("SAN re-issue replaced the CA")
	}
	if newCAKey, _ := os.ReadFile(filepath.Join(dir, CAKeyFile)); !bytes.Equal(oldCAKey, newCAKey) {
		t.Fatal("SAN re-issue replaced the CA key")
	}
	if !slices.Contains(second.Leaf().DNSNames, "drover.example.com") {
		t.Fatalf("re-issued certificate lacks the new name: %v", second.Leaf().DNSNames)
	}

	// A client configured before the re-issue still trusts the server,
	// under the new name too.
	srv := startTLSServer(t, second.TLSConfig())
	byName := clientCfg.Clone()
	byName.ServerName = "drover.example.com"
	if _, err := get(srv.URL, byName); err != nil {
		t.Fatalf("old client, new name: %v", err)
	}

	// The re-issued certificate is what the next start loads.
	third := ensure(t, dir, "drover.example.com", "192.0.2.7")
	if third.Reissued || !bytes.Equal(third.Certificate.Certificate[0], second.Certificate.Certificate[0]) {
		t.Fatal("re-issued certificate was not persisted")
	}
}

func TestNearExpiryReissues(t *testing.T) {
	dir := t.TempDir()
	b := ensure(t, dir)
	certPEM, keyPEM, err := b.IssueServerCert(defaultSANs(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, b.CertPath, certPEM)
	writeFile(t, b.KeyPath, keyPEM)
	again := ensure(t, dir)
	if !again.Reissued {
		t.Fatal("a certificate expiring in a day was not re-issued")
	}
	if left := time.Until(again.Leaf().NotAfter); left < ServerValidity-time.Hour {
		t.Fatalf("re-issued certificate valid for only %s", left)
	}
}

func TestRemovedServerFilesAreReissued(t *testing.T) {
	dir := t.TempDir()
	first := ensure(t, dir)
	os.Remove(first.KeyPath)
	second := ensure(t, dir)
	if !second.Reissued || !bytes.Equal(first.CACertPEM, second.CACertPEM) {
		t.Fatal("missing server key should re-issue from the same CA")
	}
}

func TestRemovedCAStartsOver(t *testing.T) {
	dir := t.TempDir()
	first := ensure(t, dir)
	os.Remove(filepath.Join(dir, CACertFile))
	os.Remove(filepath.Join(dir, CAKeyFile))
	second := ensure(t, dir)
	if bytes.Equal(first.CACertPEM, second.CACertPEM) {
		t.Fatal("expected a new CA")
	}
	if err := second.Leaf().CheckSignatureFrom(second.caCert); err != nil {
		t.Fatalf("server certificate not signed by the new CA: %v", err)
	}
}

func TestHalfACAIsAnError(t *testing.T) {
	for _, remove := range []string{CACertFile, CAKeyFile} {
		dir := t.TempDir()
		ensure(t, dir)
		os.Remove(filepath.Join(dir, remove))
		_, err := EnsureServerTLS(dir, nil)
		if err == nil || !strings.Contains(err.Error(), remove) {
			t.Errorf("without %s: err = %v, want one naming the missing file", remove, err)
		}
		if _, statErr := os.Stat(filepath.Join(dir, remove)); statErr == nil {
			t.Errorf("without %s: the file was recreated", remove)
		}
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedFilesGiveClearErrors(t *testing.T) {
	garbage := []byte("this is not PEM\n")
	cases := []struct {
		name    string
		damage  func(dir string, b *Bundle)
		wantSub []string
	}{
		{"garbage ca.crt", func(dir string, b *Bundle) { writeFile(t, b.CAPath, garbage) }, []string{CACertFile, "no PEM certificates"}},
		{"truncated ca.crt", func(dir string, b *Bundle) { writeFile(t, b.CAPath, b.CACertPEM[:len(b.CACertPEM)/2]) }, []string{CACertFile, "no PEM certificates"}},
		{"garbage ca.key", func(dir string, b *Bundle) { writeFile(t, filepath.Join(dir, CAKeyFile), garbage) }, []string{CAKeyFile, "no PEM private key"}},
		{"ca.key from another CA", func(dir string, b *Bundle) {
			other := t.TempDir()
			ensure(t, other)
			k, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
			writeFile(t, filepath.Join(dir, CAKeyFile), k)
		}, []string{CAKeyFile, "does not match"}},
		{"certificate in key file", func(dir string, b *Bundle) { writeFile(t, b.KeyPath, b.CACertPEM) }, []string{ServerKeyFile, "swapped"}},
		{"key in certificate file", func(dir string, b *Bundle) {
			k, _ := os.ReadFile(b.KeyPath)
			writeFile(t, b.CertPath, k)
		}, []string{ServerCertFile, "swapped"}},
		{"server key of another cert", func(dir string, b *Bundle) {
			_, k, _ := b.IssueServerCert([]string{"localhost"}, time.Hour)
			writeFile(t, b.KeyPath, k)
		}, []string{"do not match"}},
		{"server cert from another CA", func(dir string, b *Bundle) {
			other := ensure(t, t.TempDir())
			c, _ := os.ReadFile(other.CertPath)
			k, _ := os.ReadFile(other.KeyPath)
			writeFile(t, b.CertPath, c)
			writeFile(t, b.KeyPath, k)
		}, []string{"not a server certificate issued by", "unknown authority"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := ensure(t, dir)
			tc.damage(dir, b)
			_, err := EnsureServerTLS(dir, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tc.wantSub {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestInvalidSAN(t *testing.T) {
	_, err := EnsureServerTLS(t.TempDir(), []string{"not a name!"})
	if err == nil || !strings.Contains(err.Error(), `"not a name!"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestClientTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ClientTLSConfig(filepath.Join(dir, "missing.crt")); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("missing file: err = %v", err)
	}
	empty := filepath.Join(dir, "empty.crt")
	writeFile(t, empty, nil)
	if _, err := ClientTLSConfig(empty); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Errorf("empty file: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.crt")
	writeFile(t, bad, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	if _, err := ClientTLSConfig(bad); err == nil || !strings.Contains(err.Error(), "certificate 1") {
		t.Errorf("unparsable certificate: err = %v", err)
	}
}

func TestLoadKeyPair(t *testing.T) {
	b := ensure(t, t.TempDir())
	dir := t.TempDir()

	// An operator-supplied chain: leaf followed by its root.
	certPEM, keyPEM, err := b.IssueServerCert([]string{"byo.example.com", "127.0.0.1"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, append(certPEM, b.CACertPEM...))
	writeFile(t, keyFile, keyPEM)
	byo, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	if !bytes.Equal(byo.CACertPEM, b.CACertPEM) {
		t.Error("root at the end of the chain not exposed as CACertPEM")
	}
	if _, _, err := byo.IssueServerCert([]string{"x"}, time.Hour); !errors.Is(err, ErrNoCAKey) {
		t.Errorf("IssueServerCert on BYO bundle: err = %v, want ErrNoCAKey", err)
	}
	srv := startTLSServer(t, byo.TLSConfig())
	cfg, _ := ClientTLSConfigPEM(b.CACertPEM)
	if _, err := get(srv.URL, cfg); err != nil {
		t.Fatalf("handshake with BYO certificate: %v", err)
	}

	if _, err := LoadKeyPair(filepath.Join(dir, "nope.crt"), keyFile); err == nil || !strings.Contains(err.Error(), "nope.crt") {
		t.Errorf("missing cert: err = %v", err)
	}
	if _, err := LoadKeyPair(keyFile, certFile); err == nil || !strings.Contains(err.Error(), "swapped") {
		t.Errorf("swapped files: err = %v", err)
	}
	_, otherKey, _ := b.IssueServerCert([]string{"localhost"}, time.Hour)
	otherKeyFile := filepath.Join(dir, "other.key")
	writeFile(t, otherKeyFile, otherKey)
	if _, err := LoadKeyPair(certFile, otherKeyFile); err == nil || !strings.Contains(err.Error(), "do not match") {
		t.Errorf("mismatched key: err = %v", err)
	}
}

func TestClientCertificateMutualTLS(t *testing.T) {
	b := ensure(t, t.TempDir())
	certPEM, keyPEM, err := b.IssueClientCert("agent-n7", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pair.Leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("client ExtKeyUsage = %v", pair.Leaf.ExtKeyUsage)
	}
	serverCfg := b.TLSConfig()
	serverCfg.ClientAuth = tls.RequireAndVerifyClientCert
	serverCfg.ClientCAs = x509.NewCertPool()
	serverCfg.ClientCAs.AppendCertsFromPEM(b.CACertPEM)
	srv := startTLSServer(t, serverCfg)

	cfg, _ := ClientTLSConfig(b.CAPath)
	cfg.Certificates = []tls.Certificate{pair}
	if _, err := get(srv.URL, cfg); err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
}

func TestParseSANs(t *testing.T) {
	s, err := parseSANs([]string{"Host.Example.COM.", "[fe80::1%eth0]", "::ffff:10.0.0.1", "10.0.0.1", "*.apps.example.com", "host.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"host.example.com", "*.apps.example.com"}; !slices.Equal(s.dns, want) {
		t.Errorf("dns = %v, want %v", s.dns, want)
	}
	var ips []string
	for _, ip := range s.ips {
		ips = append(ips, ip.String())
	}
	if want := []string{"fe80::1", "10.0.0.1"}; !slices.Equal(ips, want) {
		t.Errorf("ips = %v, want %v", ips, want)
	}
	for _, bad := range []string{"", "a..b", "-a.com", "a b", "x:80"} {
		if _, err := parseSANs([]string{bad}); err == nil {
			t.Errorf("parseSANs(%q) accepted", bad)
		}
	}
}
