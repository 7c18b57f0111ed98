package transfer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/imageio/imageio/backend"
	httpbackend "github.com/imageio/imageio/backend/http"
	nbdbackend "github.com/imageio/imageio/backend/nbd"
	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/nbdlocal"
	"github.com/imageio/imageio/qemuimg"
)

// Phases reported through Progress by Upload and Download.
const (
	PhaseInspecting  = "inspecting image"
	PhaseUploading   = "uploading"
	PhaseDownloading = "downloading"
	PhaseFlushing    = "flushing"
	PhaseVerifying   = "verifying"
)

// ErrVerifyMismatch is wrapped by *VerifyError.
var ErrVerifyMismatch = errors.New("checksum mismatch")

// VerifyError says that the checksums of the two ends differ after a copy.
type VerifyError struct {
	Algorithm     string
	Local, Remote string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("%v: local %s %s, remote %s", ErrVerifyMismatch, e.Algorithm, e.Local, e.Remote)
}

func (e *VerifyError) Unwrap() error { return ErrVerifyMismatch }

// Result describes a finished upload or download.
type Result struct {
	Stats Stats
	// Size is the number of bytes transferred: the image's virtual size
	// for an upload, the remote image's size for a download.
	Size int64
	// Checksum is the block checksum of both ends (blake2b, 4 MiB blocks)
	// when Verify was set.
	Checksum string
	// URL is the transfer URL used (after fallback to the proxy or the
	// Unix socket), with the ticket id redacted.
	URL string
}

// UploadOptions configure Upload.
type UploadOptions struct {
	Path   string // local image
	Member string // disk inside the OVA at Path
	Format string // qemu format of the image; "" probes it
	URL    string // transfer URL
	HTTP   httpbackend.Options
	// Workers (default 4, capped by the daemon's max_writers) and
	// BufferSize (default 4 MiB) as in Options.
	Workers, BufferSize int
	Progress            func(Progress)
	// DiskIsZero says the target disk reads as zeros, so zero extents
	// are not sent. Without it, Upload still skips the zero extents
	// that fall where the daemon's extents of the disk say it reads as
	// zeros (most of a new disk).
	DiskIsZero bool
	// Verify compares the block checksums of both ends after the copy.
	Verify bool
}

