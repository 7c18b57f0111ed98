package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// kind says what a run of the sample image holds.
type kind int

const (
	data kind = iota // random bytes
	zero             // a qcow2 zero cluster (allocated, reads as zeros)
	hole             // unallocated
)

func (k kind) String() string {
	switch k {
	case data:
		return "data"
	case zero:
		return "zero"
	default:
		return "hole"
	}
}

// span is a range of the sample image.
type span struct {
	Off, Len int64
	Kind     kind
}

// mix says which share of the image is data and zero clusters; the rest is
// holes.
type mix struct {
	Data, Zero float64
}

var (
	// denseMix is the main image: about half data, a quarter zero
	// clusters and a quarter holes, as the reference measured.
	denseMix = mix{Data: 0.5, Zero: 0.25}
	// sparseMix is the large image with little data.
	sparseMix = mix{Data: 1.0 / 128, Zero: 1.0 / 128}
)

const (
	minRun     = 64 << 10
	maxRun     = 16 << 20
	runAlign   = 64 << 10
	fillBuffer = 4 << 20
)

// layout cuts [0, size) into runs of 64 KiB to 16 MiB (log-uniform, 64 KiB
// aligned) whose kinds are drawn with the shares of m. The same seed gives
// the same layout.
func layout(size int64, m mix, seed uint64) []span {
	rng := rand.New(rand.NewPCG(seed, 0x696d616765696f))
	var runs []span
	lo, hi := math.Log(minRun), math.Log(maxRun)
	for off := int64(0); off < size; {
		n := int64(math.Exp(lo+rng.Float64()*(hi-lo))) / runAlign * runAlign
		n = min(max(n, minRun), size-off)
		k := hole
		switch p := rng.Float64(); {
		case p < m.Data:
			k = data
		case p < m.Data+m.Zero:
			k = zero
		}
		if len(runs) > 0 && runs[len(runs)-1].Kind == k {
			runs[len(runs)-1].Len += n
		} else {
			runs = append(runs, span{Off: off, Len: n, Kind: k})
		}
		off += n
	}
	return runs
}

// totals sums the bytes of each kind.
func totals(runs []span) map[kind]int64 {
	t := map[kind]int64{}
	for _, r := range runs {
		t[r.Kind] += r.Len
	}
	return t
}

// dataSource returns the generator of the image's random bytes.
func dataSource(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "imageio bench data")
	return rand.NewChaCha8(key)
}

// buildImage makes a qcow2 image at path with the given layout, unless it
// is already there (a finished image is renamed into place, so one that
// exists is complete). The data runs go into a sparse raw file, which
// qemu-img converts to qcow2; qemu-io then writes the zero clusters in
// batches of commands.
func buildImage(ctx context.Context, path string, size int64, runs []span, seed uint64) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	raw, tmp := path+".raw.tmp", path+".tmp"
	defer os.Remove(raw)
	defer os.Remove(tmp)
	if err := writeRaw(raw, size, runs, seed); err != nil {
		return err
	}
	if err := command(ctx, "qemu-img", "convert", "-q", "-W", "-f", "raw", "-O", "qcow2", raw, tmp); err != nil {
		return err
	}
	if err := os.Remove(raw); err != nil {
		return err
	}
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		args := append([]string{"-f", "qcow2"}, batch...)
		batch = batch[:0]
		return command(ctx, "qemu-io", append(args, tmp)...)
	}
	for _, r := range runs {
		if r.Kind != zero {
			continue
		}
		batch = append(batch, "-c", fmt.Sprintf("write -z %d %d", r.Off, r.Len))
		if len(batch) >= 512 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeRaw writes the data runs of a sparse raw image.
func writeRaw(path string, size int64, runs []span, seed uint64) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("sizing %s: %w", path, err)
	}
	src := dataSource(seed)
	buf := make([]byte, fillBuffer)
	for _, r := range runs {
		if r.Kind != data {
			continue
		}
		for off := r.Off; off < r.End(); {
			p := buf[:min(int64(len(buf)), r.End()-off)]
			_, _ = src.Read(p) // never fails
			if _, err := f.WriteAt(p, off); err != nil {
				return fmt.Errorf("writing %s: %w", path, err)
			}
			off += int64(len(p))
		}
	}
	return nil
}

// End returns the offset just past the span.
func (r span) End() int64 { return r.Off + r.Len }

// imageStats describes an image as qemu-img map sees it.
type imageStats struct {
	Size, Data, Zero, Hole int64
}

// mapImage sums the extents of qemu-img map: data, zero clusters
// (allocated at depth 0 but reading as zeros) and holes (not allocated).
func mapImage(ctx context.Context, path string) (imageStats, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "map", "--output=json", path).Output()
	if err != nil {
		return imageStats{}, fmt.Errorf("mapping %s: %w", path, exitError(err))
	}
	var extents []struct {
		Start, Length int64
		Depth         int
		Zero, Data    bool
		Present       *bool
	}
	if err := json.Unmarshal(out, &extents); err != nil {
		return imageStats{}, fmt.Errorf("parsing qemu-img map of %s: %w", path, err)
	}
	var s imageStats
	for _, e := range extents {
		s.Size = max(s.Size, e.Start+e.Length)
		switch {
		case e.Data && !e.Zero:
			s.Data += e.Length
		case e.Present != nil && !*e.Present:
			s.Hole += e.Length
		default:
			s.Zero += e.Length
		}
	}
	return s, nil
}

// parseSize parses sizes like "4G", "512M", "64k" or a byte count.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := 0
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift != 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("parsing size %q: want a byte count with an optional K, M, G or T suffix", s)
	}
	return n << shift, nil
}

// formatSize is the short form parseSize reads back ("4G", "1536M").
func formatSize(n int64) string {
	for _, u := range []struct {
		shift int
		unit  string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.unit
		}
	}
	return strconv.FormatInt(n, 10)
}

// command runs a helper program, returning its stderr in the error.
func command(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if _, err := cmd.Output(); err != nil {
		return fmt.Errorf("running %s: %w", name, exitError(err))
	}
	return nil
}

// exitError adds the stderr kept by exec.Cmd.Output to an exit error.
func exitError(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(tail(string(ee.Stderr), 500)))
	}
	return err
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
