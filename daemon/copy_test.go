package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/internal/testutil"
)

// startNBDKit runs nbdkit with args (filters, plugin, parameters) on a
// Unix socket and returns its URL; it is stopped when the test ends.
func startNBDKit(t testing.TB, args ...string) string {
	t.Helper()
	return "nbd:unix:" + testutil.StartNBDKit(t, args...)
}

// putWithin sends a PUT and fails the test if it takes longer than 60 s,
// so a hung pipeline shows as a failure, not a stuck test.
func putWithin(t *testing.T, c *http.Client, url string, body io.Reader, headers ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PUT", url, body)
	if err != nil {
		t.Fatal(err)
	}
	if br, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(br.Len())
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PUT %s did not finish in 60 s", url)
	}
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// TestPutNBDWriteFailsMidway writes an image whose middle megabyte the
// NBD server refuses, with several writes in flight (the server delays
// each): the client gets an error, nothing hangs, and the data before the
// refused range was written.
func TestPutNBDWriteFailsMidway(t *testing.T) {
	const size = 16 << 20
	url := startNBDKit(t, "--filter=protect", "--filter=delay", "memory", fmt.Sprint("size=", size),
		"protect=8388608-9437183", "wdelay=5ms")
	e := startDaemon(t, nil) // 256 KiB buffers
	e.addTicket(t, "fail-ticket-00001", url, size, `["read", "write"]`)
	data := pattern(size, 5)
	code, body := putWithin(t, e.https, e.base+"/images/fail-ticket-00001?flush=n", bytes.NewReader(data))
	// The daemon answers 500 and closes the connection without reading
	// the rest of the body, so the client may see the reset instead.
	if code != http.StatusInternalServerError && code != -1 {
		t.Fatalf("PUT = %d %q, want 500 or a cut connection", code, body)
	}
	if !strings.Contains(e.logs.String(), "EPERM") {
		t.Errorf("daemon log has no EPERM write error:\n%s", e.logs.String())
	}
	req, _ := http.NewRequest("GET", e.base+"/images/fail-ticket-00001", nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=0-%d", 8<<20-1))
	resp, err := e.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("GET = %d, %v", resp.StatusCode, err)
	}
	if !bytes.Equal(got, data[:8<<20]) {
		t.Error("data before the refused range was not written")
	}
}

// TestPutNBDShortBody sends bodies that end early over the local socket,
// with writes in flight, to a daemon writing 1 MiB NBD requests: the
// client gets 400 with the byte count written, the requests that arrived
// whole are written, and nothing of the one cut short. The body ends once
// before anything of the fourth request went out (the connection to the
// server stays usable) and once after part of it did (the connection is
// broken; the next request opens a new one).
func TestPutNBDShortBody(t *testing.T) {
	const size, whole = 8 << 20, 3 << 20
	cuts := []int{whole + 12345, whole + relaySize + 4096}
	urls := make([]string, len(cuts))
	for i := range cuts {
		urls[i] = startNBDKit(t, "--filter=delay", "memory", fmt.Sprint("size=", size), "wdelay=5ms")
	}
	// Started after the servers, so stopped before them.
	e := startDaemon(t, func(c *config.Config) { c.BackendNBD.BufferSize = 1 << 20 })
	for i, sent := range cuts {
		url := urls[i]
		// A write-only ticket reports transferred; a second one reads.
		id, rid := fmt.Sprintf("short-ticket-000%d", i), fmt.Sprintf("short-reader-000%d", i)
		e.addTicket(t, id, url, size, `["write"]`)
		e.addTicket(t, rid, url, size, `["read"]`)
		c, err := net.Dial("unix", e.d.LocalSocket())
		if err != nil {
			t.Fatal(err)
		}
		data := pattern(sent, byte(i+7))
		go func() {
			fmt.Fprintf(c, "PUT /images/%s?flush=n HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", id, size)
			c.Write(data)
			c.(*net.UnixConn).CloseWrite()
		}()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		out, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("sent %d: reading response: %v (%q)", sent, err, out)
		}
		want := fmt.Sprintf("Requested %d bytes, available %d bytes", size, whole)
		if !strings.HasPrefix(string(out), "HTTP/1.1 400 ") || !strings.Contains(string(out), want) {
			t.Fatalf("sent %d: response = %q, want 400 with %q", sent, out, want)
		}
		tk, err := e.d.Tickets.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if st := tk.Status(); st.Transferred == nil || *st.Transferred != whole {
			t.Errorf("sent %d: transferred = %v, want %d", sent, st.Transferred, whole)
		}
		code, got := get(t, e.https, e.base+"/images/"+rid)
		if code != http.StatusOK || len(got) != size {
			t.Fatalf("sent %d: GET = %d, %d bytes", sent, code, len(got))
		}
		if !bytes.Equal(got[:whole], data[:whole]) {
			t.Errorf("sent %d: the requests that arrived whole were not written", sent)
		}
		if !bytes.Equal(got[whole:], make([]byte, size-whole)) {
			t.Errorf("sent %d: data written past the last whole request", sent)
		}
	}
}

