// Package qemuimg runs qemu-img to describe, measure, create, compare and
// map disk images, and returns typed results (with qemu-img's own JSON kept
// where callers pass it on, as the info and measure commands do).
//
// Every function can read a disk that is a member of an OVA in place, with
// no extraction: the member is opened through a qemu "json:" filename whose
// raw node has the member's offset and size, and its format is probed on
// that node (or forced with Options.Format). Source returns that filename for
// other qemu tools (nbdlocal serves it with qemu-nbd).
//
// The qemu-img binary is $QEMU_IMG, or "qemu-img" from $PATH. Commands run
// with the caller's context; their standard error becomes part of the
// returned error and nothing is printed.
package qemuimg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/imageio/imageio/ova"
)

// Sentinel errors; callers branch on them with errors.Is. Errors for an
// unknown OVA member wrap ova.ErrMemberNotFound.
var (
	// ErrDiffer is wrapped by Compare's error when the contents differ.
	ErrDiffer = errors.New("images differ")
	// ErrNotImage is returned for paths that cannot hold an image, such
	// as directories.
	ErrNotImage = errors.New("not a disk image")
	// ErrInvalidFormat is returned for a malformed or unsupported format
	// name.
	ErrInvalidFormat = errors.New("invalid image format")
)

// Options says how to open an image.
type Options struct {
	// Member is the name of a disk inside the OVA (tar) file at path; ""
	// opens path itself.
	Member string
	// Format forces the image format (such as "raw" or "qcow2"); "" probes
	// it.
	Format string
}

// Source is what qemu tools need to open an image.
type Source struct {
	// Filename is the path (made safe from qemu's option parsing and
	// protocol prefixes, see safeName), or for an OVA member a "json:"
	// filename that already names the format.
	Filename string
	// Format is the image format, detected or forced.
	Format string
	// Path is the file opened: the image, or the OVA holding the member.
	Path string
	// Member is the OVA member, "" for a plain image.
	Member string
	// MemberOffset and MemberSize locate the member's data in the OVA.
	MemberOffset, MemberSize int64
}

// Spec returns the qemu block options that open the image:
// {"driver": Format, "file": PROTOCOL}, where PROTOCOL is the file (or host
// device) node, or for a member a raw node with the member's offset and
// size over it.
func (s Source) Spec() map[string]any {
	proto := map[string]any{"driver": protocolDriver(s.Path), "filename": s.Path}
	file := proto
	if s.Member != "" {
		file = map[string]any{
			"driver": "raw",
			"offset": s.MemberOffset,
			"size":   s.MemberSize,
			"file":   proto,
		}
	}
	return map[string]any{"driver": s.Format, "file": file}
}

// JSON returns a "json:" filename for Spec, with extra top-level options
// (such as "backing": nil to open an image without its backing chain).
func (s Source) JSON(extra map[string]any) (string, error) {
	spec := s.Spec()
	for k, v := range extra {
		spec[k] = v
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("making the qemu filename of %s: %w", s.describe(), err)
	}
	return "json:" + string(b), nil
}

// args returns the qemu-img arguments that name the image.
func (s Source) args() []string {
	if s.Member != "" || s.Format == "" {
		return []string{s.Filename}
	}
	return []string{"-f", s.Format, s.Filename}
}

func protocolDriver(path string) string {
	if st, err := os.Stat(path); err == nil && st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0 {
		return "host_device"
	}
	return "file"
}

// SourceOf returns how to open the image at path with opt, probing its format
// unless opt.Format is set.
func SourceOf(ctx context.Context, path string, opt Options) (Source, error) {
	src, err := openSource(ctx, path, opt)
	if err != nil {
		return Source{}, err
	}
	if src.Format == "" {
		info, _, err := runInfo(ctx, src)
		if err != nil {
			return Source{}, err
		}
		src.Format = info.Format
	}
	return src, nil
}

