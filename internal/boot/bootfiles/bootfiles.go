// Package bootfiles opens the files the boot services hand to machines
// (iPXE binaries over TFTP, kernels and initrds over HTTP) from a
// directory, refusing every name that would leave it.
package bootfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotServed is the error for names that are not a file of the
// directory: missing, a directory, or outside it.
var ErrNotServed = errors.New("no such file")

// Resolve maps a requested name ('/'-separated) to a path under dir. One
// leading '/' is dropped (some firmware asks for "/undionly.kpxe"); names
// that would leave the directory ("..", absolute paths, backslashes, NUL,
// empty parts) are refused. Symbolic links inside dir are followed:
// whoever can write to dir chooses what is served anyway (Debian's
// /usr/lib/ipxe/ipxe.efi is a link to /boot/ipxe.efi).
func Resolve(dir, name string) (string, error) {
	name = strings.TrimPrefix(name, "/")
	if name == "" || strings.ContainsAny(name, "\\\x00") || !filepath.IsLocal(name) {
		return "", fmt.Errorf("%q: %w (only files of the boot directory are served)", name, ErrNotServed)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("%q: %w (only files of the boot directory are served)", name, ErrNotServed)
		}
	}
	return filepath.Join(dir, filepath.FromSlash(name)), nil
}

// Open opens a regular file of dir by its requested name. The caller
// closes it.
func Open(dir, name string) (*os.File, fs.FileInfo, error) {
	path, err := Resolve(dir, name)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%q: %w", name, ErrNotServed)
		}
		return nil, nil, fmt.Errorf("%q cannot be read: %w", name, errors.Unwrap(err))
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%q: %w (not a file)", name, ErrNotServed)
	}
	return f, st, nil
}
