package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
)

// scenario is one contender: a way of copying the source image.
type scenario struct {
	Name string
	// Needs lists programs on PATH, or "bin/NAME" for the project's own.
	Needs []string
	// Run copies the image once, measures it and verifies the copy.
	Run func(ctx context.Context, e *runEnv) error
	// Daemon marks scenarios through imageiod; HTTPS those over TLS.
	Daemon, HTTPS bool
}

// Names of the scenarios; the report refers to them.
const (
	scConvert     = "qemu-img convert"
	scConvertNBD  = "qemu-img convert -> qemu-nbd"
	scNBDCopy     = "nbdcopy"
	scNBDClient   = "imageio NBD client copy"
	scUploadTLS   = "imageio upload HTTPS"
	scUploadUnix  = "imageio upload unix socket"
	scDownloadTLS = "imageio download HTTPS"
	scDownUnix    = "imageio download unix socket"
)

var imageioBins = []string{"bin/imageio", "bin/imageiod", "bin/imageioctl"}

// scenarios run in this order in every round, so that slow drifts of the
// machine touch all of them alike.
var scenarios = []scenario{
	{Name: scConvert, Needs: []string{"qemu-img"}, Run: runConvert},
	{Name: scConvertNBD, Needs: []string{"qemu-img", "qemu-nbd"}, Run: runConvertNBD},
	{Name: scNBDCopy, Needs: []string{"nbdcopy", "qemu-nbd"}, Run: func(ctx context.Context, e *runEnv) error {
		return runNBDToNBD(ctx, e, func(src, dst string) []string { return []string{"nbdcopy", src, dst} })
	}},
	{Name: scNBDClient, Needs: []string{"qemu-nbd"}, Run: func(ctx context.Context, e *runEnv) error {
		return runNBDToNBD(ctx, e, func(src, dst string) []string { return []string{e.h.self, "copy", src, dst} })
	}},
	{Name: scUploadTLS, Needs: imageioBins, Daemon: true, HTTPS: true, Run: func(ctx context.Context, e *runEnv) error {
		return runUpload(ctx, e, false)
	}},
	{Name: scUploadUnix, Needs: imageioBins, Daemon: true, Run: func(ctx context.Context, e *runEnv) error {
		return runUpload(ctx, e, true)
	}},
	{Name: scDownloadTLS, Needs: imageioBins, Daemon: true, HTTPS: true, Run: func(ctx context.Context, e *runEnv) error {
		return runDownload(ctx, e, false)
	}},
	{Name: scDownUnix, Needs: imageioBins, Daemon: true, Run: func(ctx context.Context, e *runEnv) error {
		return runDownload(ctx, e, true)
	}},
}

// runConvert is the disk-bound floor: qemu-img convert with O_DIRECT on
// both sides into a new qcow2.
func runConvert(ctx context.Context, e *runEnv) error {
	dst := e.file("convert.qcow2")
	if err := e.measureClient(ctx, "qemu-img", "convert", "-T", "none", "-t", "none",
		"-f", "qcow2", "-O", "qcow2", e.im.Path, dst); err != nil {
		return err
	}
	return e.verify(ctx, dst)
}

// runConvertNBD is qemu-img convert into a qcow2 served by qemu-nbd, the
// target path the NBD contenders use.
func runConvertNBD(ctx context.Context, e *runEnv) error {
	dst, err := e.createTarget(ctx)
	if err != nil {
		return err
	}
	srv, url, err := e.qemuNBD(ctx, dst, false)
	if err != nil {
		return err
	}
	cpu, err := startCPU(srv)
	if err != nil {
		return err
	}
	if err := e.measureClient(ctx, "qemu-img", "convert", "-n", "-T", "none",
		"-f", "qcow2", "-O", "raw", e.im.Path, url); err != nil {
		return err
	}
	if e.res.ServerCPU, err = cpu.stop(); err != nil {
		return err
	}
	if err := srv.Stop(); err != nil {
		return err
	}
	return e.verify(ctx, dst)
}

