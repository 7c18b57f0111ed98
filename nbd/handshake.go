package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// maxOptionReply bounds the payload of one option reply.
const maxOptionReply = 64 << 10

// maxString is the longest string (export name, context name) the
// protocol allows.
const maxString = 4096

// maxReplies bounds the number of replies to one option.
const maxReplies = 4096

// exportInfo is what the handshake learned about the export.
type exportInfo struct {
	size       int64
	flags      Flags
	blockSize  BlockSize
	structured bool
	contexts   map[string]uint32 // negotiated meta context name -> id
	bitmap     string            // negotiated dirty bitmap context, if any
}

// Options select what Dial negotiates.
type Options struct {
	// MetaContexts lists the meta contexts to ask for. nil asks for
	// ContextBaseAllocation and ContextAllocationDepth, or, with
	// DirtyBitmap, for ContextBaseAllocation and the bitmap. An entry
	// DirtyBitmapPrefix+NAME names a bitmap explicitly.
	MetaContexts []string
	// DirtyBitmap asks the server for its dirty bitmaps and uses the only
	// one (Dial fails when there is none or more than one), unless
	// MetaContexts names one.
	DirtyBitmap bool
}

// negotiator runs the fixed newstyle handshake over r and w. It reads only
// what the server sends, so it can be fed any byte stream.
type negotiator struct {
	r   io.Reader
	w   io.Writer
	hdr [20]byte
}

// negotiate runs the handshake for export and returns what it learned.
func negotiate(r io.Reader, w io.Writer, export string, opts Options) (exportInfo, error) {
	n := &negotiator{r: r, w: w}
	if len(export) > maxString {
		return exportInfo{}, fmt.Errorf("export name is longer than %d bytes", maxString)
	}
	noZeroes, err := n.greeting()
	if err != nil {
		return exportInfo{}, err
	}
	info := exportInfo{blockSize: defaultBlockSize}
	info.structured, err = n.structuredReply()
	if err != nil {
		return exportInfo{}, err
	}
	if err := n.metaContexts(&info, export, opts); err != nil {
		return exportInfo{}, err
	}
	if err := n.goExport(&info, export, noZeroes); err != nil {
		return exportInfo{}, err
	}
	return info, nil
}

// greeting reads the server greeting and sends the client flags. It
// returns whether the server will omit the trailing zeroes of
// NBD_OPT_EXPORT_NAME.
func (n *negotiator) greeting() (bool, error) {
	var b [18]byte
	if _, err := io.ReadFull(n.r, b[:]); err != nil {
		return false, fmt.Errorf("reading server greeting: %w", err)
	}
	if m := binary.BigEndian.Uint64(b[0:]); m != magicNBD {
		return false, protocolError("bad greeting magic %#x", m)
	}
	if m := binary.BigEndian.Uint64(b[8:]); m != magicIHaveOpt {
		if m == 0x00420281861253 {
			return false, fmt.Errorf("%w: oldstyle negotiation", ErrNotSupported)
		}
		return false, protocolError("bad newstyle magic %#x", m)
	}
	hflags := binary.BigEndian.Uint16(b[16:])
	if hflags&flagFixedNewstyle == 0 {
		return false, fmt.Errorf("%w: server does not offer fixed newstyle negotiation", ErrNotSupported)
	}
	cflags := uint32(flagCFixedNewstyle)
	noZeroes := hflags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagCNoZeroes
	}
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], cflags)
	if _, err := n.w.Write(c[:]); err != nil {
		return false, fmt.Errorf("sending client flags: %w", err)
	}
	return noZeroes, nil
}

// send sends option opt with data.
func (n *negotiator) send(opt uint32, data []byte) error {
	b := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(b[0:], magicIHaveOpt)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	if _, err := n.w.Write(b); err != nil {
		return fmt.Errorf("sending %s: %w", optionName(opt), err)
	}
	return nil
}

