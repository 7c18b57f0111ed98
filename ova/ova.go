// Package ova indexes the members of an OVA file, which is a tar archive,
// without extracting anything: for each regular file it gives the offset and
// size of the file's data inside the archive, so that a disk image in an OVA
// can be read in place (by qemu, through a raw node with an offset and size).
//
// The index reads tar headers itself, because archive/tar does not expose
// data offsets. It understands the formats that tar tools write: v7, ustar
// (names split into prefix and name), GNU (long names and link names in 'L'
// and 'K' entries, base-256 numbers) and PAX (per-file 'x' and global 'g'
// extended headers with path and size records). Every header's checksum is
// verified and every member's data must lie within the file.
//
// Sparse members (GNU 'S' entries and PAX GNU.sparse.* files) have no
// contiguous data and cannot be read in place; they are not listed, and Find
// reports ErrSparseMember for them.
package ova

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
)

// Errors returned by List and Find (wrapped with the file name); callers
// branch on them with errors.Is.
var (
	ErrNotTar         = errors.New("not a tar archive")
	ErrTruncated      = errors.New("truncated tar archive")
	ErrMemberNotFound = errors.New("member not found")
	ErrSparseMember   = errors.New("member is a sparse file and cannot be read in place")
)

// Member is a regular file in an OVA: Size bytes of data starting at byte
// Offset of the archive.
type Member struct {
	Name   string
	Offset int64
	Size   int64
}

// List returns the regular files of the OVA at path, in archive order.
func List(path string) ([]Member, error) {
	ms, _, err := listFile(path)
	return ms, err
}

// Find returns the member called name. When a name appears more than once
// (an archive appended to), the last one wins, as when extracting. A name
// that differs only in a leading "./" or other non-canonical parts (as
// path.Clean removes) matches too. The error for a missing member wraps
// ErrMemberNotFound and lists the members there are.
func Find(path, name string) (Member, error) {
	ms, sparse, err := listFile(path)
	if err != nil {
		return Member{}, err
	}
	if m, ok := lookup(ms, name); ok {
		return m, nil
	}
	for _, s := range sparse {
		if s == name || clean(s) == clean(name) {
			return Member{}, fmt.Errorf("finding %q in %q: %w", name, path, ErrSparseMember)
		}
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = strconv.Quote(m.Name)
	}
	have := "the archive has no members"
	if len(names) > 0 {
		have = "members: " + strings.Join(names, ", ")
	}
	return Member{}, fmt.Errorf("finding %q in %q: %w (%s)", name, path, ErrMemberNotFound, have)
}

func lookup(ms []Member, name string) (Member, bool) {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Name == name {
			return ms[i], true
		}
	}
	want := clean(name)
	for i := len(ms) - 1; i >= 0; i-- {
		if clean(ms[i].Name) == want {
			return ms[i], true
		}
	}
	return Member{}, false
}

func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func listFile(name string) ([]Member, []string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, fmt.Errorf("opening OVA: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("reading OVA %q: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("reading OVA %q: %w: not a regular file", name, ErrNotTar)
	}
	ms, sparse, err := index(f, st.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("reading OVA %q: %w", name, err)
	}
	return ms, sparse, nil
}

// Index lists the regular files of the tar archive of the given size read
// through r. The errors wrap ErrNotTar or ErrTruncated, or are I/O errors.
func Index(r io.ReaderAt, size int64) ([]Member, error) {
	ms, _, err := index(r, size)
	return ms, err
}

const (
	blockSize = 512
	// maxExtSize bounds the data of long-name and PAX entries, which are
	// read into memory.
	maxExtSize = 1 << 20
	// maxEmptySize is the largest file taken for an empty archive (only
	// zeros): tar pads archives to records of 10 KiB by default, and a
	// larger file starting with a zero block is more likely something else.
	maxEmptySize = 64 << 10
)

