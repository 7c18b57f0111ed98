package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// fuzzClient returns a client with no connection and a fixed set of
// requests in flight, for feeding reply streams to readReplies.
func fuzzClient(structured bool) (*Client, []*request) {
	c := newClient(nil, nil, exportInfo{
		size:       1 << 30,
		blockSize:  defaultBlockSize,
		structured: structured,
		contexts:   map[string]uint32{ContextBaseAllocation: 1, ContextAllocationDepth: 2},
	})
	reqs := []*request{
		{cmd: cmdRead, off: 0, length: 4096, buf: make([]byte, 4096)},
		{cmd: cmdRead, off: 8192, length: 100, buf: make([]byte, 100)},
		{cmd: cmdWrite, off: 0, length: 512},
		{cmd: cmdBlockStatus, off: 0, length: 1 << 20},
		{cmd: cmdFlush},
	}
	reqs[1].canceled.Store(true)
	for i, r := range reqs {
		r.cookie = uint64(i + 1)
		r.done = make(chan struct{})
		c.pending[r.cookie] = r
	}
	c.cookie = uint64(len(reqs))
	return c, reqs
}

func replySeeds() [][]byte {
	var seeds [][]byte
	data := binary.BigEndian.AppendUint64(nil, 0)
	data = append(data, pattern(0, 4096)...)
	hole := binary.BigEndian.AppendUint64(nil, 8192)
	hole = binary.BigEndian.AppendUint32(hole, 100)
	status := []byte{0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 3}
	depth := []byte{0, 0, 0, 2, 0, 16, 0, 0, 0, 0, 0, 1}
	errp := binary.BigEndian.AppendUint32(nil, EIO)
	errp = binary.BigEndian.AppendUint16(errp, 3)
	errp = append(errp, "bad"...)
	errOff := binary.BigEndian.AppendUint64(append([]byte(nil), errp...), 10)

	var s []byte
	s = append(s, 1)
	s = append(s, chunkBytes(replyFlagDone, chunkOffsetData, 1, data)...)
	s = append(s, chunkBytes(replyFlagDone, chunkOffsetHole, 2, hole)...)
	s = append(s, chunkBytes(replyFlagDone, chunkNone, 3, nil)...)
	s = append(s, chunkBytes(0, chunkBlockStatus, 4, status)...)
	s = append(s, chunkBytes(replyFlagDone, chunkBlockStatus, 4, depth)...)
	s = append(s, simpleBytes(0, 5, nil)...)
	seeds = append(seeds, s)

	s = []byte{1}
	s = append(s, chunkBytes(0, chunkError, 1, errp)...)
	s = append(s, chunkBytes(replyFlagDone, chunkErrorOffset, 1, errOff)...)
	s = append(s, simpleBytes(ENOSPC, 3, nil)...)
	seeds = append(seeds, s)

	s = []byte{0}
	s = append(s, simpleBytes(0, 1, pattern(0, 4096))...)
	s = append(s, simpleBytes(0, 2, pattern(8192, 100))...)
	s = append(s, simpleBytes(EPERM, 3, nil)...)
	seeds = append(seeds, s)
	return seeds
}

func FuzzReplyParser(f *testing.F) {
	for _, s := range replySeeds() {
		f.Add(s)
	}
	f.Add([]byte{1, 0x67, 0x44, 0x66, 0x98})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		c, reqs := fuzzClient(data[0]&1 == 1)
		err := c.readReplies(bytes.NewReader(data[1:]))
		if err == nil {
			t.Fatal("readReplies returned nil")
		}
		c.fail(err)
		for _, r := range reqs {
			<-r.done
			if r.cmd == cmdBlockStatus && r.err == nil {
				exts, err := mergeStatus(0, int64(r.length), c.statusContexts(), r.status)
				if err != nil {
					continue
				}
				pos := int64(0)
				for _, e := range exts {
					if e.Start != pos || e.Length <= 0 || e.End() > int64(r.length) {
						t.Fatalf("bad extents %+v", exts)
					}
					pos = e.End()
				}
			}
		}
	})
}