// runNBDToNBD copies between two qemu-nbd servers with the client argv
// returns.
func runNBDToNBD(ctx context.Context, e *runEnv, argv func(src, dst string) []string) error {
	dst, err := e.createTarget(ctx)
	if err != nil {
		return err
	}
	srcSrv, srcURL, err := e.qemuNBD(ctx, e.im.Path, true)
	if err != nil {
		return err
	}
	dstSrv, dstURL, err := e.qemuNBD(ctx, dst, false)
	if err != nil {
		return err
	}
	cpu, err := startCPU(srcSrv, dstSrv)
	if err != nil {
		return err
	}
	if err := e.measureClient(ctx, argv(srcURL, dstURL)...); err != nil {
		return err
	}
	if e.res.ServerCPU, err = cpu.stop(); err != nil {
		return err
	}
	if err := errors.Join(dstSrv.Stop(), srcSrv.Stop()); err != nil {
		return err
	}
	return e.verify(ctx, dst)
}

// runUpload uploads the image with imageio to a new qcow2 served by
// qemu-nbd through imageiod; local enables the daemon's Unix socket
// service, which the client then uses instead of HTTPS.
func runUpload(ctx context.Context, e *runEnv, local bool) error {
	dst, err := e.createTarget(ctx)
	if err != nil {
		return err
	}
	nbdSrv, url, err := e.qemuNBD(ctx, dst, false)
	if err != nil {
		return err
	}
	return e.throughDaemon(ctx, local, nbdSrv, url, "write", dst, func(transferURL string) []string {
		return []string{filepath.Join(e.h.bin, "imageio"), "upload", e.im.Path,
			"--transfer-url", transferURL, "--cafile", e.h.tls.CAFile}
	})
}

// runDownload downloads the image served by qemu-nbd through imageiod into
// a new qcow2 with imageio.
func runDownload(ctx context.Context, e *runEnv, local bool) error {
	nbdSrv, url, err := e.qemuNBD(ctx, e.im.Path, true)
	if err != nil {
		return err
	}
	dst := e.file("download.qcow2")
	return e.throughDaemon(ctx, local, nbdSrv, url, "read", dst, func(transferURL string) []string {
		return []string{filepath.Join(e.h.bin, "imageio"), "download", transferURL, dst,
			"--format", "qcow2", "--cafile", e.h.tls.CAFile}
	})
}

// throughDaemon starts imageiod, adds a ticket for the NBD URL, runs the
// client and measures the daemon and qemu-nbd alongside, then stops them
// and verifies dst.
func (e *runEnv) throughDaemon(ctx context.Context, local bool, nbdSrv *server, nbdURL, op, dst string, client func(transferURL string) []string) error {
	d, err := e.startDaemon(ctx, local)
	if err != nil {
		return err
	}
	ticketURL, err := nbdUnixURL(nbdURL)
	if err != nil {
		return err
	}
	transferURL, err := e.addTicket(ctx, d, ticketURL, e.im.Stats.Size, op)
	if err != nil {
		return err
	}
	daemonCPU, err := startCPU(d.srv)
	if err != nil {
		return err
	}
	serverCPU, err := startCPU(nbdSrv)
	if err != nil {
		return err
	}
	if err := e.measureClient(ctx, client(transferURL)...); err != nil {
		return err
	}
	if e.res.DaemonCPU, err = daemonCPU.stop(); err != nil {
		return err
	}
	if e.res.DaemonRSS, err = d.srv.PeakRSS(); err != nil {
		return fmt.Errorf("reading peak RSS of imageiod: %w", err)
	}
	if e.res.ServerCPU, err = serverCPU.stop(); err != nil {
		return err
	}
	if err := errors.Join(d.srv.Stop(), nbdSrv.Stop()); err != nil {
		return err
	}
	return e.verify(ctx, dst)
}