// Header type flags (POSIX and GNU).
const (
	typeReg      = '0'
	typeRegA     = '\x00'
	typeCont     = '7'
	typeGNULong  = 'L'
	typeGNULink  = 'K'
	typeGNUSpars = 'S'
	typePAX      = 'x'
	typePAXGlob  = 'g'
)

// walker holds the state carried from one header to the next.
type walker struct {
	r    io.ReaderAt
	size int64

	longName string            // from the last 'L' entry, for the next file
	hasLong  bool              // longName is set
	pax      map[string]string // from the last 'x' entry, for the next file
	global   map[string]string // from 'g' entries, for all following files
}

func index(r io.ReaderAt, size int64) ([]Member, []string, error) {
	if size < blockSize {
		return nil, nil, fmt.Errorf("%w: the file is shorter than one tar header (%d bytes)", ErrNotTar, size)
	}
	w := &walker{r: r, size: size, global: map[string]string{}}
	var members []Member
	var sparse []string
	var hdr [blockSize]byte
	off := int64(0)
	for n := 0; ; n++ {
		if off > size {
			return nil, nil, fmt.Errorf("%w: the file ends inside the padding before offset %d", ErrTruncated, off)
		}
		if off == size {
			// The archive ends at a header boundary without end-of-archive
			// blocks; tar readers accept that.
			if w.hasLong || w.pax != nil {
				return nil, nil, fmt.Errorf("%w: the file ends after an extended header at offset %d", ErrTruncated, off)
			}
			return members, sparse, nil
		}
		if off+blockSize > size {
			return nil, nil, fmt.Errorf("%w: the file ends inside the header at offset %d", ErrTruncated, off)
		}
		if err := readFull(w.r, hdr[:], off); err != nil {
			return nil, nil, fmt.Errorf("reading the header at offset %d: %w", off, err)
		}
		if isZero(hdr[:]) {
			// End of archive: two zero blocks, though one zero block
			// followed by the end of the file is accepted too.
			if n == 0 && (size > maxEmptySize || !allZero(w.r, off+blockSize, size)) {
				return nil, nil, fmt.Errorf("%w: the first header is empty", ErrNotTar)
			}
			if w.hasLong || w.pax != nil {
				return nil, nil, fmt.Errorf("%w: the archive ends after an extended header at offset %d", ErrTruncated, off)
			}
			return members, sparse, nil
		}
		if err := checkHeader(hdr[:]); err != nil {
			if n == 0 {
				return nil, nil, fmt.Errorf("%w: %v", ErrNotTar, err)
			}
			return nil, nil, fmt.Errorf("%w: the header at offset %d is corrupt: %v", ErrNotTar, off, err)
		}
		dataSize, err := parseNumber(hdr[124:136])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the header at offset %d has a bad size: %v", ErrNotTar, off, err)
		}
		typ := hdr[156]
		dataOff := off + blockSize
		switch typ {
		case typeGNULong, typeGNULink, typePAX, typePAXGlob:
			data, err := w.readExt(dataOff, dataSize, typ)
			if err != nil {
				return nil, nil, err
			}
			switch typ {
			case typeGNULong:
				w.longName, w.hasLong = cString(data), true
			case typeGNULink:
				// Link names are of no use here; the entry is consumed.
			case typePAX:
				recs, err := parsePAX(data)
				if err != nil {
					return nil, nil, fmt.Errorf("%w: the PAX header at offset %d: %v", ErrNotTar, off, err)
				}
				if w.pax == nil {
					w.pax = map[string]string{}
				}
				for k, v := range recs {
					w.pax[k] = v
				}
			case typePAXGlob:
				recs, err := parsePAX(data)
				if err != nil {
					return nil, nil, fmt.Errorf("%w: the PAX global header at offset %d: %v", ErrNotTar, off, err)
				}
				for k, v := range recs {
					if v == "" {
						delete(w.global, k)
					} else {
						w.global[k] = v
					}
				}
			}
			off = dataOff + roundUp(dataSize)
			continue
		}

		// A file, directory, link or device: apply the extended headers.
		name := headerName(hdr[:])
		if w.longName != "" {
			name = w.longName // an empty long name is ignored, as by archive/tar
		}
		attrs := w.attrs()
		if v, ok := attrs["path"]; ok {
			name = v
		}
		if v, ok := attrs["size"]; ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, nil, fmt.Errorf("%w: the PAX size %q for %q is not a valid size", ErrNotTar, v, name)
			}
			dataSize = n
		}
		w.longName, w.hasLong, w.pax = "", false, nil

		isSparse := typ == typeGNUSpars || hasSparseAttrs(attrs)
		if v, ok := attrs["GNU.sparse.name"]; ok {
			name = v
		}
		switch {
		case typ == typeGNUSpars:
			// The data that follows holds only the stored parts, whose
			// size the header gives; it is skipped below. Extended sparse
			// headers (isextended) follow the main header.
			ext, err := w.skipSparseExt(hdr[:], dataOff)
			if err != nil {
				return nil, nil, err
			}
			dataOff = ext
		case typ == '1' || typ == '2' || typ == '3' || typ == '4' || typ == '5' || typ == '6':
			// Links, devices, directories and FIFOs carry no data, whatever
			// their size field says (GNU tar writes sizes for directory
			// dumps 'D' though, handled as data below).
			dataSize = 0
		}
		if dataOff+dataSize > size || dataOff+dataSize < dataOff {
			return nil, nil, fmt.Errorf("%w: the data of %q (%d bytes at offset %d) goes past the end of the file (%d bytes)",
				ErrTruncated, name, dataSize, dataOff, size)
		}
		regular := typ == typeReg || typ == typeRegA || typ == typeCont
		if typ == typeRegA && strings.HasSuffix(name, "/") {
			regular = false // a v7 directory
		}
		switch {
		case isSparse:
			sparse = append(sparse, name)
		case regular:
			members = append(members, Member{Name: name, Offset: dataOff, Size: dataSize})
		}
		off = dataOff + roundUp(dataSize)
		if off < dataOff {
			return nil, nil, fmt.Errorf("%w: the size of %q is too large", ErrNotTar, name)
		}
	}
}