// openSource checks path and finds the member, without running qemu-img
// unless a member's format must be probed.
func openSource(ctx context.Context, path string, opt Options) (Source, error) {
	if err := checkFormat(opt.Format); err != nil {
		return Source{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return Source{}, err // names the file
	}
	if st.IsDir() || (!st.Mode().IsRegular() && st.Mode()&fs.ModeDevice == 0) {
		return Source{}, fmt.Errorf("opening %q: %w", path, ErrNotImage)
	}
	src := Source{Filename: safeName(path), Format: opt.Format, Path: path}
	if opt.Member == "" {
		return src, nil
	}
	m, err := ova.Find(path, opt.Member)
	if err != nil {
		return Source{}, err
	}
	src.Member, src.MemberOffset, src.MemberSize = opt.Member, m.Offset, m.Size
	if m.Size%512 != 0 {
		// qemu reads images in sectors; no disk image has such a size.
		return Source{}, fmt.Errorf("opening %q in %q: %w: its size %d is not a multiple of 512",
			opt.Member, path, ErrNotImage, m.Size)
	}
	if src.Format == "" {
		// Probe the member's format on the raw node alone.
		raw := src.Spec()
		delete(raw, "driver")
		b, err := json.Marshal(raw)
		if err != nil {
			return Source{}, fmt.Errorf("probing the format of %q in %q: %w", opt.Member, path, err)
		}
		out, err := run(ctx, "info", "--output=json", "json:"+string(b))
		if err != nil {
			return Source{}, fmt.Errorf("probing the format of %q in %q: %w", opt.Member, path, err)
		}
		var info ImageInfo
		if err := info.parse(out); err != nil {
			return Source{}, fmt.Errorf("probing the format of %q in %q: %w", opt.Member, path, err)
		}
		src.Format = info.Format
	}
	src.Filename, err = src.JSON(nil)
	if err != nil {
		return Source{}, err
	}
	return src, nil
}

// safeName returns path as a qemu-img argument that names a file: a
// relative path starting with "-" (which qemu-img would read as an
// option), or with a colon before any slash (such as "nbd:x" or "json:x",
// which qemu would read as a protocol), gets a "./" prefix.
func safeName(path string) string {
	if strings.HasPrefix(path, "-") {
		return "./" + path
	}
	return noProtocol(path)
}

// noProtocol keeps qemu from reading a path with a colon before any slash
// as a protocol. It is enough for the value of an option such as -b,
// which qemu-img takes whatever it starts with; there a "./" would be
// written into the image as part of the backing file name.
func noProtocol(path string) string {
	slash := strings.IndexByte(path, '/')
	colon := strings.IndexByte(path, ':')
	if colon >= 0 && (slash < 0 || colon < slash) {
		return "./" + path
	}
	return path
}

func checkFormat(f string) error {
	if f == "" {
		return nil
	}
	for _, c := range f {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %q", ErrInvalidFormat, f)
		}
	}
	return nil
}

// ImageInfo is the output of qemu-img info.
type ImageInfo struct {
	Format          string
	VirtualSize     int64
	ActualSize      int64
	ClusterSize     int64
	BackingFilename string
	BackingFormat   string
	Encrypted       bool
	DirtyFlag       bool
	// MemberOffset and MemberSize locate an OVA member's data.
	MemberOffset, MemberSize int64
	// JSON is qemu-img's output, unchanged except for "member-offset" and
	// "member-size" keys added for an OVA member.
	JSON json.RawMessage
}

