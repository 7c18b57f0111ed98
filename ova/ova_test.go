package ova

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// entry is a file to put into a test archive.
type entry struct {
	name string
	data []byte
}

// testEntries returns files with short and long names and sizes that are
// and are not multiples of the block size.
func testEntries() []entry {
	long := strings.Repeat("d", 60) + "/" + strings.Repeat("e", 70) + "/disk-with-a-long-name.qcow2"
	return []entry{
		{"vm.ovf", []byte("<Envelope/>\n")},
		{"empty", nil},
		{long, pattern(1, 3000)},
		{"disk1.raw", pattern(2, 4096)},
	}
}

func pattern(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// makeTar builds an archive with archive/tar in the given format.
func makeTar(t testing.TB, format tar.Format, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name:     e.name,
			Mode:     0o644,
			Size:     int64(len(e.data)),
			Typeflag: tar.TypeReg,
			ModTime:  time.Unix(1700000000, 0),
			Format:   format,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("writing header of %q: %v", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkMembers checks that List finds the entries by name and that the
// bytes at each member's offset are the entry's data.
func checkMembers(t *testing.T, path string, entries []entry) {
	t.Helper()
	got, err := List(path)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var gotNames, wantNames []string
	for _, m := range got {
		gotNames = append(gotNames, m.Name)
	}
	for _, e := range entries {
		wantNames = append(wantNames, e.name)
	}
	if diff := cmp.Diff(wantNames, gotNames); diff != "" {
		t.Fatalf("List names (-want +got):\n%s", diff)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, e := range entries {
		m, err := Find(path, e.name)
		if err != nil {
			t.Fatalf("Find(%q): %v", e.name, err)
		}
		if m.Size != int64(len(e.data)) {
			t.Errorf("%q: size %d, want %d", e.name, m.Size, len(e.data))
		}
		if m.Offset%blockSize != 0 {
			t.Errorf("%q: offset %d is not block aligned", e.name, m.Offset)
		}
		buf := make([]byte, m.Size)
		if _, err := f.ReadAt(buf, m.Offset); err != nil {
			t.Fatalf("reading %q at %d: %v", e.name, m.Offset, err)
		}
		if !bytes.Equal(buf, e.data) {
			t.Errorf("%q: data at offset %d differs from the member's content", e.name, m.Offset)
		}
	}
}

func TestGoTar(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format tar.Format
	}{
		{"ustar", tar.FormatUSTAR}, // the long name is split into prefix and name
		{"gnu", tar.FormatGNU},     // the long name is in an 'L' entry
		{"pax", tar.FormatPAX},     // the long name is a PAX path record
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := testEntries()
			data := makeTar(t, tc.format, entries)
			checkMembers(t, writeFile(t, "a.ova", data), entries)
		})
	}
}

func TestGNULongNames(t *testing.T) {
	// A name longer than ustar can hold (no '/' to split at).
	entries := []entry{{strings.Repeat("x", 300) + ".vmdk", pattern(3, 700)}, {"b", []byte("b")}}
	data := makeTar(t, tar.FormatGNU, entries)
	if !bytes.Contains(data, []byte("././@LongLink")) {
		t.Fatal("archive/tar wrote no GNU long name entry")
	}
	checkMembers(t, writeFile(t, "a.ova", data), entries)
}

func TestPAXLongNames(t *testing.T) {
	entries := []entry{{strings.Repeat("y", 300) + ".qcow2", pattern(4, 513)}, {"ü-名前.ovf", []byte("x")}}
	data := makeTar(t, tar.FormatPAX, entries)
	checkMembers(t, writeFile(t, "a.ova", data), entries)
}

func TestPAXGlobalAndSize(t *testing.T) {
	// A global header, then a file whose PAX size record overrides the
	// header's size field, then an 'x' record that empties a global key.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "global", PAXRecords: map[string]string{"comment": "hi"}}))
	must(tw.WriteHeader(&tar.Header{Name: "a", Size: 3, Mode: 0o644, Format: tar.FormatPAX, PAXRecords: map[string]string{"comment": "x"}}))
	_, err := tw.Write([]byte("abc"))
	must(err)
	must(tw.Close())
	checkMembers(t, writeFile(t, "a.ova", buf.Bytes()), []entry{{"a", []byte("abc")}})

	// Hand-made: a PAX size larger than the header's size field.
	data := append(paxEntry(t, "x", "size=1000\npath=big\n"), fileHeader(t, "small", 0, '0')...)
	data = append(data, pattern(5, 1024)...)
	data = append(data, make([]byte, 1024)...)
	ms, err := Index(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Member{{Name: "big", Offset: 1024 + 512, Size: 1000}}
	if diff := cmp.Diff(want, ms); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}

	// A global path applies to the next files until another global
	// header empties it.
	data = paxEntry(t, "g", "path=g\n")
	data = append(data, fileHeader(t, "one", 0, '0')...)
	data = append(data, paxEntry(t, "g", "path=\n")...)
	data = append(data, fileHeader(t, "two", 0, '0')...)
	data = append(data, make([]byte, 1024)...)
	ms, err = Index(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	want = []Member{{Name: "g", Offset: 1024 + 512, Size: 0}, {Name: "two", Offset: 5*512 + 512, Size: 0}}
	if diff := cmp.Diff(want, ms); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
}

// paxEntry makes a PAX extended header entry of type typ holding records.
func paxEntry(t testing.TB, typ string, records string) []byte {
	t.Helper()
	var data []byte
	for _, line := range strings.SplitAfter(records, "\n") {
		if line == "" {
			continue
		}
		// The length counts itself; find the fixed point.
		n := len(line) + 2
		for len(fmt.Sprint(n))+1+len(line) != n {
			n = len(fmt.Sprint(n)) + 1 + len(line)
		}
		data = append(data, fmt.Sprintf("%d %s", n, line)...)
	}
	h := fileHeader(t, "PaxHeader", int64(len(data)), typ[0])
	pad := make([]byte, roundUp(int64(len(data)))-int64(len(data)))
	return append(append(h, data...), pad...)
}

// fileHeader makes a ustar header block.
func fileHeader(t testing.TB, name string, size int64, typ byte) []byte {
	t.Helper()
	h := make([]byte, blockSize)
	copy(h, name)
	copy(h[100:], "0000644\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", size))
	copy(h[136:], "00000000000\x00")
	h[156] = typ
	copy(h[257:], "ustar\x0000")
	setChecksum(h)
	return h
}

func setChecksum(h []byte) {
	copy(h[148:156], "        ")
	var sum int64
	for _, b := range h {
		sum += int64(b)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func TestBase256Size(t *testing.T) {
	// A member of 9 GiB, whose size only fits in base-256; the archive is
	// a sparse file.
	const size = 9 << 30
	h := fileHeader(t, "huge.raw", 0, '0')
	field := h[124:136]
	for i := range field {
		field[i] = 0
	}
	field[0] = 0x80
	for i, v := len(field)-1, int64(size); i > 0; i, v = i-1, v>>8 {
		field[i] = byte(v)
	}
	setChecksum(h)
	p := writeFile(t, "huge.ova", h)
	if err := os.Truncate(p, blockSize+size+1024); err != nil {
		t.Fatal(err)
	}
	m, err := Find(p, "huge.raw")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Member{Name: "huge.raw", Offset: blockSize, Size: size}); m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	// The same archive cut short: the member goes past the end.
	if err := os.Truncate(p, blockSize+size-1); err != nil {
		t.Fatal(err)
	}
	if _, err := List(p); !errors.Is(err, ErrTruncated) {
		t.Errorf("got %v, want ErrTruncated", err)
	}
}

func TestParseNumber(t *testing.T) {
	for _, tc := range []struct {
		name  string
		field []byte
		want  int64
		ok    bool
	}{
		{"octal", []byte("00000001750\x00"), 1000, true},
		{"spaces", []byte("   1750 \x00\x00\x00\x00"), 1000, true},
		{"empty", []byte("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), 0, true},
		{"base-256", []byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe8}, 1000, true},
		{"base-256 large", []byte{0x80, 0, 0, 0, 0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1<<62 - 1, true},
		{"base-256 too large", []byte{0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, false},
		{"base-256 negative", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, false},
		{"not octal", []byte("00000001790\x00"), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNumber(tc.field)
			if (err == nil) != tc.ok {
				t.Fatalf("error %v, want ok=%v", err, tc.ok)
			}
			if got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestTarCommand checks archives written by GNU tar in each format.
func TestTarCommand(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar is not installed")
	}
	src := t.TempDir()
	entries := []entry{
		{"vm.ovf", []byte("<Envelope/>\n")},
		{"images/" + strings.Repeat("n", 90) + "/" + strings.Repeat("m", 80) + ".qcow2", pattern(6, 70000)},
		{"disk.raw", pattern(7, 512)},
	}
	// A name ustar cannot hold, for the other formats.
	longEntry := entry{strings.Repeat("l", 250) + ".vmdk", pattern(9, 1000)}
	var names []string
	for _, e := range append(entries, longEntry) {
		p := filepath.Join(src, e.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, e.data, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, e.name)
	}
	for _, format := range []string{"gnu", "oldgnu", "pax", "ustar", "posix"} {
		t.Run(format, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "vm.ova")
			want, files := entries, names[:len(entries)]
			if format != "ustar" {
				want, files = append(entries, longEntry), names
			}
			args := append([]string{"-C", src, "-cf", out, "--format=" + format, "--owner=0", "--group=0"}, files...)
			if b, err := exec.Command("tar", args...).CombinedOutput(); err != nil {
				t.Fatalf("tar %v: %v\n%s", args, err, b)
			}
			checkMembers(t, out, want)
			// "./name" finds "name".
			if _, err := Find(out, "./vm.ovf"); err != nil {
				t.Errorf("Find ./vm.ovf: %v", err)
			}
		})
	}
}

// TestTarCommandV7 checks the old v7 format (no magic, short names only).
func TestTarCommandV7(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar is not installed")
	}
	src := t.TempDir()
	entries := []entry{{"vm.ovf", []byte("<Envelope/>\n")}, {"disk.raw", pattern(10, 2048)}}
	for _, e := range entries {
		if err := os.WriteFile(filepath.Join(src, e.name), e.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "v7.ova")
	if b, err := exec.Command("tar", "-C", src, "--format=v7", "-cf", out, "vm.ovf", "disk.raw").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, b)
	}
	checkMembers(t, out, entries)
}

// TestTarCommandDirectories checks that directories are not listed.
func TestTarCommandDirectories(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar is not installed")
	}
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "dir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "dir", "sub", "f"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/f", filepath.Join(src, "dir", "link")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "a.ova")
	if b, err := exec.Command("tar", "-C", src, "-cf", out, "dir").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, b)
	}
	ms, err := List(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Name != "dir/sub/f" || ms[0].Size != 1 {
		t.Errorf("got %+v, want only dir/sub/f", ms)
	}
}