// attrs merges the global and per-file PAX records, per-file winning. An
// empty per-file value removes the attribute.
func (w *walker) attrs() map[string]string {
	if len(w.global) == 0 && len(w.pax) == 0 {
		return nil
	}
	m := make(map[string]string, len(w.global)+len(w.pax))
	for k, v := range w.global {
		m[k] = v
	}
	for k, v := range w.pax {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func hasSparseAttrs(attrs map[string]string) bool {
	for k := range attrs {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// readExt reads the data of an extended header entry.
func (w *walker) readExt(off, n int64, typ byte) ([]byte, error) {
	if n > maxExtSize {
		return nil, fmt.Errorf("%w: the %q entry at offset %d is too large (%d bytes)", ErrNotTar, typ, off-blockSize, n)
	}
	if off+n > w.size {
		return nil, fmt.Errorf("%w: the %q entry at offset %d goes past the end of the file", ErrTruncated, typ, off-blockSize)
	}
	buf := make([]byte, n)
	if err := readFull(w.r, buf, off); err != nil {
		return nil, fmt.Errorf("reading the entry at offset %d: %w", off-blockSize, err)
	}
	return buf, nil
}

// skipSparseExt skips the extension blocks of an old GNU sparse header and
// returns the offset of the member's data.
func (w *walker) skipSparseExt(hdr []byte, off int64) (int64, error) {
	extended := hdr[482] != 0
	var blk [blockSize]byte
	for i := 0; extended; i++ {
		if i > maxExtSize/blockSize {
			return 0, fmt.Errorf("%w: too many sparse extension blocks at offset %d", ErrNotTar, off)
		}
		if off+blockSize > w.size {
			return 0, fmt.Errorf("%w: the file ends inside a sparse extension block at offset %d", ErrTruncated, off)
		}
		if err := readFull(w.r, blk[:], off); err != nil {
			return 0, fmt.Errorf("reading the sparse extension block at offset %d: %w", off, err)
		}
		extended = blk[504] != 0
		off += blockSize
	}
	return off, nil
}

// checkHeader verifies the header checksum: the sum of the header's bytes
// with the checksum field counted as spaces. Some old tars summed signed
// bytes; both sums are accepted, as by other readers.
func checkHeader(hdr []byte) error {
	want, err := parseOctal(hdr[148:156])
	if err != nil {
		return fmt.Errorf("bad checksum field: %v", err)
	}
	var unsigned, signed int64
	for i, b := range hdr {
		if i >= 148 && i < 156 {
			b = ' '
		}
		unsigned += int64(b)
		signed += int64(int8(b))
	}
	if want != unsigned && want != signed {
		return fmt.Errorf("the header checksum %d does not match the header (%d)", want, unsigned)
	}
	return nil
}

// headerName returns the name in a header, joining the ustar prefix.
func headerName(hdr []byte) string {
	name := cString(hdr[0:100])
	magic := string(hdr[257:263])
	if magic != "ustar\x00" {
		// v7 has no prefix; GNU ("ustar  \x00") keeps other fields there.
		return name
	}
	prefix := hdr[345:500]
	if string(hdr[508:512]) == "tar\x00" {
		prefix = hdr[345:476] // star keeps times after a shorter prefix
	}
	if p := cString(prefix); p != "" {
		return p + "/" + name
	}
	return name
}

// parseNumber parses a numeric header field: octal text, or base-256 (GNU)
// when the high bit of the first byte is set.
func parseNumber(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0] == 0xff {
			return 0, errors.New("negative base-256 number")
		}
		var n uint64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if n>>55 != 0 {
				return 0, errors.New("base-256 number too large")
			}
			n = n<<8 | uint64(c)
		}
		if n > 1<<62 {
			return 0, errors.New("base-256 number too large")
		}
		return int64(n), nil
	}
	return parseOctal(b)
}

// parseOctal parses octal text padded with spaces and NULs.
func parseOctal(b []byte) (int64, error) {
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 8, 63)
	if err != nil {
		return 0, fmt.Errorf("bad octal number %q", s)
	}
	return int64(n), nil
}

