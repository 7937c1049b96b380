// Package netns runs code inside a named Linux network namespace (one
// made with `ip netns add`), for tests and benchmarks that put servers and
// clients on veth pairs. Sockets opened inside stay in that namespace.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread moved into the namespace name, then moves
// the thread back. Sockets fn opens (listening or dialled) belong to the
// namespace for good; goroutines fn starts do not run in it.
func Do(name string, fn func() error) error {
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		return fmt.Errorf("network namespace %q: %w", name, err)
	}
	defer target.Close()
	return in(target, fmt.Sprintf("network namespace %q", name), -1, fn)
}

// in runs fn on an OS thread in the namespace of target (what names it in
// errors). When the thread already is in the namespace whose inode is ino,
// fn just runs there.
func in(target *os.File, what string, ino int64, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if cur, err := inode(orig); err == nil && int64(cur) == ino {
		runtime.UnlockOSThread()
		return fn()
	}
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter %s: %w", what, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and ends with its goroutine rather than
		// run other goroutines in the wrong namespace.
		return fmt.Errorf("leave %s: %w", what, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
