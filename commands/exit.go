package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"

	"github.com/imageio/imageio/backend"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/nbd"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// Exit statuses. They are a stable interface, documented in man/imageio.1
// and docs/cli.md; 128+N is used when signal N stopped the command.
const (
	ExitOK             = 0
	ExitFailure        = 1
	ExitUsage          = 2
	ExitVerifyMismatch = 3
)

// UsageError is a command line that cannot be run as written: a missing
// argument, an unknown flag, a flag value out of range or flags that do not
// go together. It maps to exit status 2.
type UsageError struct {
	Err     error
	Command string // the command whose help to suggest; "" for the app
}

func (e *UsageError) Error() string { return e.Err.Error() }

func (e *UsageError) Unwrap() error { return e.Err }

// usageErrorf returns a *UsageError with a formatted message.
func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// SignalError means a signal stopped the command. Err is what the command
// returned while it stopped, if it says more than "context canceled".
type SignalError struct {
	Signal syscall.Signal
	Err    error
}

func (e *SignalError) Error() string {
	msg := "interrupted by " + signalName(e.Signal)
	if e.Err != nil && !errors.Is(e.Err, context.Canceled) {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *SignalError) Unwrap() error { return e.Err }

func signalName(s syscall.Signal) string {
	if name := unix.SignalName(s); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(s))
}

// ExitCode maps an error returned by the App to an exit status: 0 for nil,
// 2 for a *UsageError, 3 for a verification mismatch, 128+N for a
// *SignalError (130 for a bare context.Canceled, as if by SIGINT) and 1 for
// anything else.
func ExitCode(err error) int {
	var sig *SignalError
	var usage *UsageError
	var urfave cli.ExitCoder
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &sig):
		return 128 + int(sig.Signal)
	case errors.As(err, &usage):
		return ExitUsage
	case errors.As(err, &urfave) && !errors.As(err, new(*exec.ExitError)):
		// Only urfave makes these, for help on an unknown topic. A failed
		// qemu-img or qemu-nbd (*exec.ExitError) has an ExitCode method
		// too, but it is a failure, not a usage error.
		return ExitUsage
	case isVerifyMismatch(err):
		return ExitVerifyMismatch
	case errors.Is(err, context.Canceled):
		return 128 + int(syscall.SIGINT)
	default:
		return ExitFailure
	}
}

// Report prints err once to w as "imageio: <err>" on one line and returns
// the exit status for it. It prints nothing for a nil error.
func Report(w io.Writer, err error) int {
	if err == nil {
		return ExitOK
	}
	code := ExitCode(err)
	msg := oneLine(err.Error())
	var usage *UsageError
	if errors.As(err, &usage) {
		cmd := "imageio"
		if usage.Command != "" {
			cmd += " " + usage.Command
		}
		msg += " (see '" + cmd + " --help')"
	}
	fmt.Fprintf(w, "imageio: %s\n", msg)
	return code
}

// oneLine joins the lines of a multi-line message with "; ".
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// withSignal turns the error of a command that stopped because ctx was
// cancelled by a signal into a *SignalError naming that signal.
func withSignal(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	var sig *SignalError
	if errors.As(err, &sig) {
		return err
	}
	if errors.As(context.Cause(ctx), &sig) {
		return &SignalError{Signal: sig.Signal, Err: err}
	}
	return err
}

// explain adds a hint for users to errors whose cause is not obvious from
// the server's message.
func explain(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, httpbackend.ErrForbidden):
		return fmt.Errorf("%w (the transfer ticket is unknown, expired or finished)", err)
	}
	return err
}

// noSpaceError is a copy that stopped because the storage it was writing
// to is full. Its message is one short line for the user; the error it
// wraps keeps the whole chain for errors.Is.
type noSpaceError struct {
	msg string
	err error
}

func (e *noSpaceError) Error() string { return e.msg }

func (e *noSpaceError) Unwrap() error { return e.err }

// explainNoSpace shortens the error of an upload of path that stopped
// because the daemon's storage is full (a 507) to the daemon's message.
// The retry rules never resend such a request, so this is the first
// failure. Other errors are returned as they are.
func explainNoSpace(err error, path string) error {
	var se *httpbackend.ServerError
	if !errors.Is(err, backend.ErrNoSpace) || !errors.As(err, &se) || se.Message == "" {
		return err
	}
	return &noSpaceError{msg: fmt.Sprintf("uploading %q: the storage is full: %s", path, se.Message), err: err}
}

// explainLocalNoSpace shortens the error of a download to path that
// stopped because the local file system is full: the local qemu-nbd
// answered a write or zero with ENOSPC. Other errors are returned as they
// are.
func explainLocalNoSpace(err error, path string) error {
	if !errors.Is(err, backend.ErrNoSpace) {
		return err
	}
	msg := fmt.Sprintf("downloading to %q: the local file system is full", path)
	var ne *nbd.Error
	if errors.As(err, &ne) {
		msg += ": " + ne.Error()
	}
	return &noSpaceError{msg: msg, err: err}
}
