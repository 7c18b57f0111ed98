package commands

import (
	"context"
	"fmt"
	"io"

	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/transfer"

	"github.com/urfave/cli/v2"
)

// downloadOptions are the flags of imageio download.
type downloadOptions struct {
	transferOptions
	Conn          connOptions
	DiskID        string
	Format        string
	BackingFile   string
	BackingFormat string
	ProxyURL      string
	KeepPartial   bool
	Verify        bool
}

func downloadCommand(g *globalOptions) *cli.Command {
	opts := &downloadOptions{}
	flags := []cli.Flag{
		&cli.StringFlag{Name: "disk-id", Usage: "download the oVirt disk `ID` through the engine", Destination: &opts.DiskID, Category: catEngine},
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Usage: "`FORMAT` of FILE: qcow2 or raw", Value: "qcow2", Destination: &opts.Format},
		&cli.StringFlag{Name: "backing-file", Usage: "make FILE a qcow2 overlay of `BACKING`; zeros are written so they hide it", Destination: &opts.BackingFile, TakesFile: true},
		&cli.StringFlag{Name: "backing-format", Usage: "`FORMAT` of the backing file (default: detected)", Destination: &opts.BackingFormat},
		&cli.StringFlag{Name: "proxy-url", Usage: "imageio proxy `URL` to use when URL cannot be reached", Destination: &opts.ProxyURL, Category: catTransfer},
		&cli.BoolFlag{Name: "keep-partial", DisableDefaultText: true, Usage: "keep a partly written FILE after a failure or interruption", Destination: &opts.KeepPartial},
		&cli.BoolFlag{Name: "verify", DisableDefaultText: true, Usage: "compare the checksums of both ends after the copy", Destination: &opts.Verify},
	}
	flags = append(flags, connFlags(&opts.Conn)...)
	flags = append(flags, tlsFlags(&opts.transferOptions)...)
	flags = append(flags, workerFlags(&opts.transferOptions)...)
	flags = append(flags, outputFlags(&opts.transferOptions)...)
	return &cli.Command{
		Name:      "download",
		Usage:     "download an image from an imageio transfer URL or an oVirt disk into a local file",
		ArgsUsage: "URL FILE | --disk-id ID FILE",
		Description: "FILE is created with qemu-img create (--format, default qcow2); holes and\n" +
			"zeros are never fetched. Through the engine (--disk-id), the transfer is\n" +
			"always finalized, even after a failure or an interruption. FILE is removed\n" +
			"after a failure or interruption unless --keep-partial.",
		OnUsageError: onUsageError,
		Flags:        flags,
		Action: action(func(c *cli.Context) error {
			opts.Debug = g.Debug
			opts.InsecureSet = c.IsSet("insecure")
			opts.Conn.CAFile, opts.Conn.Insecure, opts.Conn.InsecureSet = opts.CAFile, opts.Insecure, opts.InsecureSet
			return runDownload(c.Context, *opts, c.Args().Slice(), c.App.Writer, c.App.ErrWriter)
		}),
	}
}

// check validates the flags and arguments of download and returns the
// transfer URL ("" with --disk-id) and the target file.
func (o *downloadOptions) check(args []string) (url, file string, err error) {
	switch {
	case o.DiskID != "" && len(args) == 1:
		file = args[0]
	case o.DiskID == "" && len(args) == 2:
		url, file = args[0], args[1]
		if !isURL(url) {
			return "", "", usageErrorf("download: %q is not an http(s) URL", url)
		}
		if o.Conn.usesEngine() {
			return "", "", usageErrorf("download: a transfer URL does not use the engine; drop the engine flags")
		}
	case o.DiskID != "":
		return "", "", usageErrorf("download: with --disk-id, want one FILE, got %d arguments", len(args))
	default:
		return "", "", usageErrorf("download: want URL FILE, or --disk-id ID FILE")
	}
	if o.ProxyURL != "" && url == "" {
		return "", "", usageErrorf("download: --proxy-url goes with a transfer URL; the engine gives its own")
	}
	if o.Conn.UseProxy && url != "" && o.ProxyURL == "" {
		return "", "", usageErrorf("download: --use-proxy with a transfer URL needs --proxy-url")
	}
	if o.Conn.InactivityTimeout < 0 {
		return "", "", usageErrorf("download: --inactivity-timeout %d: want seconds >= 0", o.Conn.InactivityTimeout)
	}
	if err := checkFormat("--format", o.Format, false); err != nil {
		return "", "", err
	}
	if o.BackingFile != "" && o.Format != "qcow2" {
		return "", "", usageErrorf("download: --backing-file needs --format qcow2")
	}
	if o.BackingFormat != "" && o.BackingFile == "" {
		return "", "", usageErrorf("download: --backing-format goes with --backing-file")
	}
	if _, err := o.bufferBytes(); err != nil {
		return "", "", err
	}
	return url, file, nil
}