// TestCancelDuringNBDUpload cancels a ticket while a PUT has writes in
// flight to a slow NBD server: the cancel finishes, the client gets 403
// or a cut connection, and nothing hangs.
func TestCancelDuringNBDUpload(t *testing.T) {
	const size = 32 << 20
	url := startNBDKit(t, "--filter=delay", "memory", fmt.Sprint("size=", size), "wdelay=50ms")
	e := startDaemon(t, nil)
	e.addTicket(t, "cancel-ticket-001", url, size, `["read", "write"]`)
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		code, body := putWithin(t, e.https, e.base+"/images/cancel-ticket-001?flush=n", bytes.NewReader(pattern(size, 3)))
		done <- result{code, body}
	}()
	tk, err := e.d.Tickets.Get("cancel-ticket-001")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an active transfer", func() bool { return tk.Status().Active })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.ctl.DelTicket(ctx, "cancel-ticket-001"); err != nil {
		t.Fatalf("DelTicket: %v", err)
	}
	r := <-done
	if r.code != http.StatusForbidden && r.code != -1 {
		t.Errorf("canceled upload = %d %q, want 403 or a cut connection", r.code, r.body)
	}
	if tk.Status().Active {
		t.Error("transfer still active after the cancel")
	}
}

// TestCancelDuringNBDDownload deletes the ticket of a GET relayed from a
// slow NBD server: the response is cut short, the transfer ends, and the
// daemon serves the same export under a new ticket.
func TestCancelDuringNBDDownload(t *testing.T) {
	const size = 8 << 20
	url := startNBDKit(t, "--filter=delay", "pattern", fmt.Sprint("size=", size), "rdelay=50ms")
	e := startDaemon(t, nil)
	e.addTicket(t, "cancel-ticket-002", url, size, `["read"]`)
	done := make(chan int64, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/images/cancel-ticket-002", nil)
		resp, err := e.https.Do(req)
		if err != nil {
			done <- -1
			return
		}
		defer resp.Body.Close()
		n, _ := io.Copy(io.Discard, resp.Body)
		done <- n
	}()
	tk, err := e.d.Tickets.Get("cancel-ticket-002")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an active transfer", func() bool { return tk.Status().Active })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.ctl.DelTicket(ctx, "cancel-ticket-002"); err != nil {
		t.Fatalf("DelTicket: %v", err)
	}
	if n := <-done; n >= size {
		t.Errorf("canceled download sent all %d bytes", n)
	}
	if tk.Status().Active {
		t.Error("transfer still active after the cancel")
	}
	e.addTicket(t, "after-cancel-0002", url, size, `["read"]`)
	code, body := get(t, e.https, e.base+"/images/after-cancel-0002")
	if code != http.StatusOK || len(body) != size {
		t.Fatalf("GET after the cancel = %d, %d bytes", code, len(body))
	}
	for off := 0; off < size; off += 8 {
		if binary.BigEndian.Uint64(body[off:]) != uint64(off) {
			t.Fatalf("GET after the cancel: wrong data at %d", off)
		}
	}
}

