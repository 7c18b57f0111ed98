package commands

import (
	"context"
	"log/slog"

	"github.com/imageio/imageio/engine"
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

// uploadData copies the local image to req.URL.
func uploadData(ctx context.Context, req copyRequest) (copyResult, error) {
	return copyResult{}, errNotImplemented
}

// downloadData copies req.URL into a new local image.
func downloadData(ctx context.Context, req copyRequest) (copyResult, error) {
	return copyResult{}, errNotImplemented
}

// inspectImage learns what the engine needs to plan a disk for the image.
func inspectImage(ctx context.Context, path, member string) (engine.ImageFacts, error) {
	return engine.ImageFacts{}, errNotImplemented
}

// localChecksum computes the checksum of a local image (or OVA member).
func localChecksum(ctx context.Context, path, member, algorithm string, blockSize, workers int, disp *progress, log *slog.Logger) (checksumResult, error) {
	return checksumResult{}, errNotImplemented
}
