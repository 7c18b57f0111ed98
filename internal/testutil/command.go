package testutil

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RunCommand runs the command name with args and returns its combined output. It
// skips the test when name is not installed and fails it when the command
// fails.
func RunCommand(t testing.TB, name string, args ...string) string {
	t.Helper()
	Need(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Context returns a context that is canceled when the test ends or after
// two minutes, whichever comes first.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