func (i *ImageInfo) parse(out []byte) error {
	var v struct {
		Format          string `json:"format"`
		VirtualSize     int64  `json:"virtual-size"`
		ActualSize      int64  `json:"actual-size"`
		ClusterSize     int64  `json:"cluster-size"`
		BackingFilename string `json:"backing-filename"`
		BackingFormat   string `json:"backing-filename-format"`
		Encrypted       bool   `json:"encrypted"`
		DirtyFlag       bool   `json:"dirty-flag"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("parsing qemu-img output: %w", err)
	}
	if v.Format == "" {
		return errors.New("parsing qemu-img output: no format")
	}
	*i = ImageInfo{
		Format:          v.Format,
		VirtualSize:     v.VirtualSize,
		ActualSize:      v.ActualSize,
		ClusterSize:     v.ClusterSize,
		BackingFilename: v.BackingFilename,
		BackingFormat:   v.BackingFormat,
		Encrypted:       v.Encrypted,
		DirtyFlag:       v.DirtyFlag,
		JSON:            json.RawMessage(out),
	}
	return nil
}

// Info describes the image at path (qemu-img info).
func Info(ctx context.Context, path string, opt Options) (*ImageInfo, error) {
	src, err := openSource(ctx, path, opt)
	if err != nil {
		return nil, fmt.Errorf("reading image info: %w", err)
	}
	info, _, err := runInfo(ctx, src)
	if err != nil {
		return nil, err
	}
	if src.Member != "" {
		info.MemberOffset, info.MemberSize = src.MemberOffset, src.MemberSize
		js, err := addKeys(info.JSON, "member-offset", src.MemberOffset, "member-size", src.MemberSize)
		if err != nil {
			return nil, fmt.Errorf("reading image info of %q in %q: %w", src.Member, path, err)
		}
		info.JSON = js
	}
	return info, nil
}

func runInfo(ctx context.Context, src Source) (*ImageInfo, []byte, error) {
	out, err := run(ctx, append([]string{"info", "--output=json"}, src.args()...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("reading image info of %s: %w", src.describe(), err)
	}
	var info ImageInfo
	if err := info.parse(out); err != nil {
		return nil, nil, fmt.Errorf("reading image info of %s: %w", src.describe(), err)
	}
	return &info, out, nil
}

func (s Source) describe() string {
	if s.Member != "" {
		return fmt.Sprintf("%q in %q", s.Member, s.Path)
	}
	return strconv.Quote(s.Path)
}

// addKeys appends integer keys to a JSON object, leaving the rest of the
// text as it was.
func addKeys(obj []byte, kv ...any) ([]byte, error) {
	t := bytes.TrimRight(obj, " \t\r\n")
	if !bytes.HasPrefix(bytes.TrimLeft(t, " \t\r\n"), []byte("{")) || !bytes.HasSuffix(t, []byte("}")) {
		return nil, errors.New("qemu-img output is not a JSON object")
	}
	body := bytes.TrimRight(t[:len(t)-1], " \t\r\n")
	var b bytes.Buffer
	b.Write(body)
	for i := 0; i+1 < len(kv); i += 2 {
		if !bytes.HasSuffix(body, []byte("{")) || i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n    %q: %v", kv[i], kv[i+1])
	}
	b.WriteString("\n}\n")
	if !json.Valid(b.Bytes()) {
		return nil, errors.New("qemu-img output is not a JSON object")
	}
	return b.Bytes(), nil
}

// Measurement is the output of qemu-img measure: the bytes needed to hold
// the image in the target format.
type Measurement struct {
	Required       int64
	FullyAllocated int64
	// JSON is qemu-img's output, unchanged.
	JSON json.RawMessage
}

// Measure computes the size of the image at path converted to dstFormat
// ("raw" or "qcow2").
func Measure(ctx context.Context, path, dstFormat string, opt Options) (*Measurement, error) {
	if dstFormat != "raw" && dstFormat != "qcow2" {
		return nil, fmt.Errorf("measuring %q: %w: %q (want raw or qcow2)", path, ErrInvalidFormat, dstFormat)
	}
	src, err := openSource(ctx, path, opt)
	if err != nil {
		return nil, fmt.Errorf("measuring image: %w", err)
	}
	out, err := run(ctx, append([]string{"measure", "--output=json", "-O", dstFormat}, src.args()...)...)
	if err != nil {
		return nil, fmt.Errorf("measuring %s: %w", src.describe(), err)
	}
	var v struct {
		Required       int64 `json:"required"`
		FullyAllocated int64 `json:"fully-allocated"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("measuring %s: parsing qemu-img output: %w", src.describe(), err)
	}
	return &Measurement{Required: v.Required, FullyAllocated: v.FullyAllocated, JSON: json.RawMessage(out)}, nil
}

// CreateOptions describes a new image.
type CreateOptions struct {
	Format string // "raw", "qcow2", ...; "" is raw
	// Size is the virtual size in bytes; 0 with a backing file takes the
	// backing file's size.
	Size int64
	// BackingFile is the backing image (qcow2), relative to the new image's
	// directory unless absolute; BackingFormat is its format, probed when
	// "".
	BackingFile, BackingFormat string
	// Preallocation is qemu's preallocation mode (off, metadata, falloc,
	// full); "" is the format's default.
	Preallocation string
}

// Create makes a new image at path (qemu-img create).
func Create(ctx context.Context, path string, c CreateOptions) error {
	format := c.Format
	if format == "" {
		format = "raw"
	}
	if err := checkFormat(format); err != nil {
		return fmt.Errorf("creating %q: %w", path, err)
	}
	if c.Size < 0 || (c.Size == 0 && c.BackingFile == "") {
		return fmt.Errorf("creating %q: invalid size %d", path, c.Size)
	}
	args := []string{"create", "-q", "-f", format}
	if c.BackingFile != "" {
		bformat := c.BackingFormat
		if bformat == "" {
			backing := c.BackingFile
			if !filepath.IsAbs(backing) {
				backing = filepath.Join(filepath.Dir(path), backing)
			}
			src, err := SourceOf(ctx, backing, Options{})
			if err != nil {
				return fmt.Errorf("creating %q: %w", path, err)
			}
			bformat = src.Format
		}
		if err := checkFormat(bformat); err != nil {
			return fmt.Errorf("creating %q: backing file: %w", path, err)
		}
		args = append(args, "-b", noProtocol(c.BackingFile), "-F", bformat)
	}
	if c.Preallocation != "" {
		if strings.ContainsAny(c.Preallocation, ",=") {
			return fmt.Errorf("creating %q: invalid preallocation %q", path, c.Preallocation)
		}
		args = append(args, "-o", "preallocation="+c.Preallocation)
	}
	args = append(args, safeName(path))
	if c.Size > 0 {
		args = append(args, strconv.FormatInt(c.Size, 10))
	}
	if _, err := run(ctx, args...); err != nil {
		return fmt.Errorf("creating %q: %w", path, err)
	}
	return nil
}

