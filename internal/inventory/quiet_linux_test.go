package inventory

import (
	"context"
	"io"
	"os"
	"syscall"
	"testing"
)

// TestCollectWritesNothingToStderr checks at the file descriptor level that
// neither ghw nor anything else prints while collecting: the discovery
// image's console is the operator's only view of the agent.
func TestCollectWritesNothingToStderr(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	// A missing DMI tree, unreadable disks and an empty root all make ghw
	// want to warn.
	_, errLive := Collect(context.Background())
	_, _ = collect(context.Background(), t.TempDir())
	_, _ = collect(context.Background(), fakeRoot(t, nil))

	if err := syscall.Dup3(saved, 2, 0); err != nil {
		t.Fatal(err)
	}
	syscall.Close(saved)
	w.Close()
	out, _ := io.ReadAll(r)
	r.Close()
	if errLive != nil {
		t.Fatalf("Collect: %v", errLive)
	}
	if len(out) > 0 {
		t.Fatalf("collection wrote to stderr:\n%s", out)
	}
}