// reply reads one option reply to opt. An error reply is returned as an
// *OptionError.
func (n *negotiator) reply(opt uint32) (uint32, []byte, error) {
	if _, err := io.ReadFull(n.r, n.hdr[:]); err != nil {
		return 0, nil, fmt.Errorf("reading reply to %s: %w", optionName(opt), err)
	}
	if m := binary.BigEndian.Uint64(n.hdr[0:]); m != magicOptReply {
		return 0, nil, protocolError("bad option reply magic %#x", m)
	}
	if got := binary.BigEndian.Uint32(n.hdr[8:]); got != opt {
		return 0, nil, protocolError("reply to %s while waiting for %s", optionName(got), optionName(opt))
	}
	typ := binary.BigEndian.Uint32(n.hdr[12:])
	length := binary.BigEndian.Uint32(n.hdr[16:])
	if length > maxOptionReply {
		return 0, nil, protocolError("reply to %s is %d bytes long", optionName(opt), length)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(n.r, data); err != nil {
		return 0, nil, fmt.Errorf("reading reply to %s: %w", optionName(opt), err)
	}
	if typ&repErrBit != 0 {
		return typ, nil, &OptionError{Option: optionName(opt), Reply: typ, Message: printable(data)}
	}
	return typ, data, nil
}

// printable returns s with control characters replaced, bounded in length.
func printable(b []byte) string {
	if len(b) > maxString {
		b = b[:maxString]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(string(b), "?"))
}

func (n *negotiator) structuredReply() (bool, error) {
	if err := n.send(optStructuredReply, nil); err != nil {
		return false, err
	}
	typ, data, err := n.reply(optStructuredReply)
	var oe *OptionError
	switch {
	case errors.As(err, &oe) && oe.Reply != repErrShutdown:
		return false, nil // simple replies only
	case err != nil:
		return false, err
	case typ != repAck || len(data) != 0:
		return false, protocolError("reply %d to NBD_OPT_STRUCTURED_REPLY", typ)
	}
	return true, nil
}

// metaContexts lists and sets the meta contexts opts asks for.
func (n *negotiator) metaContexts(info *exportInfo, export string, opts Options) error {
	want := opts.MetaContexts
	if want == nil {
		want = []string{ContextBaseAllocation}
		if !opts.DirtyBitmap {
			want = append(want, ContextAllocationDepth)
		}
	}
	want = append([]string(nil), want...)
	bitmap := ""
	for _, name := range want {
		if strings.HasPrefix(name, DirtyBitmapPrefix) {
			bitmap = name
		}
		if len(name) > maxString {
			return fmt.Errorf("meta context name is longer than %d bytes", maxString)
		}
	}
	if len(want) == 0 && !opts.DirtyBitmap {
		return nil
	}
	if !info.structured {
		if opts.DirtyBitmap || bitmap != "" {
			return fmt.Errorf("getting dirty bitmap: %w: server has no structured replies", ErrNotSupported)
		}
		return nil
	}
	if opts.DirtyBitmap && bitmap == "" {
		names, err := n.contextQuery(optListMetaContext, export, []string{DirtyBitmapPrefix})
		if err != nil {
			return fmt.Errorf("listing dirty bitmaps: %w", err)
		}
		var bitmaps []string
		for name := range names {
			if strings.HasPrefix(name, DirtyBitmapPrefix) {
				bitmaps = append(bitmaps, name)
			}
		}
		switch len(bitmaps) {
		case 0:
			return fmt.Errorf("export %q has no dirty bitmap", export)
		case 1:
			bitmap = bitmaps[0]
			want = append(want, bitmap)
		default:
			slices.Sort(bitmaps)
			return fmt.Errorf("export %q has %d dirty bitmaps (%s); name one", export, len(bitmaps), strings.Join(bitmaps, ", "))
		}
	}
	contexts, err := n.contextQuery(optSetMetaContext, export, want)
	var oe *OptionError
	if errors.As(err, &oe) && oe.Reply == repErrUnsup && bitmap == "" {
		return nil // no block status; Extents reports data only
	}
	if err != nil {
		return fmt.Errorf("setting meta contexts: %w", err)
	}
	if bitmap != "" {
		if _, ok := contexts[bitmap]; !ok {
			return fmt.Errorf("export %q has no dirty bitmap %q", export, strings.TrimPrefix(bitmap, DirtyBitmapPrefix))
		}
		info.bitmap = bitmap
	}
	info.contexts = contexts
	return nil
}

// contextQuery sends NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT
// and returns the contexts the server names.
func (n *negotiator) contextQuery(opt uint32, export string, queries []string) (map[string]uint32, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint32(data, uint32(len(queries)))
	for _, q := range queries {
		data = binary.BigEndian.AppendUint32(data, uint32(len(q)))
		data = append(data, q...)
	}
	if err := n.send(opt, data); err != nil {
		return nil, err
	}
	contexts := make(map[string]uint32)
	ids := make(map[uint32]bool)
	for i := 0; ; i++ {
		if i > maxReplies {
			return nil, protocolError("more than %d replies to %s", maxReplies, optionName(opt))
		}
		typ, data, err := n.reply(opt)
		if err != nil {
			return nil, err
		}
		switch typ {
		case repAck:
			return contexts, nil
		case repMetaContext:
			id, name, err := parseMetaContext(data)
			if err != nil {
				return nil, err
			}
			if opt == optSetMetaContext {
				if ids[id] {
					return nil, protocolError("meta context id %d given twice", id)
				}
				ids[id] = true
			}
			contexts[name] = id
		default:
			return nil, protocolError("reply type %d to %s", typ, optionName(opt))
		}
	}
}

// parseMetaContext parses an NBD_REP_META_CONTEXT payload.
func parseMetaContext(data []byte) (uint32, string, error) {
	if len(data) < 5 || len(data) > 4+maxString {
		return 0, "", protocolError("meta context reply of %d bytes", len(data))
	}
	return binary.BigEndian.Uint32(data), string(data[4:]), nil
}

// goExport sends NBD_OPT_GO (or NBD_OPT_EXPORT_NAME for old servers) and
// reads the export information.
func (n *negotiator) goExport(info *exportInfo, export string, noZeroes bool) error {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := n.send(optGo, data); err != nil {
		return err
	}
	gotExport := false
	for i := 0; ; i++ {
		if i > maxReplies {
			return protocolError("more than %d replies to NBD_OPT_GO", maxReplies)
		}
		typ, data, err := n.reply(optGo)
		var oe *OptionError
		if errors.As(err, &oe) && oe.Reply == repErrUnsup {
			return n.exportName(info, export, noZeroes)
		}
		if err != nil {
			return fmt.Errorf("opening export %q: %w", export, err)
		}
		switch typ {
		case repAck:
			if !gotExport {
				return protocolError("server sent no NBD_INFO_EXPORT")
			}
			return nil
		case repInfo:
			got, err := parseInfo(info, data)
			if err != nil {
				return err
			}
			gotExport = gotExport || got
		default:
			return protocolError("reply type %d to NBD_OPT_GO", typ)
		}
	}
}

// parseInfo parses an NBD_REP_INFO payload into info and reports whether
// it was NBD_INFO_EXPORT. Unknown information types are ignored.
func parseInfo(info *exportInfo, data []byte) (bool, error) {
	if len(data) < 2 {
		return false, protocolError("info reply of %d bytes", len(data))
	}
	switch binary.BigEndian.Uint16(data) {
	case infoExport:
		if len(data) != 12 {
			return false, protocolError("NBD_INFO_EXPORT of %d bytes", len(data))
		}
		size := binary.BigEndian.Uint64(data[2:])
		if size > 1<<62 {
			return false, protocolError("export size %d", size)
		}
		info.size = int64(size)
		info.flags = Flags(binary.BigEndian.Uint16(data[10:]))
		return true, nil
	case infoBlockSize:
		if len(data) != 14 {
			return false, protocolError("NBD_INFO_BLOCK_SIZE of %d bytes", len(data))
		}
		bs := BlockSize{
			Min:       binary.BigEndian.Uint32(data[2:]),
			Preferred: binary.BigEndian.Uint32(data[6:]),
			Max:       binary.BigEndian.Uint32(data[10:]),
		}
		if bs.Min == 0 || bs.Min&(bs.Min-1) != 0 || bs.Min > 64<<10 ||
			bs.Preferred < bs.Min || bs.Max < bs.Min {
			return false, protocolError("block sizes %+v", bs)
		}
		info.blockSize = bs
	}
	return false, nil
}

// exportName enters transmission with NBD_OPT_EXPORT_NAME, for servers
// without NBD_OPT_GO.
func (n *negotiator) exportName(info *exportInfo, export string, noZeroes bool) error {
	if err := n.send(optExportName, []byte(export)); err != nil {
		return err
	}
	length := 10
	if !noZeroes {
		length += 124
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(n.r, b); err != nil {
		return fmt.Errorf("opening export %q: %w", export, err)
	}
	size := binary.BigEndian.Uint64(b)
	if size > 1<<62 {
		return protocolError("export size %d", size)
	}
	info.size = int64(size)
	info.flags = Flags(binary.BigEndian.Uint16(b[8:]))
	return nil
}
