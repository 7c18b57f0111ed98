package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	nbdb "github.com/imageio/imageio/backend/nbd"
	"github.com/imageio/imageio/transfer"
)

func main() {
	os.Exit(program(os.Args[1:], os.Stdout, os.Stderr))
}

// program runs the bench command line and returns the exit code.
func program(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, args, stdout, stderr)
	stop()
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
}

var errUsage = errors.New("usage: bench run | bench copy SRC-URL DST-URL | bench image PATH SIZE")

// run dispatches the subcommands.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch cmd, rest := args[0], args[1:]; {
	case cmd == "run" && len(rest) == 0:
		cfg, err := configFromEnv(os.Getenv)
		if err != nil {
			return err
		}
		return runBench(ctx, cfg, stdout, stderr)
	case cmd == "copy" && len(rest) == 2:
		return runCopy(ctx, rest[0], rest[1], stderr)
	case cmd == "floor-peer" && len(rest) == 1:
		// Not in the usage: the harness runs it for the floors.
		return runFloorPeer(ctx, rest[0], stdout)
	case cmd == "image" && len(rest) == 2:
		size, err := parseSize(rest[1])
		if err != nil {
			return err
		}
		return buildImage(ctx, rest[0], size, layout(size, denseMix, 1), 1)
	default:
		return errUsage
	}
}

// runCopy copies one NBD export to another with package transfer, the
// engine imageio upload and download use, with its default options.
func runCopy(ctx context.Context, srcURL, dstURL string, stderr io.Writer) (err error) {
	src, err := nbdb.Open(ctx, srcURL, nbdb.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := nbdb.Open(ctx, dstURL, nbdb.Options{Sparse: true})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dst.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing target: %w", cerr)
		}
	}()
	stats, err := transfer.Copy(ctx, dst, src, transfer.Options{KeepHoles: true})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "copied %d bytes, zeroed %d, skipped %d in %d requests with %d workers, %v\n",
		stats.Copied, stats.Zeroed, stats.Skipped, stats.Requests, stats.Workers, stats.Elapsed.Round(time.Millisecond))
	return nil
}
