package nbd

import (
	"encoding/binary"
	"io"
)

const (
	// maxStatusPayload bounds one BLOCK_STATUS chunk (8 Mi descriptors).
	maxStatusPayload = 4 + 8<<23
	// maxErrorPayload bounds one error chunk.
	maxErrorPayload = 6 + 0xffff + 8
)

// readReplies reads simple replies and structured reply chunks from r and
// hands each to its pending request, until r fails or the server breaks
// the protocol. It never returns nil.
func (c *Client) readReplies(r io.Reader) error {
	var hdr [structuredHeaderLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:4]); err != nil {
			return err
		}
		var err error
		switch m := binary.BigEndian.Uint32(hdr[:4]); m {
		case magicSimple:
			err = c.simpleReply(r, hdr[:simpleHeaderLen])
		case magicStructured:
			err = c.structuredChunk(r, hdr[:structuredHeaderLen])
		default:
			return protocolError("bad reply magic %#x", m)
		}
		if err != nil {
			return err
		}
	}
}

// simpleReply handles a simple reply whose magic is already in hdr[:4].
func (c *Client) simpleReply(r io.Reader, hdr []byte) error {
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return err
	}
	errno := binary.BigEndian.Uint32(hdr[4:])
	cookie := binary.BigEndian.Uint64(hdr[8:])
	req := c.lookup(cookie)
	if req == nil {
		return protocolError("simple reply for cookie %d not in flight", cookie)
	}
	if errno != 0 {
		c.complete(req, &Error{Errno: errno})
		return nil
	}
	switch req.cmd {
	case cmdRead:
		if c.info.structured {
			return protocolError("simple reply with data to NBD_CMD_READ after structured replies were negotiated")
		}
		if err := c.readData(r, req, 0, uint64(req.length)); err != nil {
			return err
		}
	case cmdBlockStatus:
		return protocolError("simple reply to NBD_CMD_BLOCK_STATUS")
	}
	c.complete(req, nil)
	return nil
}

// structuredChunk handles a structured reply chunk whose magic is already
// in hdr[:4].
func (c *Client) structuredChunk(r io.Reader, hdr []byte) error {
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return err
	}
	if !c.info.structured {
		return protocolError("structured reply without negotiation")
	}
	flags := binary.BigEndian.Uint16(hdr[4:])
	typ := binary.BigEndian.Uint16(hdr[6:])
	cookie := binary.BigEndian.Uint64(hdr[8:])
	length := binary.BigEndian.Uint32(hdr[16:])
	req := c.lookup(cookie)
	if req == nil {
		return protocolError("reply chunk for cookie %d not in flight", cookie)
	}
	var err error
	switch typ {
	case chunkNone:
		if length != 0 || flags&replyFlagDone == 0 {
			return protocolError("NBD_REPLY_TYPE_NONE with length %d, flags %#x", length, flags)
		}
	case chunkOffsetData:
		err = c.offsetData(r, req, length)
	case chunkOffsetHole:
		err = c.offsetHole(r, req, length)
	case chunkBlockStatus:
		err = c.blockStatus(r, req, length)
	default:
		if typ&chunkErrBit == 0 {
			return protocolError("unknown reply chunk type %d", typ)
		}
		err = c.errorChunk(r, req, typ, length)
	}
	if err != nil {
		return err
	}
	if flags&replyFlagDone != 0 {
		c.finish(req)
	}
	return nil
}

// finish completes a structured reply after its final chunk.
func (c *Client) finish(req *request) {
	err := req.replyErr
	if err == nil && req.cmd == cmdRead && req.got != uint64(req.length) {
		err = protocolError("server sent %d of %d bytes", req.got, req.length)
	}
	if err == nil && req.cmd == cmdBlockStatus && len(req.status) == 0 {
		err = protocolError("server sent no block status")
	}
	c.complete(req, err)
}

// inRequest reports whether [off, off+n) lies within req's range.
func inRequest(req *request, off, n uint64) bool {
	return off >= req.off && n <= uint64(req.length) && off-req.off <= uint64(req.length)-n
}

