// Package nbdlocal runs a private qemu-nbd that serves a local image (any
// format qemu reads, or a disk inside an OVA, read in place) on a Unix socket
// in a private temporary directory, for the NBD client to read and write.
//
// Start launches qemu-nbd much as the reference client does: an empty
// export name, --persistent, --shared=N, --cache=none when the file system
// takes O_DIRECT (else --cache=writeback), --aio=native for a read-only
// image with cache none and --aio=threads otherwise (the reference uses
// native for writable images too; see Server.args for why we do not),
// --discard=unmap and --detect-zeroes=unmap for writable exports,
// --allocation-depth for formats other than raw, and the image given as a
// format-less "json:" filename (so that "backing": null can open an image
// without its backing chain, and an OVA member is a raw node with an offset
// and size under the format driver). Start returns when the socket accepts
// connections.
//
// Stop sends SIGTERM, then SIGKILL after Config.StopTimeout, reaps the
// process and removes the directory. No process or directory is left behind
// when the context passed to Start is canceled (the server is stopped then),
// nor, on Linux, when the caller's process dies (qemu-nbd gets SIGTERM
// through the parent-death signal). qemu-nbd runs in its own process group,
// so a Ctrl-C on the terminal reaches only the caller, which then stops the
// server in order. (The reference client starts qemu-nbd with SIGINT
// blocked; Go cannot set a child's signal mask, and ignoring SIGINT does not
// help, as qemu-nbd installs its own SIGINT handler.)
//
// qemu-nbd runs with a fixed glibc malloc policy (mallocEnv): its request
// buffers come from the heap and are reused, instead of being mapped and
// unmapped for every request.
//
// The qemu-nbd binary is $QEMU_NBD, or "qemu-nbd" from $PATH.
package nbdlocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imageio/imageio/nbd"
	"github.com/imageio/imageio/qemuimg"
)

// Defaults for Config fields left zero.
const (
	DefaultShared       = 8
	DefaultStopTimeout  = 10 * time.Second
	DefaultStartTimeout = 30 * time.Second
)

// maxSocketPath is the size of sun_path in struct sockaddr_un on Linux.
const maxSocketPath = 108

// ErrExited is wrapped by Start's error when qemu-nbd exits before its
// socket accepts connections; the error holds qemu-nbd's standard error.
var ErrExited = errors.New("qemu-nbd exited")

// Config describes the image to serve.
type Config struct {
	Path     string // image file, or the OVA holding Member
	Format   string // qemu format; "" probes it with qemu-img info
	Member   string // disk inside the OVA at Path, served in place (it cannot grow)
	ReadOnly bool
	Shared   int    // clients allowed at once (--shared); 0 is DefaultShared
	Bitmap   string // dirty bitmap to export (--bitmap)
	// NoBacking opens the image without its backing chain ("backing":
	// null), so that unallocated ranges read as holes rather than as the
	// backing file's data.
	NoBacking bool
	// Cache is qemu-nbd's --cache mode; "" picks none when the file
	// system takes O_DIRECT, else writeback. aio is native for a
	// read-only image with cache none (or directsync), else threads.
	Cache string

	// StartTimeout bounds the wait for the socket; 0 is
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL; 0 is
	// DefaultStopTimeout.
	StopTimeout time.Duration
}

// Server is a running qemu-nbd.
type Server struct {
	dir    string
	sock   string
	format string
	cmd    *exec.Cmd
	stderr *tailBuffer
	stopAt time.Duration

	exited  chan struct{} // closed when the process has been reaped
	waitErr error         // the process's exit; set before exited is closed

	stopOnce sync.Once
	stopErr  error
}

// Binary returns the qemu-nbd command: $QEMU_NBD, or "qemu-nbd".
func Binary() string {
	if b := os.Getenv("QEMU_NBD"); b != "" {
		return b
	}
	return "qemu-nbd"
}

// Start starts qemu-nbd for cfg and waits until it serves. ctx bounds the
// server's whole life, not only the start: the server runs until Stop is
// called or ctx is done, whichever comes first.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Path == "" {
		return nil, errors.New("starting qemu-nbd: no image path")
	}
	if cfg.Shared < 0 {
		return nil, fmt.Errorf("starting qemu-nbd for %q: invalid shared count %d", cfg.Path, cfg.Shared)
	}
	if strings.ContainsAny(cfg.Bitmap, ",\x00") || strings.ContainsAny(cfg.Cache, ",= \x00") {
		return nil, fmt.Errorf("starting qemu-nbd for %q: invalid bitmap or cache name", cfg.Path)
	}
	src, err := qemuimg.SourceOf(ctx, cfg.Path, qemuimg.Options{Member: cfg.Member, Format: cfg.Format})
	if err != nil {
		return nil, fmt.Errorf("starting qemu-nbd: %w", err)
	}
	extra := map[string]any{}
	if cfg.NoBacking {
		extra["backing"] = nil
	}
	filename, err := src.JSON(extra)
	if err != nil {
		return nil, fmt.Errorf("starting qemu-nbd: %w", err)
	}

	dir, err := os.MkdirTemp("", "imageio-nbd-")
	if err != nil {
		return nil, fmt.Errorf("starting qemu-nbd: %w", err)
	}
	sock := filepath.Join(dir, "sock")
	if len(sock) >= maxSocketPath {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting qemu-nbd: socket path %q is too long (set TMPDIR to a shorter directory)", sock)
	}
	s := &Server{
		dir:    dir,
		sock:   sock,
		format: src.Format,
		stderr: &tailBuffer{max: 64 << 10},
		stopAt: cfg.StopTimeout,
		exited: make(chan struct{}),
	}
	if s.stopAt <= 0 {
		s.stopAt = DefaultStopTimeout
	}
	args := s.args(cfg, src.Format, filename)
	s.cmd = exec.Command(Binary(), args...)
	s.cmd.Env = mallocEnv(os.Environ())
	s.cmd.Stderr = s.stderr
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting qemu-nbd for %s: %w", describe(cfg), err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, cfg.StartTimeout); err != nil {
		stopErr := s.Stop()
		if errors.Is(err, ErrExited) {
			return nil, fmt.Errorf("starting qemu-nbd for %s: %w", describe(cfg), err)
		}
		return nil, fmt.Errorf("starting qemu-nbd for %s: %w", describe(cfg), errors.Join(err, stopErr))
	}
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-s.exited:
		}
	}()
	return s, nil
}