// Upload copies a local image (any format qemu reads, or an OVA member)
// to the daemon's transfer URL.
func Upload(ctx context.Context, o UploadOptions) (res Result, err error) {
	report(o.Progress, Progress{Phase: PhaseInspecting})
	// A missing file, an unknown OVA member or an unreadable image is
	// reported before the daemon is contacted.
	src, err := qemuimg.SourceOf(ctx, o.Path, qemuimg.Options{Member: o.Member, Format: o.Format})
	if err != nil {
		return res, err
	}
	// The local qemu-nbd starts while the daemon is asked for its
	// capabilities (the cap on workers only lowers its shared count).
	started := make(chan startedServer, 1)
	go func() {
		srv, err := nbdlocal.Start(ctx, nbdlocal.Config{
			Path: o.Path, Member: o.Member, Format: src.Format, ReadOnly: true,
			Shared: capWorkers(o.Workers, 0) + 1,
		})
		started <- startedServer{srv, err}
	}()
	remote, err := openRemote(ctx, o.URL, o.HTTP, o.BufferSize)
	local := <-started
	if err != nil {
		if local.srv != nil {
			local.srv.Stop()
		}
		return res, err
	}
	defer remote.Close()
	res.URL = remote.URL()
	workers := capWorkers(o.Workers, remote.Caps().MaxWriters)
	if local.err != nil {
		return res, local.err
	}
	srv := local.srv
	defer func() {
		if serr := srv.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	// A stream connection per worker: each PUT's body is relayed from
	// its own connection's replies.
	source, err := nbdbackend.Open(ctx, srv.URL(), nbdbackend.Options{ReadOnly: true, StreamConns: workers})
	if err != nil {
		return res, err
	}
	defer source.Close()
	res.Size = source.Size()

	res.Stats, err = Copy(ctx, remote, source, Options{
		Workers:    workers,
		BufferSize: o.BufferSize,
		Progress:   o.Progress,
		Phase:      PhaseUploading,
		ZeroTarget: o.DiskIsZero,
		// Zeros need not be sent where the disk reads as zeros already.
		TargetZeros: targetZeros(ctx, remote),
		SourceDone:  releaseSource(o.Verify, source, srv),
	})
	if err != nil {
		return res, fmt.Errorf("uploading %q: %w", o.Path, err)
	}
	if o.Verify {
		res.Checksum, err = verify(ctx, source, remote, o.Progress)
	}
	return res, err
}

// startedServer is the outcome of starting a local qemu-nbd.
type startedServer struct {
	srv *nbdlocal.Server
	err error
}

// releaseSource returns the Copy.SourceDone of an upload: unless the
// source is needed again to verify, its connection is closed and its
// qemu-nbd stopped while the daemon flushes (qemu-nbd's exit takes tens
// of milliseconds). The caller's deferred Stop waits for that stop.
func releaseSource(verify bool, source *nbdbackend.Backend, srv *nbdlocal.Server) func() {
	if verify {
		return nil
	}
	return func() {
		source.Close()
		go srv.Stop()
	}
}

// DownloadOptions configure Download.
type DownloadOptions struct {
	URL  string // transfer URL
	HTTP httpbackend.Options
	// Path is the new local image; it must not exist.
	Path string
	// Format is "qcow2" (default) or "raw".
	Format string
	// BackingFile and BackingFormat make the new image an overlay (qcow2)
	// that reads, through its backing file, as the remote image: zero
	// extents and holes are zeroed (locally, never fetched), since the
	// backing file may hold data there. The backing file is checked
	// (CheckBackingFile) before the daemon is contacted; a relative one is
	// relative to the directory of Path, as with qemu-img create.
	// BackingFormat "" probes it.
	BackingFile, BackingFormat string
	// HolesToBacking leaves the remote's holes to the backing file instead
	// of zeroing them. It is for a remote image that is one layer served
	// without its backing chain (a snapshot's shallow transfer), whose
	// holes are the ranges its parent holds, when BackingFile is a copy
	// of that parent: then only the layer's own ranges are written. For
	// a whole disk it would be wrong, as holes there read as zeros.
	HolesToBacking bool
	// Workers (default 4, capped by the daemon's max_readers) and
	// BufferSize (default 4 MiB) as in Options.
	Workers, BufferSize int
	Progress            func(Progress)
	// KeepPartial keeps the image when the download fails or is canceled.
	KeepPartial bool
	// Verify compares the block checksums of both ends after the copy.
	// The new image is read through its backing chain; with
	// HolesToBacking, the remote's holes (which it reads as zeros) are
	// compared as zeros.
	Verify bool
	// Incremental copies only the dirty extents (a backup from a
	// checkpoint), usually into an overlay of the previous backup.
	Incremental bool
}

// Download copies the daemon's image at the transfer URL to a new local
// image made with qemu-img create. On failure or cancel the new image is
// removed unless KeepPartial.
func Download(ctx context.Context, o DownloadOptions) (res Result, err error) {
	format := o.Format
	if format == "" {
		format = "qcow2"
	}
	if format != "qcow2" && format != "raw" {
		return res, fmt.Errorf("downloading to %q: unsupported format %q (want qcow2 or raw)", o.Path, format)
	}
	if _, err := os.Lstat(o.Path); err == nil {
		return res, fmt.Errorf("downloading to %q: %w", o.Path, fs.ErrExist)
	}
	if o.HolesToBacking && (o.BackingFile == "" || o.Incremental) {
		return res, fmt.Errorf("downloading to %q: leaving holes to the backing file needs a backing file and a full download", o.Path)
	}
	backingFormat := o.BackingFormat
	if o.BackingFile != "" {
		// A backing file that cannot be opened is reported before the
		// daemon is contacted.
		if format != "qcow2" {
			return res, fmt.Errorf("downloading to %q: a backing file needs format qcow2, not %q", o.Path, format)
		}
		var err error
		if backingFormat, err = CheckBackingFile(ctx, o.Path, o.BackingFile, o.BackingFormat); err != nil {
			return res, fmt.Errorf("downloading to %q: %w", o.Path, err)
		}
	}
	remote, err := openRemote(ctx, o.URL, o.HTTP, o.BufferSize)
	if err != nil {
		return res, err
	}
	defer remote.Close()
	res.URL = remote.URL()
	res.Size = remote.Size()
	workers := capWorkers(o.Workers, remote.Caps().MaxReaders)

	defer func() {
		if err != nil && !o.KeepPartial {
			os.Remove(o.Path)
		}
	}()
	if err := qemuimg.Create(ctx, o.Path, qemuimg.CreateOptions{
		Format: format, Size: res.Size, BackingFile: o.BackingFile, BackingFormat: backingFormat,
	}); err != nil {
		return res, err
	}
	srv, err := nbdlocal.Start(ctx, nbdlocal.Config{Path: o.Path, Format: format, Shared: workers + 1})
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := srv.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	// One stream connection per worker: GET bodies go to the image as
	// large NBD writes (see streamDownload).
	local, err := nbdbackend.Open(ctx, srv.URL(), nbdbackend.Options{Sparse: true, StreamConns: workers})
	if err != nil {
		return res, err
	}
	defer local.Close()
	// qcow2 rounds the size up to 512 bytes; copy and compare the
	// remote's size only.
	target := resize(local, res.Size)

	res.Stats, err = Copy(ctx, target, remote, Options{
		Workers:    workers,
		BufferSize: o.BufferSize,
		Progress:   o.Progress,
		Phase:      PhaseDownloading,
		// A new image reads as zeros, unless it has a backing file.
		ZeroTarget: o.BackingFile == "",
		SkipHoles:  o.HolesToBacking,
		Dirty:      o.Incremental,
	})
	if err != nil {
		return res, fmt.Errorf("downloading to %q: %w", o.Path, err)
	}
	if o.Verify {
		local := target
		if o.HolesToBacking {
			// Holes were left to the backing file, and the remote reads
			// them as zeros: compare the rest.
			local, err = maskHoles(ctx, target, remote)
			if err != nil {
				return res, err
			}
		}
		res.Checksum, err = verify(ctx, local, remote, o.Progress)
	}
	return res, err
}

// CheckBackingFile checks that the backing file of a new image at path can
// be opened, and returns its format (format, or the probed one when format
// is ""). As with qemu-img create, a relative backing file is relative to
// the directory of path, not to the working directory.
func CheckBackingFile(ctx context.Context, path, backing, format string) (string, error) {
	full := backing
	where := ""
	if !filepath.IsAbs(backing) {
		full = filepath.Join(filepath.Dir(path), backing)
		if full != filepath.Clean(backing) {
			where = fmt.Sprintf(" (%q: a relative backing file is relative to the directory of the new image)", full)
		}
	}
	info, err := qemuimg.Info(ctx, full, qemuimg.Options{Format: format})
	if err != nil {
		return "", fmt.Errorf("opening backing file %q%s: %w", backing, where, err)
	}
	return info.Format, nil
}

func openRemote(ctx context.Context, url string, opts httpbackend.Options, bufferSize int) (*httpbackend.Backend, error) {
	if opts.BufferSize == 0 && bufferSize > 0 {
		opts.BufferSize = min(bufferSize, MaxBufferSize)
	}
	return httpbackend.Open(ctx, url, opts)
}

// targetZeros returns the extents of the remote image read when it was
// opened, or nil when the daemon has none.
func targetZeros(ctx context.Context, remote backend.Backend) []backend.Extent {
	ext, err := remote.Extents(ctx, backend.ContextZero)
	if err != nil {
		return nil
	}
	return ext
}

func capWorkers(workers, limit int) int {
	if workers <= 0 {
		workers = DefaultWorkers
	}
	if limit > 0 {
		workers = min(workers, limit)
	}
	return workers
}

func report(progress func(Progress), p Progress) {
	if progress != nil {
		progress(p)
	}
}

// verify computes the block checksum of local (as large as remote) and asks
// the daemon for remote's.
func verify(ctx context.Context, local backend.Backend, remote *httpbackend.Backend, progress func(Progress)) (string, error) {
	size := remote.Size()
	report(progress, Progress{Phase: PhaseVerifying, Total: size})
	var done int64
	opts := checksum.Options{}
	if progress != nil {
		// checksum calls Progress from several workers.
		var mu sync.Mutex
		opts.Progress = func(n int64) {
			mu.Lock()
			defer mu.Unlock()
			done += n
			progress(Progress{Phase: PhaseVerifying, Done: done, Total: size})
		}
	}
	sum, err := checksum.ComputeWithOptions(ctx, resize(local, size), opts)
	if err != nil {
		return "", fmt.Errorf("computing local checksum: %w", err)
	}
	remoteSum, err := remote.Checksum(ctx, sum.Algorithm, sum.BlockSize)
	if err != nil {
		return "", err
	}
	if remoteSum != sum.Checksum {
		return "", &VerifyError{Algorithm: sum.Algorithm, Local: sum.Checksum, Remote: remoteSum}
	}
	return sum.Checksum, nil
}

// resized shows a backend as size bytes: cut short, or extended with zeros
// (a hole) that cannot be written.
type resized struct {
	backend.Backend
	size int64
}

func resize(b backend.Backend, size int64) backend.Backend {
	if b.Size() == size {
		return b
	}
	return &resized{Backend: b, size: size}
}

func (r *resized) Size() int64 { return r.size }

func (r *resized) check(off, length int64) error {
	if off < 0 || length < 0 || off > r.size-length {
		return fmt.Errorf("range %d+%d of %d bytes: %w", off, length, r.size, backend.ErrOutOfRange)
	}
	return nil
}

func (r *resized) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := r.check(off, int64(len(p))); err != nil {
		return err
	}
	inner := max(0, min(int64(len(p)), r.Backend.Size()-off))
	if inner > 0 {
		if err := r.Backend.ReadAt(ctx, p[:inner], off); err != nil {
			return err
		}
	}
	clear(p[inner:])
	return nil
}

