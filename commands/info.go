package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/imageio/imageio/qemuimg"
	"github.com/urfave/cli/v2"
)

// infoOptions are the flags of imageio info.
type infoOptions struct {
	Member string
	JSON   bool
	Debug  bool
}

func infoCommand(g *globalOptions) *cli.Command {
	opts := &infoOptions{}
	return &cli.Command{
		Name:      "info",
		Usage:     "describe a local image (or a disk inside an OVA)",
		ArgsUsage: "FILE",
		Description: "Prints a short summary of the image: format, virtual size, size on disk.\n" +
			"With --json, prints the qemu-img info JSON object, plus member-offset and\n" +
			"member-size for an OVA member.",
		OnUsageError: onUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "member", Usage: "describe the disk `NAME` inside the OVA FILE", Destination: &opts.Member},
			&cli.BoolFlag{Name: "json", DisableDefaultText: true, Usage: "print the qemu-img info JSON object", Destination: &opts.JSON},
		},
		Action: action(func(c *cli.Context) error {
			opts.Debug = g.Debug
			return runInfo(c.Context, *opts, c.Args().Slice(), c.App.Writer, c.App.ErrWriter)
		}),
	}
}

// runInfo runs imageio info.
func runInfo(ctx context.Context, opts infoOptions, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return usageErrorf("info: want one FILE, got %d arguments", len(args))
	}
	info, err := qemuimg.Info(ctx, args[0], qemuimg.Options{Member: opts.Member})
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeRawJSON(stdout, info.JSON)
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "file:\t%s\n", args[0])
	if opts.Member != "" {
		fmt.Fprintf(tw, "member:\t%s (offset %d, %s)\n", opts.Member, info.MemberOffset, formatSize(info.MemberSize))
	}
	fmt.Fprintf(tw, "format:\t%s\n", info.Format)
	fmt.Fprintf(tw, "virtual size:\t%s\n", humanBytes(info.VirtualSize))
	fmt.Fprintf(tw, "disk size:\t%s\n", formatSize(info.ActualSize))
	if info.ClusterSize > 0 {
		fmt.Fprintf(tw, "cluster size:\t%s\n", formatSize(info.ClusterSize))
	}
	if info.BackingFilename != "" {
		bf := info.BackingFilename
		if info.BackingFormat != "" {
			bf += " (format " + info.BackingFormat + ")"
		}
		fmt.Fprintf(tw, "backing file:\t%s\n", bf)
	}
	if info.Encrypted {
		fmt.Fprintf(tw, "encrypted:\tyes\n")
	}
	if info.DirtyFlag {
		fmt.Fprintf(tw, "dirty:\tyes (not closed cleanly)\n")
	}
	tw.Flush()
	if _, err := stdout.Write(b.Bytes()); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// writeRawJSON writes a JSON object from qemu-img compacted onto one line.
func writeRawJSON(w io.Writer, raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return fmt.Errorf("encoding JSON output: %w", err)
	}
	b.WriteByte('\n')
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// humanBytes formats n as "1 GiB (1073741824 bytes)", or "N bytes" when
// small.
func humanBytes(n int64) string {
	s := formatSize(n)
	if strings.HasSuffix(s, " bytes") {
		return s
	}
	return fmt.Sprintf("%s (%d bytes)", s, n)
}