// mallocSettings keep qemu-nbd's request buffers (one per request, up to
// 32 MiB) on glibc's heap: above the default dynamic threshold, glibc maps
// each buffer and unmaps it when the request ends, so every request
// faults in, zeroes and charges fresh pages: about half of qemu-nbd's CPU
// time in a transfer. With these settings the pages are reused: a 4 GiB
// upload made 10 times fewer page faults, and with the disk out of the way
// (the daemon's target on tmpfs) uploads took 3.16 s instead of 3.58 s
// (means of 4 alternated runs; docs/pipeline.md). The heap keeps at most
// the buffers of the requests in flight.
var mallocSettings = []string{
	"MALLOC_MMAP_THRESHOLD_=33554432", // the largest glibc allows: 32 MiB
	"MALLOC_TRIM_THRESHOLD_=67108864",
}

// mallocEnv returns env with mallocSettings added, except those the
// caller's environment sets already (a user's own choice wins).
func mallocEnv(env []string) []string {
	out := slices.Clone(env)
	for _, kv := range mallocSettings {
		name := kv[:strings.IndexByte(kv, '=')+1]
		if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, name) }) {
			out = append(out, kv)
		}
	}
	return out
}

func describe(cfg Config) string {
	if cfg.Member != "" {
		return fmt.Sprintf("%q in %q", cfg.Member, cfg.Path)
	}
	return strconv.Quote(cfg.Path)
}

// args returns qemu-nbd's arguments.
func (s *Server) args(cfg Config, format, filename string) []string {
	shared := cfg.Shared
	if shared == 0 {
		shared = DefaultShared
	}
	args := []string{
		"--export-name=",
		"--persistent",
		"--shared=" + strconv.Itoa(shared),
		"--socket=" + s.sock,
	}
	if cfg.ReadOnly {
		args = append(args, "--read-only")
	}
	cache := cfg.Cache
	if cache == "" {
		cache = "writeback"
		if directIO(cfg.Path) {
			cache = "none"
		}
	}
	aio := "threads"
	if (cache == "none" || cache == "directsync") && cfg.ReadOnly {
		// aio native needs O_DIRECT. A writable image (a download's new,
		// growing file) keeps aio threads: with native, a write that
		// allocates blocks runs synchronously in io_submit, on qemu-nbd's
		// one I/O thread, and downloads took 4.19 s instead of 3.82 s
		// (4 GiB qcow2, means of 5 alternated runs).
		aio = "native"
	}
	args = append(args, "--cache="+cache, "--aio="+aio)
	if !cfg.ReadOnly {
		args = append(args, "--discard=unmap", "--detect-zeroes=unmap")
	}
	if format != "raw" {
		// Holes of the top layer are reported through the
		// qemu:allocation-depth meta context (qemu 6.2 misreports raw).
		args = append(args, "--allocation-depth")
	}
	if cfg.Bitmap != "" {
		args = append(args, "--bitmap="+cfg.Bitmap)
	}
	return append(args, filename)
}

// waitReady connects to the socket until an NBD handshake succeeds,
// qemu-nbd exits, ctx is done or the timeout passes. A connection alone
// proves nothing: qemu-nbd listens before it opens the image.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := nbd.Dial(dctx, s.Address(), nbd.Options{MetaContexts: []string{}})
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%w (%v): %s", ErrExited, s.waitErr, s.stderr.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("waiting for qemu-nbd to serve: timed out after %v: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// Address returns the address of the export.
func (s *Server) Address() nbd.Address {
	return nbd.Address{Network: "unix", Addr: s.sock, Export: ""}
}

// URL returns the address of the export as an NBD URL
// (nbd:unix:/path/sock).
func (s *Server) URL() string { return s.Address().URL() }

// Format returns the format of the image served.
func (s *Server) Format() string { return s.format }

// Stop stops qemu-nbd (SIGTERM, then SIGKILL after the stop timeout), reaps
// it and removes its directory. It is safe to call more than once and from
// several goroutines; every call returns the first call's result. The error
// reports a qemu-nbd that had failed on its own, or a directory that could
// not be removed.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	var errs []error
	select {
	case <-s.exited:
		// It exited on its own.
		if s.waitErr != nil {
			errs = append(errs, fmt.Errorf("qemu-nbd exited: %v: %s", s.waitErr, s.stderr.String()))
		}
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(s.stopAt)
		select {
		case <-s.exited:
			timer.Stop()
		case <-timer.C:
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing qemu-nbd directory: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("stopping qemu-nbd: %w", errors.Join(errs...))
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int

	// mu guards buf.
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	return len(p), nil
}

// String returns what was written, trimmed, without qemu-nbd's prefixes.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(b.buf)), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(strings.TrimSpace(l), "qemu-nbd: ")
	}
	return strings.Join(lines, "; ")
}
