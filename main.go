// Command imageio moves virtual disk images in and out of oVirt: info,
// measure and checksum of local images, and upload and download through an
// imageio transfer URL or the oVirt engine. See man/imageio.1.
package main

import (
	"context"
	"os"

	"github.com/imageio/imageio/commands"
)

func main() {
	ctx, stop := commands.SignalContext(context.Background())
	app := commands.App()
	err := app.RunContext(ctx, commands.Args(app, os.Args))
	stop()
	os.Exit(commands.Report(os.Stderr, err))
}