// CompareOptions says how to open the images compared.
type CompareOptions struct {
	FormatA, FormatB string // "" probes the format
	// Strict fails on different sizes or allocation, not only content.
	Strict bool
}

// Compare compares the contents of two images (qemu-img compare). a and b
// are paths or "json:" filenames (such as Source.Filename of an OVA member).
// The result is nil when the images read the same, an error wrapping
// ErrDiffer with qemu-img's message when they do not, and another error when
// they could not be compared.
func Compare(ctx context.Context, a, b string, opt CompareOptions) error {
	if err := checkFormat(opt.FormatA); err != nil {
		return fmt.Errorf("comparing %q and %q: %w", a, b, err)
	}
	if err := checkFormat(opt.FormatB); err != nil {
		return fmt.Errorf("comparing %q and %q: %w", a, b, err)
	}
	args := []string{"compare"}
	if opt.FormatA != "" {
		args = append(args, "-f", opt.FormatA)
	}
	if opt.FormatB != "" {
		args = append(args, "-F", opt.FormatB)
	}
	if opt.Strict {
		args = append(args, "-s")
	}
	args = append(args, compareName(a), compareName(b))
	cmd, stdout, stderr := command(ctx, args...)
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 && ctx.Err() == nil {
		// Exit status 1 means the images differ; qemu-img says where on
		// stdout (or on stderr in strict mode).
		msg := strings.TrimSpace(stdout.String())
		if m := cleanStderr(stderr.Bytes()); m != "" {
			msg = m
		}
		return fmt.Errorf("comparing %q and %q: %w: %s", a, b, ErrDiffer, msg)
	}
	if err != nil {
		return fmt.Errorf("comparing %q and %q: %w", a, b, cmdError(ctx, args, err, stderr.Bytes()))
	}
	return nil
}

func compareName(name string) string {
	if strings.HasPrefix(name, "json:") {
		return name
	}
	return safeName(name)
}

// MapEntry is a range of an image as qemu-img map reports it.
type MapEntry struct {
	Start, Length int64
	// Depth is the layer of the backing chain the range comes from (0 is
	// the image itself).
	Depth   int
	Present bool // allocated in some layer of the chain
	Zero    bool // reads as zeros
	Data    bool // holds data
	// Offset is where the data lies in the file holding it (for an OVA
	// member, from the start of the member), or nil.
	Offset *int64
}

// Map lists the allocation of the image at path (qemu-img map).
func Map(ctx context.Context, path string, opt Options) ([]MapEntry, error) {
	src, err := openSource(ctx, path, opt)
	if err != nil {
		return nil, fmt.Errorf("mapping image: %w", err)
	}
	out, err := run(ctx, append([]string{"map", "--output=json"}, src.args()...)...)
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", src.describe(), err)
	}
	var raw []struct {
		Start   int64  `json:"start"`
		Length  int64  `json:"length"`
		Depth   int    `json:"depth"`
		Present *bool  `json:"present"`
		Zero    bool   `json:"zero"`
		Data    bool   `json:"data"`
		Offset  *int64 `json:"offset"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("mapping %s: parsing qemu-img output: %w", src.describe(), err)
	}
	entries := make([]MapEntry, len(raw))
	for i, r := range raw {
		present := r.Data // qemu before 6.2 has no "present"
		if r.Present != nil {
			present = *r.Present
		}
		entries[i] = MapEntry{Start: r.Start, Length: r.Length, Depth: r.Depth, Present: present,
			Zero: r.Zero, Data: r.Data, Offset: r.Offset}
	}
	return entries, nil
}

// Binary returns the qemu-img command: $QEMU_IMG, or "qemu-img".
func Binary() string {
	if b := os.Getenv("QEMU_IMG"); b != "" {
		return b
	}
	return "qemu-img"
}

func command(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, Binary(), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// run runs qemu-img with args and returns its standard output.
func run(ctx context.Context, args ...string) ([]byte, error) {
	cmd, stdout, stderr := command(ctx, args...)
	if err := cmd.Run(); err != nil {
		return nil, cmdError(ctx, args, err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// cmdError makes the error of a failed qemu-img run: qemu-img's message when
// it gave one, the context's error when the run was canceled.
func cmdError(ctx context.Context, args []string, err error, stderr []byte) error {
	if ctx.Err() != nil {
		return fmt.Errorf("running qemu-img %s: %w", args[0], ctx.Err())
	}
	if msg := cleanStderr(stderr); msg != "" {
		return fmt.Errorf("%s (qemu-img %s: %w)", msg, args[0], err)
	}
	return fmt.Errorf("running qemu-img %s: %w", args[0], err)
}

// cleanStderr trims qemu-img's standard error and its "qemu-img: " prefixes.
func cleanStderr(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(strings.TrimSpace(l), "qemu-img: ")
	}
	return strings.TrimSpace(strings.Join(lines, "; "))
}
