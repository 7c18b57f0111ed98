package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/imageio/imageio/internal/testutil"
)

// fakeServer is an NBD server written for the tests: a correct handshake
// and a transmission phase given by serve, which may misbehave.
type fakeServer struct {
	structured bool              // accept NBD_OPT_STRUCTURED_REPLY
	noGo       bool              // refuse NBD_OPT_GO (old server)
	size       uint64            // export size
	flags      uint16            // transmission flags (HAS_FLAGS added)
	contexts   map[string]uint32 // meta contexts the server knows
	// greeting, when set, replaces the whole handshake.
	greeting func(conn net.Conn)
	// serve runs the transmission phase on one connection.
	serve func(s *fakeConn)
}

// fakeConn is one client connection of a fakeServer.
type fakeConn struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
}

// fakeRequest is a request as the fake server read it.
type fakeRequest struct {
	flags, typ uint16
	cookie     uint64
	off        uint64
	length     uint32
	data       []byte
}

// start listens on a Unix socket and serves connections until the test
// ends.
func (fs *fakeServer) start(t *testing.T) Address {
	t.Helper()
	sock := testutil.SocketPath(t)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				fs.handle(conn)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return Address{Network: "unix", Addr: sock}
}

func (fs *fakeServer) handle(conn net.Conn) {
	if fs.greeting != nil {
		fs.greeting(conn)
		return
	}
	c := &fakeConn{conn: conn, r: bufio.NewReader(conn)}
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:], magicNBD)
	binary.BigEndian.PutUint64(b[8:], magicIHaveOpt)
	binary.BigEndian.PutUint16(b[16:], flagFixedNewstyle|flagNoZeroes)
	conn.Write(b[:])
	var cflags [4]byte
	if _, err := io.ReadFull(c.r, cflags[:]); err != nil {
		return
	}
	for {
		var h [16]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return
		}
		opt := binary.BigEndian.Uint32(h[8:])
		data := make([]byte, binary.BigEndian.Uint32(h[12:]))
		if _, err := io.ReadFull(c.r, data); err != nil {
			return
		}
		switch opt {
		case optStructuredReply:
			if fs.structured {
				c.optReply(opt, repAck, nil)
			} else {
				c.optReply(opt, repErrUnsup, nil)
			}
		case optListMetaContext, optSetMetaContext:
			for _, q := range parseQueries(data) {
				for name, id := range fs.contexts {
					if name == q || (q == DirtyBitmapPrefix && len(name) > len(q) && name[:len(q)] == q) {
						c.optReply(opt, repMetaContext, append(binary.BigEndian.AppendUint32(nil, id), name...))
					}
				}
			}
			c.optReply(opt, repAck, nil)
		case optGo:
			if fs.noGo {
				c.optReply(opt, repErrUnsup, []byte("no go"))
				continue
			}
			info := binary.BigEndian.AppendUint16(nil, infoExport)
			info = binary.BigEndian.AppendUint64(info, fs.size)
			info = binary.BigEndian.AppendUint16(info, fs.flags|uint16(FlagHasFlags))
			c.optReply(opt, repInfo, info)
			c.optReply(opt, repInfo, []byte{0, 99, 1, 2, 3}) // unknown info, ignored
			c.optReply(opt, repAck, nil)
			fs.serve(c)
			return
		case optExportName:
			info := binary.BigEndian.AppendUint64(nil, fs.size)
			info = binary.BigEndian.AppendUint16(info, fs.flags|uint16(FlagHasFlags))
			conn.Write(info)
			fs.serve(c)
			return
		default:
			c.optReply(opt, repErrUnsup, nil)
		}
	}
}

// parseQueries parses the queries of a meta context option.
func parseQueries(data []byte) []string {
	if len(data) < 8 {
		return nil
	}
	n := binary.BigEndian.Uint32(data)
	data = data[4+n:]
	count := binary.BigEndian.Uint32(data)
	data = data[4:]
	var out []string
	for range count {
		l := binary.BigEndian.Uint32(data)
		out = append(out, string(data[4:4+l]))
		data = data[4+l:]
	}
	return out
}

func (c *fakeConn) optReply(opt, typ uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, magicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.conn.Write(append(b, data...))
}

// request reads one request; ok is false when the connection ended.
func (c *fakeConn) request() (fakeRequest, bool) {
	var h [requestHeaderLen]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return fakeRequest{}, false
	}
	req := fakeRequest{
		flags:  binary.BigEndian.Uint16(h[4:]),
		typ:    binary.BigEndian.Uint16(h[6:]),
		cookie: binary.BigEndian.Uint64(h[8:]),
		off:    binary.BigEndian.Uint64(h[16:]),
		length: binary.BigEndian.Uint32(h[24:]),
	}
	if req.typ == cmdWrite {
		req.data = make([]byte, req.length)
		if _, err := io.ReadFull(c.r, req.data); err != nil {
			return fakeRequest{}, false
		}
	}
	return req, req.typ != cmdDisc
}

// write sends raw bytes.
func (c *fakeConn) write(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.Write(b)
}

// chunk sends a structured reply chunk.
func (c *fakeConn) chunk(flags, typ uint16, cookie uint64, payload []byte) {
	c.write(chunkBytes(flags, typ, cookie, payload))
}

func chunkBytes(flags, typ uint16, cookie uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// simple sends a simple reply.
func (c *fakeConn) simple(errno uint32, cookie uint64, data []byte) {
	c.write(simpleBytes(errno, cookie, data))
}

func simpleBytes(errno uint32, cookie uint64, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicSimple)
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return append(b, data...)
}

// pattern is the content of fake exports: byte i is byte(i/512 + i).
func pattern(off uint64, n uint32) []byte {
	p := make([]byte, n)
	for i := range p {
		o := off + uint64(i)
		p[i] = byte(o/512 + o)
	}
	return p
}

// answer replies correctly to req on a structured connection.
func (c *fakeConn) answer(req fakeRequest) {
	switch req.typ {
	case cmdRead:
		payload := binary.BigEndian.AppendUint64(nil, req.off)
		c.chunk(replyFlagDone, chunkOffsetData, req.cookie, append(payload, pattern(req.off, req.length)...))
	case cmdBlockStatus:
		payload := binary.BigEndian.AppendUint32(nil, 1)
		payload = binary.BigEndian.AppendUint32(payload, req.length)
		payload = binary.BigEndian.AppendUint32(payload, 0)
		c.chunk(replyFlagDone, chunkBlockStatus, req.cookie, payload)
	default:
		c.chunk(replyFlagDone, chunkNone, req.cookie, nil)
	}
}

// serveCorrectly answers every request correctly.
func serveCorrectly(c *fakeConn) {
	for {
		req, ok := c.request()
		if !ok {
			return
		}
		c.answer(req)
	}
}

func isProtocolError(err error) bool { return errors.Is(err, ErrProtocol) }
