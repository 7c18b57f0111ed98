package http

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/imageio/imageio/internal/testutil"
)

// countConn counts the writes made to a connection.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestTLSConnBatchesRecords sends a body through tlsConn to a real TLS
// server and checks that it arrives whole and that its records left in
// one write per 256 KiB chunk.
func TestTLSConnBatchesRecords(t *testing.T) {
	files := testutil.NewTLS(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	body := bytes.Repeat([]byte("0123456789abcdef"), (1<<20+17)/16)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{files.Cert}})
		b, _ := io.ReadAll(io.LimitReader(tc, int64(len(body))))
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countConn{Conn: raw}
	conn, err := dialTLS(context.Background(), cc, &tls.Config{RootCAs: files.Pool}, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	handshake := cc.writes.Load()
	n, err := conn.(io.ReaderFrom).ReadFrom(bytes.NewReader(body))
	if err != nil || n != int64(len(body)) {
		t.Fatalf("ReadFrom = %d, %v; want %d, nil", n, err, len(body))
	}
	if b := <-got; !bytes.Equal(b, body) {
		t.Fatalf("server got %d bytes, want the %d sent", len(b), len(body))
	}
	chunks := int64((len(body) + tlsChunk - 1) / tlsChunk)
	if w := cc.writes.Load() - handshake; w != chunks {
		t.Errorf("body took %d writes, want %d (one per %d bytes)", w, chunks, tlsChunk)
	}
}