func (r *resized) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := r.check(off, int64(len(p))); err != nil {
		return err
	}
	return r.Backend.WriteAt(ctx, p, off)
}

func (r *resized) Zero(ctx context.Context, off, length int64, punch bool) error {
	if err := r.check(off, length); err != nil {
		return err
	}
	return r.Backend.Zero(ctx, off, length, punch)
}

func (r *resized) Extents(ctx context.Context, name string) ([]backend.Extent, error) {
	ext, err := r.Backend.Extents(ctx, name)
	if err != nil {
		return nil, err
	}
	out := ext[:0:0]
	var end int64
	for _, e := range ext {
		if e.Start >= r.size {
			break
		}
		e.Length = min(e.End(), r.size) - e.Start
		out = append(out, e)
		end = e.End()
	}
	if end < r.size {
		tail := backend.Extent{Start: end, Length: r.size - end, Zero: true, Hole: name == backend.ContextZero}
		if n := len(out); n > 0 && out[n-1].Zero == tail.Zero && out[n-1].Hole == tail.Hole && !out[n-1].Dirty {
			out[n-1].Length += tail.Length
		} else {
			out = append(out, tail)
		}
	}
	return out, nil
}

// maskHoles shows b with the holes of remote's zero extents reading as
// zeros.
func maskHoles(ctx context.Context, b backend.Backend, remote backend.Backend) (backend.Backend, error) {
	ext, err := remote.Extents(ctx, backend.ContextZero)
	if errors.Is(err, backend.ErrNotSupported) {
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading remote extents for verify: %w", err)
	}
	var holes []backend.Extent
	for _, e := range ext {
		if e.Hole {
			holes = append(holes, e)
		}
	}
	if len(holes) == 0 {
		return b, nil
	}
	return &masked{Backend: b, holes: zeroRanges(holes)}, nil
}

