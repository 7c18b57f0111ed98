package commands

import (
	"context"
	"fmt"
	"io"

	"github.com/imageio/imageio/qemuimg"

	"github.com/urfave/cli/v2"
)

// measureOptions are the flags of imageio measure.
type measureOptions struct {
	Format string
	Member string
	JSON   bool
	Debug  bool
}

func measureCommand(g *globalOptions) *cli.Command {
	opts := &measureOptions{}
	return &cli.Command{
		Name:      "measure",
		Usage:     "tell how much space a local image needs once converted to FORMAT",
		ArgsUsage: "FILE",
		Description: "Prints the qemu-img measure result: the space needed on storage for the\n" +
			"image converted to --format (required) and, for a full allocation, the\n" +
			"space with every cluster allocated.",
		OnUsageError: onUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Usage: "target `FORMAT`: raw or qcow2 (required)", Destination: &opts.Format},
			&cli.StringFlag{Name: "member", Usage: "measure the disk `NAME` inside the OVA FILE", Destination: &opts.Member},
			&cli.BoolFlag{Name: "json", DisableDefaultText: true, Usage: "print the qemu-img measure JSON object", Destination: &opts.JSON},
		},
		Action: action(func(c *cli.Context) error {
			opts.Debug = g.Debug
			return runMeasure(c.Context, *opts, c.Args().Slice(), c.App.Writer, c.App.ErrWriter)
		}),
	}
}

// runMeasure runs imageio measure.
func runMeasure(ctx context.Context, opts measureOptions, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return usageErrorf("measure: want one FILE, got %d arguments", len(args))
	}
	if err := checkFormat("--format", opts.Format, false); err != nil {
		return err
	}
	m, err := qemuimg.Measure(ctx, args[0], opts.Format, qemuimg.Options{Member: opts.Member})
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeRawJSON(stdout, m.JSON)
	}
	_, err = fmt.Fprintf(stdout, "required size:         %s\nfully allocated size:  %s\n", humanBytes(m.Required), humanBytes(m.FullyAllocated))
	if err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// checkFormat validates a disk format flag: raw or qcow2 ("" only when
// optional).
func checkFormat(flag, v string, optional bool) error {
	switch {
	case v == "raw" || v == "qcow2":
		return nil
	case v == "" && optional:
		return nil
	case v == "":
		return usageErrorf("%s is required: raw or qcow2", flag)
	default:
		return usageErrorf("%s %q: want raw or qcow2", flag, v)
	}
}
