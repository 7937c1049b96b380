package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Handle is a network namespace remembered by the thread that was in it,
// so that a server can open sockets later in the namespace it was
// started in (the namespace of its Listen), from any goroutine.
type Handle struct {
	f   *os.File
	ino uint64
}

// Current returns the calling thread's network namespace. Call it on the
// thread whose namespace counts (inside Do, or anywhere in a process that
// never changes namespace).
func Current() (*Handle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("network namespace of this thread: %w", err)
	}
	ino, err := inode(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Handle{f: f, ino: ino}, nil
}

// Close releases the handle.
func (h *Handle) Close() error { return h.f.Close() }

// Do runs fn on an OS thread in the handle's namespace. When the thread
// is already in it (a process that never changed namespace) it only runs
// fn, so no privilege is needed; otherwise it enters the namespace as
// the package's Do does, which needs CAP_SYS_ADMIN.
func (h *Handle) Do(fn func() error) error {
	return in(h.f, "network namespace", int64(h.ino), fn)
}

func inode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("network namespace: %w", err)
	}
	return st.Ino, nil
}
