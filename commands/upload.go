package commands

import (
	"context"
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

// uploadOptions are the flags of imageio upload.
type uploadOptions struct {
	transferOptions
	Conn          connOptions
	TransferURL   string
	ProxyURL      string
	StorageDomain string
	Name          string
	Description   string
	Format        string
	Preallocated  bool
	DiskID        string
	Member        string
	Verify        bool
}

func uploadCommand(g *globalOptions) *cli.Command {
	opts := &uploadOptions{}
	flags := []cli.Flag{
		&cli.StringFlag{Name: "transfer-url", Usage: "upload to the imageio transfer `URL` (no engine)", Destination: &opts.TransferURL, Category: catTransfer},
		&cli.StringFlag{Name: "proxy-url", Usage: "imageio proxy `URL` to use when the transfer URL cannot be reached", Destination: &opts.ProxyURL, Category: catTransfer},
		&cli.StringFlag{Name: "storage-domain", Aliases: []string{"s"}, Usage: "create a new disk on the storage domain `NAME`", Destination: &opts.StorageDomain, Category: catEngine},
		&cli.StringFlag{Name: "name", Usage: "`NAME` (alias) of the new disk (default: the file name)", Destination: &opts.Name, Category: catEngine},
		&cli.StringFlag{Name: "description", Usage: "`TEXT` describing the new disk", Destination: &opts.Description, Category: catEngine},
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Usage: "`FORMAT` of the new disk: raw or qcow2 (default: the image's)", Destination: &opts.Format, Category: catEngine},
		&cli.BoolFlag{Name: "preallocated", DisableDefaultText: true, Usage: "allocate the whole new disk (default: thin)", Destination: &opts.Preallocated, Category: catEngine},
		&cli.StringFlag{Name: "disk-id", Usage: "upload to the existing disk `ID`", Destination: &opts.DiskID, Category: catEngine},
		&cli.StringFlag{Name: "member", Usage: "upload the disk `NAME` inside the OVA FILE", Destination: &opts.Member},
		&cli.BoolFlag{Name: "verify", DisableDefaultText: true, Usage: "compare the checksums of both ends after the copy", Destination: &opts.Verify},
	}
	flags = append(flags, connFlags(&opts.Conn)...)
	flags = append(flags, tlsFlags(&opts.transferOptions)...)
	flags = append(flags, workerFlags(&opts.transferOptions)...)
	flags = append(flags, outputFlags(&opts.transferOptions)...)
	return &cli.Command{
		Name:      "upload",
		Usage:     "upload a local image to an imageio transfer URL or to an oVirt disk",
		ArgsUsage: "FILE",
		Description: "Give one destination: --transfer-url (an image transfer opened by someone\n" +
			"else), --storage-domain (a new disk, created from the image's format and\n" +
			"size) or --disk-id (an existing disk). With the engine, the transfer is\n" +
			"finalized on success and cancelled on any failure or interruption, so a\n" +
			"new disk is removed again. FILE may be any image qemu can read.",
		OnUsageError: onUsageError,
		Flags:        flags,
		Action: action(func(c *cli.Context) error {
			opts.Debug = g.Debug
			opts.InsecureSet = c.IsSet("insecure")
			opts.Conn.CAFile, opts.Conn.Insecure, opts.Conn.InsecureSet = opts.CAFile, opts.Insecure, opts.InsecureSet
			return runUpload(c.Context, *opts, c.Args().Slice(), c.App.Writer, c.App.ErrWriter)
		}),
	}
}

// check validates the flags and arguments of upload.
func (o *uploadOptions) check(args []string) error {
	if len(args) != 1 {
		return usageErrorf("upload: want one FILE, got %d arguments", len(args))
	}
	n := 0
	for _, set := range []bool{o.TransferURL != "", o.StorageDomain != "", o.DiskID != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return usageErrorf("upload: give exactly one of --transfer-url, --storage-domain or --disk-id")
	}
	if o.TransferURL != "" && (o.Conn.Profile != "" || o.Conn.EngineURL != "" || o.Conn.Username != "" || o.Conn.PasswordFile != "") {
		return usageErrorf("upload: --transfer-url does not use the engine; drop the engine flags")
	}
	if o.StorageDomain == "" && (o.Name != "" || o.Description != "" || o.Format != "" || o.Preallocated) {
		return usageErrorf("upload: --name, --description, --format and --preallocated describe a new disk; they need --storage-domain")
	}
	if o.Conn.InactivityTimeout < 0 {
		return usageErrorf("upload: --inactivity-timeout %d: want seconds >= 0", o.Conn.InactivityTimeout)
	}
	if o.ProxyURL != "" && o.TransferURL == "" {
		return usageErrorf("upload: --proxy-url goes with --transfer-url; the engine gives its own")
	}
	if err := checkFormat("--format", o.Format, true); err != nil {
		return err
	}
	if _, err := o.bufferBytes(); err != nil {
		return err
	}
	return nil
}

// runUpload runs imageio upload.
func runUpload(ctx context.Context, opts uploadOptions, args []string, stdout, stderr io.Writer) error {
	if err := opts.check(args); err != nil {
		return err
	}
	log := newLogger(stderr, opts.Debug)
	if opts.TransferURL == "" {
		conn, err := resolveConn(opts.Conn, resolver{Getenv: os.Getenv, Prompt: ttyPrompt()})
		if err != nil {
			return err
		}
		log.Debug("engine", "url", conn.URL, "user", conn.Username)
	}
	return errNotImplemented
}
