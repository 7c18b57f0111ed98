package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	httpbackend "github.com/imageio/imageio/backend/http"
	nbdbackend "github.com/imageio/imageio/backend/nbd"
	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/nbdlocal"
	"github.com/imageio/imageio/qemuimg"
	"github.com/imageio/imageio/transfer"
)

// copyRequest is what upload and download hand to the transfer package.
type copyRequest struct {
	Path       string // local image
	Member     string // OVA member (upload)
	Size       int64  // virtual size, when known
	URL        string // transfer URL
	ProxyURL   string // proxy URL to fall back to
	UseProxy   bool   // use ProxyURL only
	CAFile     string
	Insecure   bool
	Workers    int
	BufferSize int
	DiskIsZero bool // the target reads as zeros (upload)
	Verify     bool

	// Download only.
	Format        string
	BackingFile   string
	BackingFormat string
	KeepPartial   bool

	Display *progress
	Log     *slog.Logger
}

// checksumResult is the block checksum object of the checksum command and
// of --verify.
type checksumResult struct {
	Algorithm string `json:"algorithm"`
	BlockSize int    `json:"block_size"`
	Checksum  string `json:"checksum"`
}

// copyResult is what a finished copy reports.
type copyResult struct {
	Size     int64 // virtual size
	Bytes    int64 // data bytes moved
	Checksum *checksumResult
}

// uploadData copies the local image to req.URL (or its proxy).
func uploadData(ctx context.Context, req copyRequest) (copyResult, error) {
	url, httpOpts, err := remoteOptions(req)
	if err != nil {
		return copyResult{}, err
	}
	res, err := transfer.Upload(ctx, transfer.UploadOptions{
		Path:       req.Path,
		Member:     req.Member,
		URL:        url,
		HTTP:       httpOpts,
		Workers:    req.Workers,
		BufferSize: req.BufferSize,
		Progress:   progressFunc(req.Display),
		DiskIsZero: req.DiskIsZero,
		Verify:     req.Verify,
	})
	req.Log.Debug("upload finished", "url", res.URL, "copied", res.Stats.Copied, "zeroed", res.Stats.Zeroed,
		"skipped", res.Stats.Skipped, "requests", res.Stats.Requests, "workers", res.Stats.Workers, "elapsed", res.Stats.Elapsed)
	if err != nil {
		return copyResult{}, explain(explainNoSpace(err, req.Path))
	}
	return resultOf(res), nil
}

// downloadData copies req.URL (or its proxy) into a new local image.
func downloadData(ctx context.Context, req copyRequest) (copyResult, error) {
	url, httpOpts, err := remoteOptions(req)
	if err != nil {
		return copyResult{}, err
	}
	res, err := transfer.Download(ctx, transfer.DownloadOptions{
		URL:           url,
		HTTP:          httpOpts,
		Path:          req.Path,
		Format:        req.Format,
		BackingFile:   req.BackingFile,
		BackingFormat: req.BackingFormat,
		Workers:       req.Workers,
		BufferSize:    req.BufferSize,
		Progress:      progressFunc(req.Display),
		KeepPartial:   req.KeepPartial,
		Verify:        req.Verify,
	})
	req.Log.Debug("download finished", "url", res.URL, "copied", res.Stats.Copied, "zeroed", res.Stats.Zeroed,
		"skipped", res.Stats.Skipped, "requests", res.Stats.Requests, "workers", res.Stats.Workers, "elapsed", res.Stats.Elapsed)
	if err != nil {
		return copyResult{}, explain(explainLocalNoSpace(err, req.Path))
	}
	return resultOf(res), nil
}

