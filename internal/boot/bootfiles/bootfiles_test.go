package bootfiles

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolveRefusesTraversal(t *testing.T) {
	for _, name := range []string{"", "/", "..", "../etc/passwd", "/../etc/passwd", "a/../../b", "a/../b", "//etc/passwd", "a\\..\\b", "a\x00b", "./", "a//b", "a/./b"} {
		if p, err := Resolve("/srv/tftp", name); err == nil || !errors.Is(err, ErrNotServed) {
			t.Errorf("Resolve(%q) = %q, %v; want refused", name, p, err)
		}
	}
	for name, want := range map[string]string{
		"undionly.kpxe":   "/srv/tftp/undionly.kpxe",
		"/ipxe.efi":       "/srv/tftp/ipxe.efi",
		"efi/snponly.efi": "/srv/tftp/efi/snponly.efi",
		"..hidden":        "/srv/tftp/..hidden",
	} {
		if p, err := Resolve("/srv/tftp", name); err != nil || p != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", name, p, err, want)
		}
	}
}

func TestOpenServesRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k"), []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A link inside the directory is followed: the administrator put it there.
	if err := os.Symlink(filepath.Join(dir, "k"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"k", "link"} {
		f, st, err := Open(dir, name)
		if err != nil || st.Size() != 6 {
			t.Fatalf("Open(%q): %v", name, err)
		}
		f.Close()
	}
	for _, name := range []string{"d", "missing", "../" + filepath.Base(dir) + "/k"} {
		if f, _, err := Open(dir, name); err == nil || !errors.Is(err, ErrNotServed) {
			if f != nil {
				f.Close()
			}
			t.Errorf("Open(%q): %v, want ErrNotServed", name, err)
		}
	}
}
