package enginesim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// BuildImageiod builds cmd/imageiod of this module into the module's tmp/
// directory (once per test binary) and returns its path. It is for tests of
// packages that run the simulator.
func BuildImageiod() (string, error) {
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("finding module root: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			buildErr = fmt.Errorf("finding module root: not in a module")
			return
		}
		root := filepath.Dir(gomod)
		if _, err := os.Stat(filepath.Join(root, "cmd", "imageiod")); err != nil {
			buildErr = fmt.Errorf("cmd/imageiod is not in this tree: %w", err)
			return
		}
		dir := filepath.Join(root, "tmp")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		// Keep the build output out of git status.
		if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("*\n"), 0o644); err != nil {
			buildErr = err
			return
		}
		// Build under a private name and rename, so test binaries of several
		// packages building at once do not clobber each other.
		tmp := filepath.Join(dir, fmt.Sprintf(".imageiod-%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", tmp, "./cmd/imageiod")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			buildErr = fmt.Errorf("building imageiod: %v\n%s", err, out)
			return
		}
		buildPath = filepath.Join(dir, "imageiod")
		if err := os.Rename(tmp, buildPath); err != nil {
			os.Remove(tmp)
			buildErr = err
		}
	})
	return buildPath, buildErr
}

// StartTest starts a simulator for a test with a fresh storage directory
// (when cfg has none), short timings (unless set) and the imageiod built by
// BuildImageiod; it skips the test when qemu-img or qemu-nbd is missing,
// and closes the simulator when the test ends.
func StartTest(t testing.TB, cfg Config) *Sim {
	t.Helper()
	for _, c := range []string{"qemu-img", "qemu-nbd"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed", c)
		}
	}
	if cfg.Imageiod == "" {
		p, err := BuildImageiod()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Imageiod = p
	}
	if cfg.StorageDir == "" {
		cfg.StorageDir = t.TempDir()
	}
	if cfg.DiskDelay == 0 {
		cfg.DiskDelay = 50 * time.Millisecond
	}
	if cfg.InitDelay == 0 {
		cfg.InitDelay = 100 * time.Millisecond
	}
	if cfg.FinalizeDelay == 0 {
		cfg.FinalizeDelay = 100 * time.Millisecond
	}
	if cfg.Retention == 0 {
		cfg.Retention = 2 * time.Second
	}
	if cfg.MonitorInterval == 0 {
		cfg.MonitorInterval = 200 * time.Millisecond
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting engine simulator: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing engine simulator: %v", err)
		}
	})
	return s
}
