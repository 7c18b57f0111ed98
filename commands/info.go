package commands

import (
	"context"
	"io"

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
	return errNotImplemented
}
