package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/imageio/imageio/control"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usage = `usage: imageioctl [-c CONF_DIR] COMMAND [ARGS]

Commands:
  add-ticket FILE             add or replace the ticket in FILE ("-" reads stdin)
  show-ticket ID              print the status of ticket ID as JSON
  mod-ticket ID --timeout N   make ticket ID expire N seconds from now
  del-ticket ID               cancel and remove ticket ID

Options:
  -c, --conf-dir CONF_DIR     daemon configuration directory (default /etc/ovirt-imageio)
  -h, --help                  show this help
`

// usageError is a command line mistake: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

type options struct {
	confDir string
	timeout int
	// timeoutSet records that --timeout was given.
	timeoutSet bool
}

// valueFlags are the flags that take a value.
var valueFlags = map[string]bool{"c": true, "conf-dir": true, "timeout": true}

// splitArgs moves flags ahead of positional arguments (flags may follow
// the command and its argument), honouring "--".
func splitArgs(args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(positional, args[i+1:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && valueFlags[name] && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, positional
}

// run is imageioctl without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := runCommand(ctx, args, stdin, stdout)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "imageioctl: %v\n%s", err, usage)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "imageioctl: %v\n", err)
		return exitError
	}
}

func runCommand(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	var opts options
	fs := flag.NewFlagSet("imageioctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&opts.confDir, "c", "/etc/ovirt-imageio", "")
	fs.StringVar(&opts.confDir, "conf-dir", "/etc/ovirt-imageio", "")
	fs.Func("timeout", "", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("expecting a number of seconds >= 0, got %q", s)
		}
		opts.timeout, opts.timeoutSet = n, true
		return nil
	})
	flags, pos := splitArgs(args)
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if len(pos) == 0 {
		return usagef("missing command")
	}
	cmd, rest := pos[0], pos[1:]
	if len(rest) != 1 {
		return usagef("%s takes exactly one argument", cmd)
	}
	if opts.timeoutSet && cmd != "mod-ticket" {
		return usagef("--timeout is for mod-ticket only")
	}
	switch cmd {
	case "add-ticket", "show-ticket", "mod-ticket", "del-ticket":
	default:
		return usagef("unknown command %q", cmd)
	}
	if cmd == "mod-ticket" && !opts.timeoutSet {
		return usagef("mod-ticket needs --timeout N")
	}
	c, err := control.ClientFromConfig(opts.confDir)
	if err != nil {
		return err
	}
	switch cmd {
	case "add-ticket":
		return addTicket(ctx, c, rest[0], stdin)
	case "show-ticket":
		return showTicket(ctx, c, rest[0], stdout)
	case "mod-ticket":
		return c.ModTicket(ctx, rest[0], opts.timeout)
	default:
		return c.DelTicket(ctx, rest[0])
	}
}

func addTicket(ctx context.Context, c *control.Client, file string, stdin io.Reader) error {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("reading ticket: %w", err)
	}
	return c.AddTicket(ctx, data)
}

func showTicket(ctx context.Context, c *control.Client, id string, stdout io.Writer) error {
	raw, err := c.GetTicket(ctx, id)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("formatting ticket status: %w", err)
	}
	out.WriteByte('\n')
	_, err = stdout.Write(out.Bytes())
	return err
}