// remoteOptions picks the URL to open and the HTTP options: the transfer
// URL with the proxy as fallback, or the proxy alone with --use-proxy or
// when there is no transfer URL.
func remoteOptions(req copyRequest) (string, httpbackend.Options, error) {
	opts := httpbackend.Options{
		CAFile:     req.CAFile,
		Insecure:   req.Insecure,
		ProxyURL:   req.ProxyURL,
		BufferSize: req.BufferSize,
		MaxConns:   req.Workers,
		Notify: func(msg string) {
			req.Display.Printf("imageio: %s", msg)
		},
	}
	url := req.URL
	if req.UseProxy || url == "" {
		url, opts.ProxyURL = req.ProxyURL, ""
	}
	if url == "" {
		return "", opts, errors.New("no transfer URL: the engine gave neither transfer_url nor proxy_url")
	}
	return url, opts, nil
}

// progressFunc turns the transfer's progress reports into the display's.
// The transfer's "inspecting image" is dropped when a later phase is
// already shown (the engine flow inspects the image itself).
func progressFunc(disp *progress) func(transfer.Progress) {
	return func(p transfer.Progress) {
		if p.Phase == transfer.PhaseInspecting && disp.current() != "" {
			return
		}
		disp.Phase(p.Phase)
		if p.Total > 0 || p.Done > 0 {
			disp.Update(p.Done, p.Total)
		}
	}
}

// resultOf converts the transfer's result.
func resultOf(res transfer.Result) copyResult {
	cr := copyResult{Size: res.Size, Bytes: res.Stats.Copied}
	if res.Checksum != "" {
		cr.Checksum = &checksumResult{Algorithm: checksum.DefaultAlgorithm, BlockSize: checksum.DefaultBlockSize, Checksum: res.Checksum}
	}
	return cr
}

// inspectImage learns what the engine needs to plan a disk for the image:
// format and virtual size (qemu-img info), the qcow2 size needed
// (qemu-img measure) and whether a raw image is an ISO.
func inspectImage(ctx context.Context, path, member string) (engine.ImageFacts, error) {
	opt := qemuimg.Options{Member: member}
	info, err := qemuimg.Info(ctx, path, opt)
	if err != nil {
		return engine.ImageFacts{}, err
	}
	m, err := qemuimg.Measure(ctx, path, "qcow2", opt)
	if err != nil {
		return engine.ImageFacts{}, err
	}
	facts := engine.ImageFacts{Format: info.Format, VirtualSize: info.VirtualSize, Required: m.Required}
	if info.Format == "raw" {
		f, err := os.Open(path)
		if err != nil {
			return engine.ImageFacts{}, fmt.Errorf("inspecting image: %w", err)
		}
		defer f.Close()
		var r io.ReaderAt = f
		if member != "" {
			r = io.NewSectionReader(f, info.MemberOffset, info.MemberSize)
		}
		if facts.ISO, err = engine.IsISO(r); err != nil {
			return engine.ImageFacts{}, fmt.Errorf("inspecting %q: %w", path, err)
		}
	}
	return facts, nil
}

// localChecksum computes the checksum of a local image (or OVA member),
// read through a private read-only qemu-nbd.
func localChecksum(ctx context.Context, path, member, algorithm string, blockSize, workers int, disp *progress, log *slog.Logger) (_ checksumResult, err error) {
	srv, err := nbdlocal.Start(ctx, nbdlocal.Config{Path: path, Member: member, ReadOnly: true, Shared: workers + 1})
	if err != nil {
		return checksumResult{}, err
	}
	defer func() {
		if serr := srv.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	log.Debug("serving image", "path", path, "member", member, "format", srv.Format(), "nbd", srv.URL())
	b, err := nbdbackend.Open(ctx, srv.URL(), nbdbackend.Options{ReadOnly: true})
	if err != nil {
		return checksumResult{}, err
	}
	defer b.Close()
	size := b.Size()
	var done atomic.Int64
	res, err := checksum.ComputeWithOptions(ctx, b, checksum.Options{
		Algorithm: algorithm,
		BlockSize: blockSize,
		Workers:   workers,
		Progress:  func(n int64) { disp.Update(done.Add(n), size) },
	})
	if err != nil {
		return checksumResult{}, fmt.Errorf("computing checksum of %q: %w", path, err)
	}
	return checksumResult{Algorithm: res.Algorithm, BlockSize: res.BlockSize, Checksum: res.Checksum}, nil
}
