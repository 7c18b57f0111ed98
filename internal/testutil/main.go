package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Main runs a package's tests with a private TMPDIR and fails the run when a
// qemu-nbd (or nbdkit) child process or a file in that TMPDIR is left behind.
// Use it as: func TestMain(m *testing.M) { testutil.Main(m) }.
func Main(m *testing.M) {
	base, err := os.MkdirTemp("", "imageio-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testutil: making TMPDIR:", err)
		os.Exit(1)
	}
	os.Setenv("TMPDIR", base)
	code := m.Run()
	if leaks := leftoverChildren(2 * time.Second); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "testutil: processes left running: %s\n", strings.Join(leaks, ", "))
		if code == 0 {
			code = 1
		}
	}
	entries, _ := os.ReadDir(base)
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		fmt.Fprintf(os.Stderr, "testutil: temporary files left behind: %s\n", strings.Join(names, ", "))
		if code == 0 {
			code = 1
		}
	}
	os.RemoveAll(base)
	os.Exit(code)
}

// leftoverChildren lists qemu-nbd and nbdkit processes whose parent is this
// process, waiting up to wait for them to exit.
func leftoverChildren(wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		leaks := Children("qemu-nbd", "nbdkit")
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Children lists the running (not zombie) child processes of this process
// whose command is one of names, as "name[pid]" (Linux /proc; nil
// elsewhere).
func Children(names ...string) []string {
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var found []string
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, closeIdx := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closeIdx < 0 || closeIdx+2 >= len(s) {
			continue
		}
		comm := s[open+1 : closeIdx]
		fields := strings.Fields(s[closeIdx+2:])
		if len(fields) < 2 || fields[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		if ppid != self {
			continue
		}
		for _, n := range names {
			if comm == n {
				found = append(found, fmt.Sprintf("%s[%s]", comm, filepath.Base(d)))
			}
		}
	}
	return found
}

// Need skips the test when one of the commands is not installed.
func Need(t testing.TB, commands ...string) {
	t.Helper()
	for _, c := range commands {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed", c)
		}
	}
}
