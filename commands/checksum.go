package commands

import (
	"context"
	"fmt"
	"io"
	"strings"

	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/checksum"

	"github.com/urfave/cli/v2"
)

// checksumOptions are the flags of imageio checksum.
type checksumOptions struct {
	transferOptions
	Member    string
	Algorithm string
	BlockSize string
	ProxyURL  string
}

func checksumCommand(g *globalOptions) *cli.Command {
	opts := &checksumOptions{}
	flags := []cli.Flag{
		&cli.StringFlag{Name: "member", Usage: "checksum the disk `NAME` inside the OVA FILE", Destination: &opts.Member},
		&cli.StringFlag{Name: "algorithm", Usage: "hash `ALGORITHM` of the blocks and of the result", Value: "blake2b", Destination: &opts.Algorithm},
		&cli.StringFlag{Name: "block-size", Usage: "hash blocks of `SIZE` (1m-16m, a multiple of 4k)", Value: "4m", Destination: &opts.BlockSize},
		&cli.StringFlag{Name: "proxy-url", Usage: "imageio proxy `URL` to use when the URL cannot be reached", Destination: &opts.ProxyURL, Category: catTransfer},
	}
	flags = append(flags, tlsFlags(&opts.transferOptions)...)
	flags = append(flags, &cli.IntFlag{Name: "max-workers", Usage: "read with up to `N` workers (1-8)", Value: defWorkers, Destination: &opts.MaxWorkers, Category: catTransfer})
	flags = append(flags, outputFlags(&opts.transferOptions)...)
	return &cli.Command{
		Name:      "checksum",
		Usage:     "compute the block checksum of a local image or of a transfer URL",
		ArgsUsage: "FILE|URL",
		Description: "Prints {\"algorithm\", \"block_size\", \"checksum\"} as JSON: the same block\n" +
			"checksum an imageio daemon returns from /images/TICKET/checksum, computed\n" +
			"locally for FILE (any qemu image format, or --member of an OVA) or by the\n" +
			"daemon for an https:// transfer URL.",
		OnUsageError: onUsageError,
		Flags:        flags,
		Action: action(func(c *cli.Context) error {
			opts.Debug = g.Debug
			opts.InsecureSet = c.IsSet("insecure")
			return runChecksum(c.Context, *opts, c.Args().Slice(), c.App.Writer, c.App.ErrWriter)
		}),
	}
}

// isURL reports whether s names a remote image rather than a file.
func isURL(s string) bool {
	return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://")
}

// runChecksum runs imageio checksum.
func runChecksum(ctx context.Context, opts checksumOptions, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return usageErrorf("checksum: want one FILE or URL, got %d arguments", len(args))
	}
	if opts.MaxWorkers < minWorkers || opts.MaxWorkers > maxWorkers {
		return usageErrorf("--max-workers %d: want %d to %d", opts.MaxWorkers, minWorkers, maxWorkers)
	}
	bs, err := parseSize(opts.BlockSize)
	if err != nil {
		return &UsageError{Err: fmt.Errorf("--block-size: %w", err)}
	}
	if bs > checksum.MaxBlockSize {
		bs = checksum.MaxBlockSize + 1 // reported by Validate
	}
	if err := checksum.Validate(opts.Algorithm, int(bs)); err != nil {
		return &UsageError{Err: fmt.Errorf("checksum: %w", err)}
	}
	target := args[0]
	remote := isURL(target)
	if remote && opts.Member != "" {
		return usageErrorf("checksum: --member applies to a local OVA file, not a URL")
	}
	if !remote && opts.ProxyURL != "" {
		return usageErrorf("checksum: --proxy-url applies to a URL")
	}
	log := newLogger(stderr, opts.Debug)
	mode := chooseDisplay(stderr, opts.Quiet, opts.JSON)
	if mode == displayText {
		mode = displayNone // one short phase: no lines in logs
	}
	disp := newProgress(stdout, stderr, mode)
	defer disp.Close()
	disp.Phase(phaseComputing)
	var res checksumResult
	if remote {
		res, err = remoteChecksum(ctx, target, opts, int(bs), disp)
	} else {
		res, err = localChecksum(ctx, target, opts.Member, opts.Algorithm, int(bs), opts.MaxWorkers, disp, log)
	}
	if err != nil {
		return explain(err)
	}
	disp.Phase(phaseDone)
	disp.Close()
	return writeJSON(stdout, res)
}

// remoteChecksum asks the daemon serving url for the checksum.
func remoteChecksum(ctx context.Context, url string, opts checksumOptions, blockSize int, disp *progress) (checksumResult, error) {
	b, err := httpbackend.Open(ctx, url, httpbackend.Options{
		CAFile:   opts.CAFile,
		Insecure: opts.Insecure,
		ProxyURL: opts.ProxyURL,
		Notify:   func(msg string) { disp.Printf("imageio: %s", msg) },
	})
	if err != nil {
		return checksumResult{}, err
	}
	defer b.Close()
	sum, err := b.Checksum(ctx, opts.Algorithm, blockSize)
	if err != nil {
		return checksumResult{}, err
	}
	return checksumResult{Algorithm: opts.Algorithm, BlockSize: blockSize, Checksum: sum}, nil
}