func TestReplySeeds(t *testing.T) {
	// The seeds are valid streams: every request completes as expected.
	seeds := replySeeds()
	c, reqs := fuzzClient(true)
	err := c.readReplies(bytes.NewReader(seeds[0][1:]))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("readReplies = %v, want EOF", err)
	}
	for _, r := range reqs {
		select {
		case <-r.done:
		default:
			t.Fatalf("request %d not completed", r.cookie)
		}
		if r.err != nil {
			t.Fatalf("request %d: %v", r.cookie, r.err)
		}
	}
	if !bytes.Equal(reqs[0].buf, pattern(0, 4096)) {
		t.Error("read data not delivered")
	}
	exts, err := mergeStatus(0, 1<<20, c.statusContexts(), reqs[3].status)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{Start: 0, Length: 1 << 19}, {Start: 1 << 19, Length: 1 << 19, Zero: true}}
	if len(exts) != 2 || exts[0] != want[0] || exts[1] != want[1] {
		t.Fatalf("extents %+v, want %+v", exts, want)
	}
}

// handshakeStream returns what a server sends for a full handshake with
// structured replies, two meta contexts and block size information.
func handshakeStream() []byte {
	var b []byte
	b = binary.BigEndian.AppendUint64(b, magicNBD)
	b = binary.BigEndian.AppendUint64(b, magicIHaveOpt)
	b = binary.BigEndian.AppendUint16(b, flagFixedNewstyle|flagNoZeroes)
	reply := func(opt, typ uint32, data []byte) {
		b = binary.BigEndian.AppendUint64(b, magicOptReply)
		b = binary.BigEndian.AppendUint32(b, opt)
		b = binary.BigEndian.AppendUint32(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	reply(optStructuredReply, repAck, nil)
	reply(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 1}, ContextBaseAllocation...))
	reply(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 2}, ContextAllocationDepth...))
	reply(optSetMetaContext, repAck, nil)
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, 1<<30)
	info = binary.BigEndian.AppendUint16(info, uint16(FlagHasFlags|FlagSendFlush))
	reply(optGo, repInfo, info)
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 1)
	bs = binary.BigEndian.AppendUint32(bs, 4096)
	bs = binary.BigEndian.AppendUint32(bs, 32<<20)
	reply(optGo, repInfo, bs)
	reply(optGo, repInfo, []byte{0, 1, 'n', 'a', 'm', 'e'})
	reply(optGo, repAck, nil)
	return b
}

func TestHandshakeStream(t *testing.T) {
	info, err := negotiate(bytes.NewReader(handshakeStream()), io.Discard, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info.size != 1<<30 || !info.structured || len(info.contexts) != 2 || info.blockSize.Max != 32<<20 {
		t.Fatalf("negotiate = %+v", info)
	}
}

func FuzzOptionReply(f *testing.F) {
	hs := handshakeStream()
	f.Add(byte(0), hs)
	f.Add(byte(1), hs)
	f.Add(byte(2), hs[:40])
	bad := append([]byte(nil), hs...)
	bad[len(bad)-1] ^= 0xff
	f.Add(byte(0), bad)
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		opts := Options{}
		switch mode % 4 {
		case 1:
			opts.DirtyBitmap = true
		case 2:
			opts.MetaContexts = []string{ContextBaseAllocation, DirtyBitmapPrefix + "b"}
		case 3:
			opts.MetaContexts = []string{}
		}
		info, err := negotiate(bytes.NewReader(data), io.Discard, "export", opts)
		if err != nil {
			return
		}
		if info.size < 0 || info.blockSize.Min == 0 || info.blockSize.Max < info.blockSize.Min {
			t.Fatalf("negotiate accepted %+v", info)
		}
		if (opts.DirtyBitmap || mode%4 == 2) && info.bitmap == "" {
			t.Fatalf("negotiate succeeded without the bitmap: %+v", info)
		}
	})
}
