package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
)

// noSpaceBody is what the daemon answers when nbdkit's full plugin refuses
// a write or a zero.
const noSpaceBody = "No space left on the storage: NBD server error ENOSPC (no space left on device)\n"

// traced is one response and whether its request went over a connection
// used before.
type traced struct {
	code   int
	body   string
	close  bool // the response asked to close the connection
	reused bool
}

func (r traced) String() string {
	return fmt.Sprintf("%d %q (close %v, reused %v)", r.code, r.body, r.close, r.reused)
}

// doTraced sends a request with a 60 s limit; code is -1 when the
// connection was cut before a response came.
func doTraced(t *testing.T, c *http.Client, method, url string, body []byte, headers ...string) traced {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var res traced
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { res.reused = info.Reused },
	})
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			t.Fatalf("%s %s did not finish in 60 s", method, url)
		}
		t.Logf("%s: %v", method, err)
		res.code = -1
		return res
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	res.code, res.body, res.close = resp.StatusCode, string(data), resp.Close
	return res
}

// TestNoSpace writes to a ticket on nbdkit's full plugin (every write and
// zero fails with ENOSPC), directly and through a proxy daemon: PUT and
// PATCH zero get 507 with a message that says the storage is full and
// names neither the ticket nor the NBD socket. The connection stays
// usable: the daemon reads and throws away the rest of a PUT body.
func TestNoSpace(t *testing.T) {
	const size = 8 << 20
	url := startNBDKit(t, "full", fmt.Sprint("size=", size))
	host, proxy := startChain(t, "full-ticket-00001", url, size) // 256 KiB buffers
	sock := strings.TrimPrefix(url, "nbd:unix:")

	for _, d := range []struct {
		name string
		e    *daemonEnv
	}{{"direct", host}, {"proxy", proxy}} {
		image := d.e.base + "/images/full-ticket-00001"
		t.Run(d.name, func(t *testing.T) {
			tests := []struct {
				name    string
				method  string
				body    []byte
				headers []string
			}{
				{"zero", "PATCH", []byte(`{"op": "zero", "offset": 0, "size": 4194304}`), []string{"Content-Type: application/json"}},
				{"zero and flush", "PATCH", []byte(`{"op": "zero", "offset": 1048576, "size": 65536, "flush": true}`), nil},
				{"small put", "PUT", pattern(64<<10, 1), []string{"Content-Range: bytes 65536-131071/*"}},
				{"small put and flush", "PUT", pattern(4096, 2), nil},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					d.e.https.Transport.(*http.Transport).CloseIdleConnections()
					got := doTraced(t, d.e.https, tc.method, image, tc.body, tc.headers...)
					if got.code != http.StatusInsufficientStorage || got.body != noSpaceBody || got.close {
						t.Fatalf("%s = %v, want 507 %q keeping the connection", tc.method, got, noSpaceBody)
					}
					// The next request goes over the same connection.
					next := doTraced(t, d.e.https, "GET", image, nil, "Range: bytes=0-4095")
					if next.code != http.StatusPartialContent || !next.reused {
						t.Errorf("GET after the 507 = %v, want 206 on the same connection", next)
					}
				})
			}
			// The daemon stops writing at the first failed write, reads
			// the rest of the body (at most 128 MiB) and answers 507,
			// keeping the connection.
			t.Run("large put", func(t *testing.T) {
				d.e.https.Transport.(*http.Transport).CloseIdleConnections()
				got := doTraced(t, d.e.https, "PUT", image+"?flush=n", pattern(size, 3))
				if got.code != http.StatusInsufficientStorage || got.body != noSpaceBody || got.close {
					t.Errorf("PUT = %v, want 507 %q keeping the connection", got, noSpaceBody)
				}
				next := doTraced(t, d.e.https, "GET", image, nil, "Range: bytes=0-4095")
				if next.code != http.StatusPartialContent || !next.reused {
					t.Errorf("GET after the 507 = %v, want 206 on the same connection", next)
				}
			})
		})
	}

	for _, d := range []struct {
		name string
		e    *daemonEnv
	}{{"host", host}, {"proxy", proxy}} {
		logs := d.e.logs.String()
		if !strings.Contains(logs, "status=507") {
			t.Errorf("%s log has no 507:\n%s", d.name, logs)
		}
		if strings.Contains(logs, "full-ticket-00001") {
			t.Errorf("%s log names the ticket id:\n%s", d.name, logs)
		}
	}
	if !strings.Contains(host.logs.String(), sock) {
		t.Errorf("host log does not name the NBD socket %s:\n%s", sock, host.logs.String())
	}
}

// TestNoSpaceFlush flushes an export whose writes succeed and whose flush
// fails with ENOSPC (an nbdkit eval script), directly and through a proxy
// daemon: PATCH flush and PUT with flush=y get 507, and the connection
// stays usable.
func TestNoSpaceFlush(t *testing.T) {
	const size = 8 << 20
	url := startNBDKit(t, "eval", "get_size=echo 8M",
		"pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
		"pwrite=cat >/dev/null", "can_write=exit 0", "can_flush=exit 0",
		"flush=echo ENOSPC storage full >&2; exit 1")
	host, proxy := startChain(t, "flush-ticket-0001", url, size)
	for _, d := range []struct {
		name string
		e    *daemonEnv
	}{{"direct", host}, {"proxy", proxy}} {
		image := d.e.base + "/images/flush-ticket-0001"
		t.Run(d.name, func(t *testing.T) {
			// A write without flush succeeds.
			if got := doTraced(t, d.e.https, "PUT", image+"?flush=n", pattern(4096, 1)); got.code != http.StatusOK {
				t.Fatalf("PUT flush=n = %v, want 200", got)
			}
			tests := []struct {
				name   string
				method string
				url    string
				body   []byte
			}{
				{"patch flush", "PATCH", image, []byte(`{"op": "flush"}`)},
				{"put flush", "PUT", image + "?flush=y", pattern(4096, 2)},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					got := doTraced(t, d.e.https, tc.method, tc.url, tc.body)
					t.Logf("%s: %v", tc.method, got)
					if got.code != http.StatusInsufficientStorage || got.body != noSpaceBody || got.close {
						t.Fatalf("%s = %v, want 507 %q keeping the connection", tc.method, got, noSpaceBody)
					}
					next := doTraced(t, d.e.https, "GET", image, nil, "Range: bytes=0-4095")
					if next.code != http.StatusPartialContent || !next.reused {
						t.Errorf("GET after the 507 = %v, want 206 on the same connection", next)
					}
				})
			}
		})
	}
}

// TestNoSpaceMessage checks the client message of 507 for the errors the
// backends return.
func TestNoSpaceMessage(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nbd", fmt.Errorf("writing 65536 bytes at 0: %w", fmt.Errorf("writing nbd:unix:/s: %w", fmt.Errorf("%w: %w", backend.ErrNoSpace, io.ErrShortWrite))),
			"No space left on the storage: short write"},
		{"bare sentinel", fmt.Errorf("zeroing: %w", backend.ErrNoSpace), "No space left on the storage"},
		{"two lines", fmt.Errorf("%w: %w", backend.ErrNoSpace, fmt.Errorf("disk full\nsecond line")),
			"No space left on the storage: disk full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			he := toHTTPError(tc.err)
			if he.Code != http.StatusInsufficientStorage || he.Msg != tc.want {
				t.Errorf("toHTTPError(%v) = %d %q, want 507 %q", tc.err, he.Code, he.Msg, tc.want)
			}
		})
	}
}
