package testutil

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// RunKind says what a run of a sample image holds.
type RunKind int

// Kinds of runs in a sample image.
const (
	Data RunKind = iota // random bytes
	Zero                // allocated zeros (a qcow2 zero cluster; explicit zero bytes in raw)
	Hole                // unallocated
)

// Run is a range of a sample image.
type Run struct {
	Off, Len int64
	Kind     RunKind
}

// MakeImage creates an image of the given qemu format and size at path with
// the runs described (everything else is a hole) and returns the path of a
// raw copy of its content for byte comparisons. Data comes from a seeded
// generator, so the same call makes the same image.
func MakeImage(t testing.TB, path, format string, size int64, runs []Run, seed uint64) string {
	t.Helper()
	Need(t, "qemu-img", "qemu-io")
	raw := path + ".content.raw"
	if format == "raw" {
		raw = path
	}
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for _, r := range runs {
		buf := make([]byte, r.Len)
		if r.Kind == Data {
			for i := 0; i+8 <= len(buf); i += 8 {
				v := rng.Uint64()
				for j := 0; j < 8; j++ {
					buf[i+j] = byte(v >> (8 * j))
				}
			}
			for i := len(buf) &^ 7; i < len(buf); i++ {
				buf[i] = byte(rng.Uint32())
			}
		} else if r.Kind == Hole || format != "raw" {
			continue
		}
		if _, err := f.WriteAt(buf, r.Off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if format == "raw" {
		return raw
	}
	RunCommand(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", format, raw, path)
	for _, r := range runs {
		if r.Kind == Zero {
			RunCommand(t, "qemu-io", "-f", format, "-c",
				"write -z "+strconv.FormatInt(r.Off, 10)+" "+strconv.FormatInt(r.Len, 10), path)
		}
	}
	return raw
}

// TempImagePath returns a path for an image named name in a test temp dir.
func TempImagePath(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(t.TempDir(), name)
}