// gateBackend fails the write at failAt once the writes after it have
// finished, so writes complete out of order and one fails.
type gateBackend struct {
	backendIface
	failAt int64
	later  chan struct{} // closed when a write after failAt finished
	once   sync.Once
}

func (b *gateBackend) WriteAt(ctx context.Context, p []byte, off int64) error {
	switch {
	case off == b.failAt:
		select {
		case <-b.later:
		case <-time.After(10 * time.Second):
		}
		return errors.New("injected write error")
	case off > b.failAt:
		err := b.backendIface.WriteAt(ctx, p, off)
		b.once.Do(func() { close(b.later) })
		return err
	}
	return b.backendIface.WriteAt(ctx, p, off)
}

// TestPutTransferredOutOfOrder checks that a write that finishes after
// later ones and fails leaves transferred at the unbroken run before it.
func TestPutTransferredOutOfOrder(t *testing.T) {
	e := newEnv(t, envOptions{bufferSize: 64 << 10})
	img := &gateBackend{backendIface: mem.New(1 << 20), failAt: 128 << 10, later: make(chan struct{})}
	tk := e.addImage("write-ticket-0001", img, writeTicket)
	r := e.do("PUT", "/images/write-ticket-0001?flush=n", bytes.NewReader(pattern(512<<10, 1)))
	if r.code != http.StatusInternalServerError {
		t.Fatalf("PUT = %s, want 500", r)
	}
	st := tk.Status()
	if st.Transferred == nil || *st.Transferred != 128<<10 {
		t.Errorf("transferred = %v, want %d (the writes before the failed one)", st.Transferred, 128<<10)
	}
}

// TestCork checks that corked writes reach the socket whole and in order,
// with writes larger than the buffer and writes after uncork.
func TestCork(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	tc := &timeoutConn{Conn: a, timeout: 10 * time.Second}
	want := pattern(100000, 4)
	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(b)
		got <- data
	}()
	pieces := []int{10, 1000, 5000, 40000, 3, 20000}
	off := 0
	tc.cork(make([]byte, 0, 4096))
	for _, n := range pieces {
		if _, err := tc.Write(want[off : off+n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		off += n
	}
	if err := tc.uncork(); err != nil {
		t.Fatalf("uncork: %v", err)
	}
	if _, err := tc.Write(want[off:]); err != nil {
		t.Fatalf("Write after uncork: %v", err)
	}
	a.Close()
	if data := <-got; !bytes.Equal(data, want) {
		t.Errorf("socket got %d bytes, equal %v; want %d bytes", len(data), bytes.Equal(data, want), len(want))
	}
}

// TestCopyDepths writes and reads back an image whose size is not a
// multiple of the buffer, serially and pipelined, over TLS and plain HTTP.
func TestCopyDepths(t *testing.T) {
	for _, depth := range []int{1, 2, 3} {
		for _, plain := range []bool{false, true} {
			t.Run(fmt.Sprintf("depth=%d/plain=%v", depth, plain), func(t *testing.T) {
				e := newEnv(t, envOptions{bufferSize: 64 << 10, depth: depth, plain: plain})
				e.addImage("rw-ticket-000001", mem.New(1<<20),
					`{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["read", "write"], "timeout": 300, "transfer_id": "tr-ID"}`)
				want := pattern(1<<20-1000, byte(depth))
				if r := e.do("PUT", "/images/rw-ticket-000001", bytes.NewReader(want)); r.code != http.StatusOK {
					t.Fatalf("PUT = %s", r)
				}
				r := e.do("GET", "/images/rw-ticket-000001", nil, fmt.Sprintf("Range: bytes=0-%d", len(want)-1))
				if r.code != http.StatusPartialContent || !bytes.Equal(r.body, want) {
					t.Errorf("GET = %d, %d bytes, equal %v; want 206 and the data written", r.code, len(r.body), bytes.Equal(r.body, want))
				}
			})
		}
	}
}
