package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/imageio/imageio/engine"
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

// usesEngine reports whether engine connection flags were given.
func (o *connOptions) usesEngine() bool {
	return o.Profile != "" || o.EngineURL != "" || o.Username != "" || o.PasswordFile != "" || o.InactivityTimeout != 0
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
	if o.TransferURL != "" && o.Conn.usesEngine() {
		return usageErrorf("upload: --transfer-url does not use the engine; drop the engine flags")
	}
	if o.TransferURL != "" && !isURL(o.TransferURL) {
		return usageErrorf("upload: --transfer-url %q is not an http(s) URL", o.TransferURL)
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
	if o.Conn.UseProxy && o.TransferURL != "" && o.ProxyURL == "" {
		return usageErrorf("upload: --use-proxy with --transfer-url needs --proxy-url")
	}
	if err := checkFormat("--format", o.Format, true); err != nil {
		return err
	}
	if _, err := o.bufferBytes(); err != nil {
		return err
	}
	return nil
}

// uploadResult is the --json result object of upload and download.
type uploadResult struct {
	Result     string          `json:"result"`
	File       string          `json:"file"`
	Size       int64           `json:"size"`
	Bytes      int64           `json:"bytes"`
	Seconds    float64         `json:"seconds"`
	DiskID     string          `json:"disk_id,omitempty"`
	TransferID string          `json:"transfer_id,omitempty"`
	Checksum   *checksumResult `json:"checksum,omitempty"`
}

// runUpload runs imageio upload.
func runUpload(ctx context.Context, opts uploadOptions, args []string, stdout, stderr io.Writer) error {
	if err := opts.check(args); err != nil {
		return err
	}
	bufSize, _ := opts.bufferBytes()
	file := args[0]
	log := newLogger(stderr, opts.Debug)
	disp := newProgress(stdout, stderr, chooseDisplay(stderr, opts.Quiet, opts.JSON))
	defer disp.Close()

	req := copyRequest{
		Path:       file,
		Member:     opts.Member,
		CAFile:     opts.CAFile,
		Insecure:   opts.Insecure,
		Workers:    opts.MaxWorkers,
		BufferSize: bufSize,
		Verify:     opts.Verify,
		UseProxy:   opts.Conn.UseProxy,
		Display:    disp,
		Log:        log,
	}
	res := uploadResult{Result: "ok", File: file}
	var err error
	if opts.TransferURL != "" {
		req.URL, req.ProxyURL = opts.TransferURL, opts.ProxyURL
		var cr copyResult
		cr, err = uploadData(ctx, req)
		res.fill(cr)
	} else {
		err = uploadWithEngine(ctx, opts, req, &res)
	}
	if err != nil {
		return err
	}
	return finishResult(stdout, disp, opts.JSON, res, "uploaded")
}

// fill copies what the copy reported into the result object.
func (r *uploadResult) fill(cr copyResult) {
	r.Size, r.Bytes = cr.Size, cr.Bytes
	if cr.Checksum != nil {
		r.Checksum = cr.Checksum
	}
}

// finishResult ends the progress display with the done phase and writes
// the --json result object, or a one-line summary on stderr (and the disk
// id, the result a script wants, on stdout).
func finishResult(stdout io.Writer, disp *progress, jsonOut bool, res uploadResult, verb string) error {
	disp.Phase(phaseDone)
	disp.Close()
	res.Seconds = disp.elapsed()
	if jsonOut {
		return writeJSON(stdout, res)
	}
	if disp.mode != displayNone {
		msg := fmt.Sprintf("%s %s (%s of data) in %.1f s", verb, formatSize(res.Size), formatSize(res.Bytes), res.Seconds)
		if res.DiskID != "" {
			msg += ", disk " + res.DiskID
		}
		if res.Checksum != nil {
			msg += ", verified " + res.Checksum.Algorithm + " " + res.Checksum.Checksum
		}
		disp.Printf("%s", msg)
	}
	if res.DiskID != "" && verb == "uploaded" {
		if _, err := fmt.Fprintln(stdout, res.DiskID); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	return nil
}

// diskName returns the alias for a new disk: --name, else the OVA member or
// file name.
func diskName(opts uploadOptions, file string) string {
	switch {
	case opts.Name != "":
		return opts.Name
	case opts.Member != "":
		return filepath.Base(opts.Member)
	default:
		return filepath.Base(file)
	}
}

// uploadWithEngine runs the engine flow: inspect the image, create the
// disk (or check the existing one), start the transfer, copy, finalize. Any
// failure or interruption after the transfer exists cancels it, and a disk
// created here is removed.
func uploadWithEngine(ctx context.Context, opts uploadOptions, req copyRequest, res *uploadResult) (err error) {
	disp, log := req.Display, req.Log
	disp.Phase(phaseInspecting)
	facts, err := inspectImage(ctx, req.Path, req.Member)
	if err != nil {
		return err
	}
	req.Size = facts.VirtualSize
	c, err := connectEngine(ctx, opts.Conn, &req)
	if err != nil {
		return err
	}
	defer c.Close()

	diskID := opts.DiskID
	created := false
	if opts.StorageDomain != "" {
		disp.Phase(phaseCreatingDisk)
		sd, err := c.StorageDomain(ctx, opts.StorageDomain)
		if err != nil {
			return err
		}
		spec, err := engine.PlanDisk(facts, engine.PlanOptions{
			Name:          diskName(opts, req.Path),
			Description:   opts.Description,
			StorageDomain: opts.StorageDomain,
			Format:        opts.Format,
			Preallocated:  opts.Preallocated,
			BlockStorage:  sd.Block(),
			ID:            newUUID(),
		})
		if err != nil {
			return err
		}
		log.Debug("creating disk", "id", spec.ID, "format", spec.Format, "sparse", spec.Sparse, "provisioned", spec.ProvisionedSize, "initial", spec.InitialSize, "iso", spec.ISO)
		disk, err := c.CreateDisk(ctx, spec)
		if err != nil {
			removeDisk(ctx, c, spec.ID, disp)
			return err
		}
		diskID, created = disk.ID, true
		// A new qcow2 disk, or a thin disk on file storage, reads as zeros:
		// zero extents need not be written.
		req.DiskIsZero = spec.Format == engine.FormatQcow2 || (spec.Sparse && !sd.Block())
	} else {
		disk, err := c.Disk(ctx, diskID)
		if err != nil {
			return err
		}
		if disk.ProvisionedSize < facts.VirtualSize {
			return fmt.Errorf("disk %s is %s, smaller than the image (%s)", diskID, formatSize(disk.ProvisionedSize), formatSize(facts.VirtualSize))
		}
	}
	res.DiskID = diskID

	disp.Phase(phaseCreatingTransfer)
	t, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: diskID, Direction: engine.Upload, InactivityTimeout: opts.Conn.InactivityTimeout})
	if err != nil {
		if created {
			removeDisk(ctx, c, diskID, disp)
		}
		return err
	}
	res.TransferID = t.ID
	defer func() {
		if err == nil {
			return
		}
		disp.Phase(phaseCancelling)
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if cerr := c.Cancel(cctx, t); cerr != nil {
			disp.Printf("imageio: warning: cancelling image transfer %s: %v", t.ID, cerr)
		}
		if created {
			removeDisk(ctx, c, diskID, disp)
		}
	}()

	req.URL, req.ProxyURL = t.TransferURL, t.ProxyURL
	cr, err := uploadData(ctx, req)
	if err != nil {
		return err
	}
	res.fill(cr)
	disp.Phase(phaseFinalizing)
	if err := c.Finalize(ctx, t); err != nil {
		return err
	}
	return nil
}

// removeDisk removes a disk made by this command, with a context that
// outlives ctx. A disk already gone is fine.
func removeDisk(ctx context.Context, c *engine.Client, id string, disp *progress) {
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	err := c.RemoveDisk(cctx, id)
	// The engine may still hold the disk locked; wait a little for it.
	for i := 0; i < 30 && err != nil && !errors.Is(err, engine.ErrDiskNotFound) && cctx.Err() == nil; i++ {
		time.Sleep(time.Second)
		err = c.RemoveDisk(cctx, id)
	}
	if err != nil && !errors.Is(err, engine.ErrDiskNotFound) {
		disp.Printf("imageio: warning: removing disk %s: %v", id, err)
	}
}