// parsePAX parses PAX records, "LEN KEY=VALUE\n", where LEN counts the
// whole record. Only the keys this package uses are checked further.
func parsePAX(data []byte) (map[string]string, error) {
	recs := map[string]string{}
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 || sp > 20 {
			return nil, errors.New("bad record length")
		}
		n, err := strconv.Atoi(string(data[:sp]))
		if err != nil || n <= sp+1 || n > len(data) {
			return nil, errors.New("bad record length")
		}
		rec := data[sp+1 : n]
		if rec[len(rec)-1] != '\n' {
			return nil, errors.New("record does not end with a newline")
		}
		rec = rec[:len(rec)-1]
		eq := bytes.IndexByte(rec, '=')
		if eq <= 0 {
			return nil, errors.New("record has no key")
		}
		recs[string(rec[:eq])] = string(rec[eq+1:])
		data = data[n:]
	}
	return recs, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// allZero reports whether r holds only zeros in [off, end).
func allZero(r io.ReaderAt, off, end int64) bool {
	var blk [blockSize]byte
	for off < end {
		n := min(int64(blockSize), end-off)
		if err := readFull(r, blk[:n], off); err != nil {
			return false
		}
		if !isZero(blk[:n]) {
			return false
		}
		off += n
	}
	return true
}

// readFull reads len(p) bytes at off. A ReaderAt may return io.EOF with a
// full read at the end of its input; that is success.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func roundUp(n int64) int64 {
	return (n + blockSize - 1) &^ (blockSize - 1)
}
