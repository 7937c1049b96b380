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
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("network namespace %q: %w", name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %q: %w", name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and ends with its goroutine rather than
		// run other goroutines in the wrong namespace.
		return fmt.Errorf("leave network namespace %q: %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
