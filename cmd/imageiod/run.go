package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/daemon"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usage = `usage: imageiod [-c CONF_DIR] [--show-config] [--log-level LEVEL]

Serve disk images over HTTPS and a Unix socket under tickets added through
the control service. The configuration is read from CONF_DIR/conf.d/*.conf.

Options:
`

type options struct {
	confDir    string
	showConfig bool
	logLevel   string
}

// newFlagSet binds the command line flags to opts.
func newFlagSet(opts *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("imageiod", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&opts.confDir, "c", "/etc/ovirt-imageio", "configuration `directory` (reads CONF_DIR/conf.d/*.conf)")
	fs.StringVar(&opts.confDir, "conf-dir", "/etc/ovirt-imageio", "same as -c")
	fs.BoolVar(&opts.showConfig, "show-config", false, "print the merged configuration as JSON and exit")
	fs.StringVar(&opts.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	return fs
}

// run is imageiod without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var opts options
	fs := newFlagSet(&opts, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imageiod: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(opts.logLevel)); err != nil {
		fmt.Fprintf(stderr, "imageiod: invalid log level %q\n", opts.logLevel)
		return exitUsage
	}
	if err := serve(ctx, opts, level, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "imageiod: %v\n", err)
		return exitError
	}
	return exitOK
}

func serve(ctx context.Context, opts options, level slog.Level, stdout, stderr io.Writer) error {
	cfg, err := config.Load(opts.confDir)
	if err != nil {
		return err
	}
	if opts.showConfig {
		b, err := cfg.JSON()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, strings.TrimSpace(string(b)))
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	d, err := daemon.Listen(cfg, daemon.Options{Logger: log})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