func (c *Client) offsetData(r io.Reader, req *request, length uint32) error {
	if req.cmd != cmdRead {
		return protocolError("NBD_REPLY_TYPE_OFFSET_DATA to %s", commandName(req.cmd))
	}
	if length <= 8 || length-8 > req.length {
		return protocolError("NBD_REPLY_TYPE_OFFSET_DATA of %d bytes for a read of %d", length, req.length)
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	off, n := binary.BigEndian.Uint64(b[:]), uint64(length-8)
	if !inRequest(req, off, n) {
		return protocolError("data chunk at %d+%d outside read of %d+%d", off, n, req.off, req.length)
	}
	if err := c.readData(r, req, off-req.off, n); err != nil {
		return err
	}
	req.got += n
	return nil
}

func (c *Client) offsetHole(r io.Reader, req *request, length uint32) error {
	if req.cmd != cmdRead {
		return protocolError("NBD_REPLY_TYPE_OFFSET_HOLE to %s", commandName(req.cmd))
	}
	if length != 12 {
		return protocolError("NBD_REPLY_TYPE_OFFSET_HOLE of %d bytes", length)
	}
	var b [12]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	off, n := binary.BigEndian.Uint64(b[:]), uint64(binary.BigEndian.Uint32(b[8:]))
	if n == 0 || !inRequest(req, off, n) {
		return protocolError("hole chunk at %d+%d outside read of %d+%d", off, n, req.off, req.length)
	}
	if req.stream != nil {
		if err := req.stream.hand(nil, off-req.off, n); err != nil {
			return err
		}
	} else {
		req.bufMu.Lock()
		if !req.canceled.Load() {
			clear(req.buf[off-req.off : off-req.off+n])
		}
		req.bufMu.Unlock()
	}
	req.got += n
	return nil
}

// readData reads n bytes of READ data into req.buf at i, or discards them
// when the request was abandoned. A streamed request's data is handed to
// its ReadTo instead.
func (c *Client) readData(r io.Reader, req *request, i, n uint64) error {
	if req.stream != nil {
		return req.stream.hand(r, i, n)
	}
	req.bufMu.Lock()
	defer req.bufMu.Unlock()
	if req.canceled.Load() {
		_, err := io.CopyN(io.Discard, r, int64(n))
		return err
	}
	_, err := io.ReadFull(r, req.buf[i:i+n])
	return err
}

func (c *Client) blockStatus(r io.Reader, req *request, length uint32) error {
	if req.cmd != cmdBlockStatus {
		return protocolError("NBD_REPLY_TYPE_BLOCK_STATUS to %s", commandName(req.cmd))
	}
	if length < 12 || (length-4)%8 != 0 || length > maxStatusPayload {
		return protocolError("NBD_REPLY_TYPE_BLOCK_STATUS of %d bytes", length)
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return err
	}
	id := binary.BigEndian.Uint32(b[:4])
	if _, ok := c.contextByID[id]; !ok {
		return protocolError("block status for unknown meta context id %d", id)
	}
	if _, ok := req.status[id]; ok {
		return protocolError("block status for meta context id %d sent twice", id)
	}
	count := int(length-4) / 8
	descs := make([]desc, 0, min(count, 1024))
	for range count {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return err
		}
		d := desc{length: binary.BigEndian.Uint32(b[:4]), flags: binary.BigEndian.Uint32(b[4:])}
		if d.length == 0 {
			return protocolError("block status descriptor of length 0")
		}
		descs = append(descs, d)
	}
	if req.status == nil {
		req.status = make(map[uint32][]desc)
	}
	req.status[id] = descs
	return nil
}

func (c *Client) errorChunk(r io.Reader, req *request, typ uint16, length uint32) error {
	if length < 6 || length > maxErrorPayload {
		return protocolError("error chunk of %d bytes", length)
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	errno := binary.BigEndian.Uint32(b)
	msgLen := uint32(binary.BigEndian.Uint16(b[4:]))
	if msgLen > length-6 {
		return protocolError("error message of %d bytes in a chunk of %d", msgLen, length)
	}
	switch typ {
	case chunkError:
		if length != 6+msgLen {
			return protocolError("NBD_REPLY_TYPE_ERROR of %d bytes with a message of %d", length, msgLen)
		}
	case chunkErrorOffset:
		if length != 6+msgLen+8 {
			return protocolError("NBD_REPLY_TYPE_ERROR_OFFSET of %d bytes with a message of %d", length, msgLen)
		}
		off := binary.BigEndian.Uint64(b[6+msgLen:])
		if !inRequest(req, off, 1) {
			return protocolError("error offset %d outside request %d+%d", off, req.off, req.length)
		}
	}
	if errno == 0 {
		return protocolError("error chunk with errno 0")
	}
	if req.replyErr == nil {
		req.replyErr = &Error{Errno: errno, Message: printable(b[6 : 6+msgLen])}
	}
	return nil
}
