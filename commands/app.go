package commands

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"
)

// Version is the program version, set at build time with
// -ldflags "-X github.com/imageio/imageio/commands.Version=...".
var Version = "dev"

// globalOptions are the root flags, accepted anywhere on the line.
type globalOptions struct {
	Debug bool
}

// App returns the imageio command line application. Run it with
//
//	app := commands.App()
//	err := app.RunContext(ctx, commands.Args(app, os.Args))
//
// It never exits the process and never prints errors: they are returned
// for Report.
func App() *cli.App {
	g := &globalOptions{}
	return &cli.App{
		Name:      "imageio",
		Usage:     "move virtual disk images in and out of oVirt",
		UsageText: "imageio [--debug] COMMAND [ARGS AND FLAGS...]",
		Description: "Flags may be given before or after the arguments; \"--\" ends the flags.\n" +
			"Exit status: 0 ok, 1 failure, 2 usage error, 3 verification mismatch,\n" +
			"128+N stopped by signal N (130 for Ctrl-C, 143 for SIGTERM).",
		Version:        Version,
		Writer:         os.Stdout,
		ErrWriter:      os.Stderr,
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErrorf("unknown command %q", c.Args().First())
			}
			return usageErrorf("no command given")
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "debug", DisableDefaultText: true, Usage: "log debug messages to stderr", Destination: &g.Debug},
		},
		Commands: []*cli.Command{
			infoCommand(g),
			measureCommand(g),
			checksumCommand(g),
			uploadCommand(g),
			downloadCommand(g),
		},
	}
}

// onUsageError makes flag parsing errors usage errors, printed once by
// Report instead of urfave's help dump on stdout.
func onUsageError(c *cli.Context, err error, isSubcommand bool) error {
	if c.Command != nil && c.Command.Name != "" && isSubcommand {
		return &UsageError{Err: fmt.Errorf("%s: %w", c.Command.Name, err), Command: c.Command.Name}
	}
	return &UsageError{Err: err}
}

// action builds a cli.ActionFunc: it runs fn and turns an interruption by
// a signal into a *SignalError.
func action(fn func(c *cli.Context) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		err := withSignal(c.Context, fn(c))
		var usage *UsageError
		if errors.As(err, &usage) && usage.Command == "" {
			usage.Command = c.Command.Name
		}
		return err
	}
}

// newLogger returns a debug logger on stderr when debug is set, and one
// that discards everything otherwise.
func newLogger(stderr io.Writer, debug bool) *slog.Logger {
	if !debug {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Flag validation shared by the commands.
const (
	minWorkers    = 1
	maxWorkers    = 8
	defWorkers    = 4
	minBufferSize = 64 << 10
	maxBufferSize = 32 << 20
	defBufferSize = "4m"
)

// transferOptions are the flags common to upload and download (and, in
// part, checksum).
type transferOptions struct {
	CAFile      string
	Insecure    bool
	InsecureSet bool
	MaxWorkers  int
	BufferSize  string
	JSON        bool
	Quiet       bool
	Debug       bool
}

// bufferBytes validates --max-workers and --buffer-size and returns the
// buffer size in bytes.
func (o *transferOptions) bufferBytes() (int, error) {
	if o.MaxWorkers < minWorkers || o.MaxWorkers > maxWorkers {
		return 0, usageErrorf("--max-workers %d: want %d to %d", o.MaxWorkers, minWorkers, maxWorkers)
	}
	n, err := parseSize(o.BufferSize)
	if err != nil {
		return 0, &UsageError{Err: fmt.Errorf("--buffer-size: %w", err)}
	}
	if n < minBufferSize || n > maxBufferSize {
		return 0, usageErrorf("--buffer-size %s: want 64k to 32m", o.BufferSize)
	}
	return int(n), nil
}

const (
	catTransfer = "TRANSFER"
	catEngine   = "ENGINE"
	catOutput   = "OUTPUT"
)

func tlsFlags(o *transferOptions) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "cafile", Usage: "trust the CA certificates in `FILE` (PEM) for the engine and imageio servers", Destination: &o.CAFile, TakesFile: true, Category: catTransfer},
		&cli.BoolFlag{Name: "insecure", DisableDefaultText: true, Usage: "do not verify server certificates", Destination: &o.Insecure, Category: catTransfer},
	}
}

func workerFlags(o *transferOptions) []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "max-workers", Usage: "copy with up to `N` connections (1-8; capped by the server)", Value: defWorkers, Destination: &o.MaxWorkers, Category: catTransfer},
		&cli.StringFlag{Name: "buffer-size", Usage: "use a buffer of `SIZE` per worker (64k-32m; k, m, g suffixes)", Value: defBufferSize, Destination: &o.BufferSize, Category: catTransfer},
	}
}

func outputFlags(o *transferOptions) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", DisableDefaultText: true, Usage: "write progress and the result as JSON objects, one per line, on stdout", Destination: &o.JSON, Category: catOutput},
		&cli.BoolFlag{Name: "quiet", DisableDefaultText: true, Aliases: []string{"q"}, Usage: "show no progress", Destination: &o.Quiet, Category: catOutput},
	}
}

func connFlags(o *connOptions) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "use the engine profile `SECTION` of $XDG_CONFIG_HOME/imageio.conf", Destination: &o.Profile, Category: catEngine},
		&cli.StringFlag{Name: "engine-url", Usage: "oVirt engine `URL`, like https://engine.example.com", Destination: &o.EngineURL, Category: catEngine},
		&cli.StringFlag{Name: "username", Usage: "engine user `NAME`, like admin@internal", Destination: &o.Username, Category: catEngine},
		&cli.StringFlag{Name: "password-file", Usage: "read the engine password from `FILE` (else $" + PasswordEnv + ", the profile or a prompt)", Destination: &o.PasswordFile, TakesFile: true, Category: catEngine},
		&cli.IntFlag{Name: "inactivity-timeout", Usage: "let the engine cancel the transfer after `SECONDS` without activity", Destination: &o.InactivityTimeout, DefaultText: "60", Category: catEngine},
		&cli.BoolFlag{Name: "use-proxy", DisableDefaultText: true, Usage: "transfer through the engine's imageio proxy (proxy_url) only", Destination: &o.UseProxy, Category: catEngine},
	}
}