// masked is a read-only view of a backend whose holes read as zeros.
type masked struct {
	backend.Backend
	holes []zeroRange // sorted, merged
}

func (m *masked) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := m.Backend.ReadAt(ctx, p, off); err != nil {
		return err
	}
	end := off + int64(len(p))
	i := sort.Search(len(m.holes), func(i int) bool { return m.holes[i].end > off })
	for ; i < len(m.holes) && m.holes[i].start < end; i++ {
		h := m.holes[i]
		clear(p[max(h.start, off)-off : min(h.end, end)-off])
	}
	return nil
}

func (m *masked) WriteAt(context.Context, []byte, int64) error {
	return fmt.Errorf("writing a masked view: %w", backend.ErrReadOnly)
}

func (m *masked) Zero(context.Context, int64, int64, bool) error {
	return fmt.Errorf("zeroing a masked view: %w", backend.ErrReadOnly)
}

// Extents returns b's extents with the holes marked zero (and hole in the
// zero context).
func (m *masked) Extents(ctx context.Context, name string) ([]backend.Extent, error) {
	ext, err := m.Backend.Extents(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []backend.Extent
	add := func(e backend.Extent) {
		if e.Length <= 0 {
			return
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.End() == e.Start && last.Zero == e.Zero && last.Hole == e.Hole && last.Dirty == e.Dirty {
				last.Length += e.Length
				return
			}
		}
		out = append(out, e)
	}
	i := 0
	for _, e := range ext {
		pos, end := e.Start, e.End()
		for i < len(m.holes) && m.holes[i].end <= pos {
			i++
		}
		for j := i; j < len(m.holes) && m.holes[j].start < end && pos < end; j++ {
			h := m.holes[j]
			if h.start > pos {
				add(backend.Extent{Start: pos, Length: h.start - pos, Zero: e.Zero, Hole: e.Hole, Dirty: e.Dirty})
				pos = h.start
			}
			n := min(h.end, end) - pos
			add(backend.Extent{Start: pos, Length: n, Zero: true, Hole: name == backend.ContextZero, Dirty: e.Dirty})
			pos += n
		}
		add(backend.Extent{Start: pos, Length: end - pos, Zero: e.Zero, Hole: e.Hole, Dirty: e.Dirty})
	}
	return out, nil
}