// runDownload runs imageio download.
func runDownload(ctx context.Context, opts downloadOptions, args []string, stdout, stderr io.Writer) error {
	url, file, err := opts.check(args)
	if err != nil {
		return err
	}
	if opts.BackingFile != "" {
		// Before the engine or the daemon is contacted: a backing file
		// that cannot be opened fails at once, and no transfer is opened.
		if opts.BackingFormat, err = transfer.CheckBackingFile(ctx, file, opts.BackingFile, opts.BackingFormat); err != nil {
			return fmt.Errorf("downloading to %q: %w", file, err)
		}
	}
	bufSize, _ := opts.bufferBytes()
	log := newLogger(stderr, opts.Debug)
	disp := newProgress(stdout, stderr, chooseDisplay(stderr, opts.Quiet, opts.JSON))
	defer disp.Close()
	req := copyRequest{
		Path:          file,
		CAFile:        opts.CAFile,
		Insecure:      opts.Insecure,
		Workers:       opts.MaxWorkers,
		BufferSize:    bufSize,
		Verify:        opts.Verify,
		UseProxy:      opts.Conn.UseProxy,
		Format:        opts.Format,
		BackingFile:   opts.BackingFile,
		BackingFormat: opts.BackingFormat,
		KeepPartial:   opts.KeepPartial,
		Display:       disp,
		Log:           log,
	}
	res := uploadResult{Result: "ok", File: file}
	if url != "" {
		req.URL, req.ProxyURL = url, opts.ProxyURL
		var cr copyResult
		cr, err = downloadData(ctx, req)
		res.fill(cr)
	} else {
		err = downloadWithEngine(ctx, opts, req, &res)
	}
	if err != nil {
		return err
	}
	return finishResult(stdout, disp, opts.JSON, res, "downloaded")
}

// downloadWithEngine starts a download transfer of the disk, copies it and
// always finalizes the transfer, even after a failure or an interruption.
func downloadWithEngine(ctx context.Context, opts downloadOptions, req copyRequest, res *uploadResult) (err error) {
	disp := req.Display
	c, err := connectEngine(ctx, opts.Conn, &req)
	if err != nil {
		return err
	}
	defer c.Close()
	disk, err := c.Disk(ctx, opts.DiskID)
	if err != nil {
		return err
	}
	res.DiskID = disk.ID
	req.Size = disk.ProvisionedSize
	disp.Phase(phaseCreatingTransfer)
	t, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: disk.ID, Direction: engine.Download, InactivityTimeout: opts.Conn.InactivityTimeout})
	if err != nil {
		return err
	}
	res.TransferID = t.ID
	req.URL, req.ProxyURL = t.TransferURL, t.ProxyURL
	cr, err := downloadData(ctx, req)
	res.fill(cr)

	disp.Phase(phaseFinalizing)
	fctx, cancel := cleanupContext(ctx)
	defer cancel()
	ferr := c.Finalize(fctx, t)
	switch {
	case err != nil && ferr != nil:
		disp.Printf("imageio: warning: finalizing image transfer %s: %v", t.ID, ferr)
		return err
	case err != nil:
		return err
	case ferr != nil:
		return ferr
	}
	return nil
}
