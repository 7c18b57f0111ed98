// Command imageiod is the imageio transfer daemon: it serves disk images
// over HTTPS and a Unix socket under tickets added through its control
// service. See man/imageiod.8.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
