package testutil

import (
	"bytes"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LockedBuffer collects a child process's output while a test reads it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartProcess starts cmd and stops it when the test ends: SIGTERM, then
// SIGKILL when it has not exited after 10 seconds, which fails the test
// when mustStop is set. The returned channel is closed when the process
// has exited.
func StartProcess(t testing.TB, cmd *exec.Cmd, mustStop bool) <-chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			if mustStop {
				t.Errorf("%s did not stop on SIGTERM in 10 s", cmd.Path)
			}
		}
	})
	return exited
}
