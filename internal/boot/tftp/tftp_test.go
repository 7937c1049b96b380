package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// start serves dir on a free loopback port until the test ends.
func start(t *testing.T, dir string) *Server {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", Dir: dir, Timeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func testDir(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, 200_000) // several hundred blocks, not a multiple of 512
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "undionly.kpxe"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Outside the directory: must never be served.
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "secret"), []byte("no"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, data
}

func client(t *testing.T, s *Server) *tftp.Client {
	t.Helper()
	c, err := tftp.NewClient(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	return c
}

func TestServesFilesReadOnly(t *testing.T) {
	dir, data := testDir(t)
	s := start(t, dir)
	c := client(t, s)

	c.RequestTSize(true)
	wt, err := c.Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := wt.(tftp.IncomingTransfer).Size(); !ok || n != int64(len(data)) {
		t.Errorf("tsize = %d, %v; want %d", n, ok, len(data))
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("received %d bytes, not the file's %d", got.Len(), len(data))
	}

	for _, name := range []string{"../secret", "/../secret", "sub", "missing.efi"} {
		if wt, err := c.Receive(name, "octet"); err == nil {
			_, err = wt.WriteTo(&bytes.Buffer{})
			if err == nil {
				t.Errorf("%q was served", name)
			}
		} else if !strings.Contains(err.Error(), "no such file") {
			t.Errorf("%q: error %v, want one saying no such file", name, err)
		}
	}

	rf, err := c.Send("uploaded", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
	}
	if err == nil || !strings.Contains(err.Error(), "does not support write") {
		t.Errorf("write: %v, want refused", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "uploaded")); !os.IsNotExist(err) {
		t.Errorf("a write created a file: %v", err)
	}
}

// TestRealClientFetchesIPXE fetches undionly.kpxe with tftp-hpa's client,
// as firmware would, and checks it byte for byte. It serves Debian's iPXE
// binaries when the ipxe package is installed (make deps), else a
// stand-in file.
func TestRealClientFetchesIPXE(t *testing.T) {
	bin, err := exec.LookPath("tftp")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tftp (Debian tftp-hpa) is not installed: make deps installs it")
		}
		t.Skip("tftp (Debian tftp-hpa) is not installed; make deps installs it")
	}
	dir := DefaultDir
	want, err := os.ReadFile(filepath.Join(dir, "undionly.kpxe"))
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Debian's ipxe package is not installed (make deps installs it): %v", err)
		}
		dir, want = testDir(t)
	}
	s := start(t, dir)
	host, port, _ := strings.Cut(s.Addr(), ":")
	out := filepath.Join(t.TempDir(), "undionly.kpxe")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-4", "-m", "binary", host, port, "-c", "get", "undionly.kpxe", out)
	if b, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(b)) > 0 {
		t.Fatalf("tftp get: %v: %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fetched %d bytes, differing from the %d of %s", len(got), len(want), filepath.Join(dir, "undionly.kpxe"))
	}
	// The server counts a transfer once the client's last ACK is in,
	// which may be after the client has exited.
	for deadline := time.Now().Add(5 * time.Second); s.Transfers() != 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Transfers() != 1 {
		t.Errorf("%d transfers counted, want 1", s.Transfers())
	}
	// tftp-hpa's put must be refused and write nothing.
	src := filepath.Join(t.TempDir(), "evil")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := exec.CommandContext(ctx, bin, "-4", "-m", "binary", host, port, "-c", "put", src, "evil").CombinedOutput()
	if !strings.Contains(string(b), "does not support write") {
		t.Errorf("tftp put: %s, want the server's refusal", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "evil")); !os.IsNotExist(err) {
		t.Errorf("put created a file: %v", err)
	}
}
