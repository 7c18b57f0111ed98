package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"

	"github.com/imageio/imageio/backend"
)

const (
	// streamStep is the size of the target's requests when a download
	// streams into it: a local qemu-nbd spends far less per byte on large
	// requests.
	streamStep = 16 << 20
	// streamRelay is the part of the worker's buffer a stream moves
	// through.
	streamRelay = 256 << 10
)

// streamDownload copies [off, off+length) from src, whose retries resume
// a GET after the bytes already taken, into dst as one stream of large
// requests. Every GET attempt's body is read by the same stream, so a
// retried GET continues the request it broke off instead of cutting it.
func (c *copier) streamDownload(ctx context.Context, src backend.StreamReader, dst backend.ChunkWriter, off, length int64, buf []byte) error {
	ch := newBodyChain()
	readDone := make(chan error, 1)
	go func() {
		err := src.ReadTo(ctx, ch, off, length)
		ch.end()
		readDone <- err
	}()
	werr := dst.WriteStream(ctx, ch, off, length, streamStep, buf[:min(len(buf), streamRelay)], c.progress)
	ch.stop(werr)
	rerr := <-readDone
	switch {
	case errors.Is(werr, errSourceFailed) && rerr != nil:
		return rerr // why the GETs failed
	case werr != nil:
		return werr
	}
	return rerr
}

// errSourceFailed is what the stream reads once every GET attempt failed.
var errSourceFailed = errors.New("the download's source failed")

// bodyChain is the reader of one stream over the bodies of several GET
// attempts: ReadTo hands each attempt's body to ReadFrom, which returns
// when the stream has read that body to its end or its error (so that
// ReadTo can retry), or when the stream is done.
type bodyChain struct {
	bodies chan io.Reader
	taken  chan struct{} // the stream is done with the current body

	endOnce sync.Once
	ended   chan struct{} // ReadTo returned

	stopOnce sync.Once
	stopped  chan struct{} // the stream returned; stopErr is set
	stopErr  error

	cur io.Reader // the body being read (stream side only)
}

func newBodyChain() *bodyChain {
	return &bodyChain{
		bodies:  make(chan io.Reader),
		taken:   make(chan struct{}),
		ended:   make(chan struct{}),
		stopped: make(chan struct{}),
	}
}

// ReadFrom gives r to the stream and waits until the stream is done with
// it. A failure of r is not returned: ReadTo sees it on its own counting
// reader, and retries. The stream's failure is returned.
func (ch *bodyChain) ReadFrom(r io.Reader) (int64, error) {
	select {
	case ch.bodies <- r:
	case <-ch.stopped:
		return 0, ch.stopErr
	}
	select {
	case <-ch.taken:
		return 0, nil
	case <-ch.stopped:
		return 0, ch.stopErr
	}
}

// Write gives p to the stream like a body (ReadTo uses ReadFrom).
func (ch *bodyChain) Write(p []byte) (int, error) {
	if _, err := ch.ReadFrom(bytes.NewReader(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read reads the current body, waiting for the next one when it ends.
func (ch *bodyChain) Read(p []byte) (int, error) {
	for {
		if ch.cur == nil {
			select {
			case ch.cur = <-ch.bodies:
			case <-ch.ended:
				return 0, errSourceFailed
			}
		}
		n, err := ch.cur.Read(p)
		if err != nil {
			ch.cur = nil
			ch.taken <- struct{}{}
		}
		if n > 0 || err == nil {
			return n, nil
		}
	}
}

// end records that ReadTo returned: no more bodies come.
func (ch *bodyChain) end() {
	ch.endOnce.Do(func() { close(ch.ended) })
}

// stop records that the stream returned with err, releasing ReadFrom.
// After a stream that read all it wanted (err nil) ReadTo has nothing
// left to read, and ReadFrom returns nil.
func (ch *bodyChain) stop(err error) {
	ch.stopOnce.Do(func() {
		ch.stopErr = err
		close(ch.stopped)
	})
}