func TestSparseMember(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar is not installed")
	}
	src := t.TempDir()
	p := filepath.Join(src, "sparse.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("start"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("end"), 4<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(src, "vm.ovf"), []byte("ovf"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"gnu", "pax"} {
		t.Run(format, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "a.ova")
			if b, err := exec.Command("tar", "-C", src, "--sparse", "--format="+format, "-cf", out, "vm.ovf", "sparse.raw").CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, b)
			}
			if _, err := Find(out, "sparse.raw"); !errors.Is(err, ErrSparseMember) {
				t.Errorf("Find sparse.raw: got %v, want ErrSparseMember", err)
			}
			if _, err := Find(out, "vm.ovf"); err != nil {
				t.Errorf("Find vm.ovf: %v", err)
			}
		})
	}
}

func TestMemberNotFound(t *testing.T) {
	p := writeFile(t, "vm.ova", makeTar(t, tar.FormatPAX, testEntries()[:2]))
	_, err := Find(p, "disk.qcow2")
	if !errors.Is(err, ErrMemberNotFound) {
		t.Fatalf("got %v, want ErrMemberNotFound", err)
	}
	for _, s := range []string{p, `"disk.qcow2"`, `"vm.ovf"`, `"empty"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %s", err, s)
		}
	}

	empty := writeFile(t, "empty.ova", makeTar(t, tar.FormatPAX, nil))
	_, err = Find(empty, "disk.qcow2")
	if !errors.Is(err, ErrMemberNotFound) || !strings.Contains(err.Error(), "no members") {
		t.Errorf("got %v, want ErrMemberNotFound saying there are no members", err)
	}
}

func TestDuplicateNames(t *testing.T) {
	entries := []entry{{"a", []byte("first")}, {"a", []byte("second")}}
	p := writeFile(t, "a.ova", makeTar(t, tar.FormatUSTAR, entries))
	m, err := Find(p, "a")
	if err != nil {
		t.Fatal(err)
	}
	if m.Size != int64(len("second")) || m.Offset != 3*blockSize {
		t.Errorf("got %+v, want the last member called a", m)
	}
}

func TestTruncated(t *testing.T) {
	entries := testEntries()
	data := makeTar(t, tar.FormatGNU, entries)
	// Layout: vm.ovf header at 0, data at 512; empty at 1024; the GNU long
	// name entry at 1536 (header) and 2048 (name); its file header at 2560
	// and data at 3072..6072; disk1.raw header at 6144.
	for _, tc := range []struct {
		name string
		size int
	}{
		{"inside first data", 520},
		{"inside padding", 600},
		{"inside a header", 1024 + 100},
		{"inside long name", 2048 + 10},
		{"after long name", 2560},
		{"inside member", 3072 + 2000},
		{"inside last member", 6144 + 512 + 4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "cut.ova", data[:tc.size])
			_, err := List(p)
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("got %v, want ErrTruncated", err)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	// Cut at a header boundary after the last member: no end blocks, but
	// every member is whole.
	p := writeFile(t, "noend.ova", data[:6144+512+4096])
	checkMembers(t, p, entries)
}

func TestNotTar(t *testing.T) {
	good := makeTar(t, tar.FormatPAX, testEntries())
	badSum := bytes.Clone(good)
	badSum[0] ^= 1
	badLater := bytes.Clone(good)
	badLater[1024+10] ^= 1 // the second header's name
	zeroThenData := make([]byte, 100<<10)
	zeroThenData[80<<10] = 1
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty file", nil},
		{"short", []byte("hello")},
		{"text", bytes.Repeat([]byte("not a tar archive\n"), 100)},
		{"random", pattern(8, 8192)},
		{"qcow2 header", append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 1024)...)},
		{"bad checksum", badSum},
		{"bad later checksum", badLater},
		{"zeros then data", zeroThenData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "x.ova", tc.data)
			_, err := List(p)
			if !errors.Is(err, ErrNotTar) {
				t.Fatalf("got %v, want ErrNotTar", err)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestEmptyArchive(t *testing.T) {
	p := writeFile(t, "x.ova", make([]byte, 10240))
	ms, err := List(p)
	if err != nil || len(ms) != 0 {
		t.Errorf("got %v, %v; want no members and no error", ms, err)
	}
}

func TestOpenErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.ova")
	_, err := Find(missing, "x")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: got %v, want ErrNotExist naming the file", err)
	}
	dir := t.TempDir()
	if _, err := List(dir); !errors.Is(err, ErrNotTar) {
		t.Errorf("directory: got %v, want ErrNotTar", err)
	}
}

// checkInvariants checks what must hold for any archive Index accepts.
func checkInvariants(t *testing.T, data []byte, ms []Member) {
	t.Helper()
	for _, m := range ms {
		if m.Offset < blockSize || m.Offset%blockSize != 0 || m.Size < 0 || m.Offset+m.Size > int64(len(data)) {
			t.Fatalf("member %+v does not lie within the %d byte archive", m, len(data))
		}
	}
}

// FuzzIndex feeds arbitrary bytes to Index. Whatever the input, Index must
// not panic, members must lie within the data, and when archive/tar reads
// the same archive without error and without global headers or sparse
// files, both must agree on each regular file's name and content.
func FuzzIndex(f *testing.F) {
	for _, format := range []tar.Format{tar.FormatUSTAR, tar.FormatGNU, tar.FormatPAX} {
		f.Add(makeTar(f, format, testEntries()))
	}
	f.Add(makeTar(f, tar.FormatGNU, []entry{{strings.Repeat("g", 200), []byte("gnu long")}}))
	f.Add(makeTar(f, tar.FormatPAX, []entry{{strings.Repeat("p", 200), []byte("pax long")}}))
	f.Add(append(paxEntry(f, "g", "path=g\n"), append(fileHeader(f, "one", 0, '0'), make([]byte, 1024)...)...))
	f.Add([]byte{})
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := Index(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrNotTar) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("error %v wraps neither ErrNotTar nor ErrTruncated", err)
			}
			return
		}
		checkInvariants(t, data, ms)
		compareGoTar(t, data, ms)
	})
}

// compareGoTar checks ms against archive/tar's reading of data, where the
// two readers are meant to agree.
func compareGoTar(t *testing.T, data []byte, ms []Member) {
	type file struct {
		Name string
		Data string
	}
	var want []file
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return // archive/tar is stricter in places
		}
		switch {
		case h.Typeflag == tar.TypeXGlobalHeader, h.Typeflag == tar.TypeGNUSparse,
			h.Typeflag == tar.TypeGNULongName, h.Typeflag == tar.TypeGNULongLink:
			return
		case h.Typeflag != tar.TypeReg && h.Typeflag != '\x00' && h.Typeflag != tar.TypeCont:
			continue
		}
		if h.Format == tar.FormatUnknown {
			// archive/tar reads GNU headers with unparsable times as
			// ustar, for archives from old buggy Go writers; no
			// comparison then.
			return
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return
			}
		}
		if h.Typeflag == '\x00' && strings.HasSuffix(h.Name, "/") {
			continue
		}
		if h.Size > int64(len(data)) {
			return // a sparse file may expand to any size
		}
		b, err := io.ReadAll(io.LimitReader(tr, int64(len(data))))
		if err != nil {
			return
		}
		want = append(want, file{h.Name, string(b)})
	}
	var got []file
	for _, m := range ms {
		got = append(got, file{m.Name, string(data[m.Offset : m.Offset+m.Size])})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Index and archive/tar disagree (-archive/tar +Index):\n%s", diff)
	}
}
