package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/checksum"
)

const (
	readTicket  = `{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["read"], "timeout": 300, "transfer_id": "tr-ID", "filename": "disk.raw"}`
	writeTicket = `{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["write"], "timeout": 300, "transfer_id": "tr-ID"}`
)

func TestOptions(t *testing.T) {
	e := newEnv(t, envOptions{maxConns: 4, unixSocket: "\x00/org/ovirt/imageio"})
	e.addImage("read-ticket-00001", newMem(pattern(1<<20, 1)), readTicket)
	e.addImage("write-ticket-0001", newMem(pattern(1<<20, 1)), writeTicket)
	tests := []struct {
		name, path, allow, body string
		code                    int
	}{
		{"any", "/images/*", "OPTIONS,GET,PUT,PATCH",
			`{"unix_socket": "\u0000/org/ovirt/imageio", "features": ["checksum", "extents", "flush", "zero"]}` + "\n", 200},
		{"read", "/images/read-ticket-00001", "OPTIONS,GET",
			`{"unix_socket": "\u0000/org/ovirt/imageio", "features": ["checksum", "extents"], "max_readers": 4, "max_writers": 4}` + "\n", 200},
		{"write", "/images/write-ticket-0001", "OPTIONS,GET,PUT,PATCH",
			`{"unix_socket": "\u0000/org/ovirt/imageio", "features": ["checksum", "extents", "flush", "zero"], "max_readers": 4, "max_writers": 4}` + "\n", 200},
		{"missing", "/images/nope", "", "You are not allowed to access this resource: No such ticket nope\n", 403},
		{"empty id", "/images/", "", "Ticket id is required\n", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("OPTIONS", tc.path, nil)
			if r.code != tc.code {
				t.Fatalf("status %s, want %d", r, tc.code)
			}
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if diff := cmp.Diff(tc.body, string(r.body)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if r.code == 200 && r.header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", r.header.Get("Content-Type"))
			}
			if r.code == 403 && !r.close {
				t.Errorf("403 without Connection: close")
			}
		})
	}
	e2 := newEnv(t, envOptions{})
	e2.addImage("read-ticket-00001", mem.NewWithCaps(1<<20, backend.Caps{ReadOnly: true, MaxReaders: 8, MaxWriters: 1}), readTicket)
	r := e2.do("OPTIONS", "/images/read-ticket-00001", nil)
	if want := `{"features": ["checksum", "extents"], "max_readers": 8, "max_writers": 1}` + "\n"; string(r.body) != want {
		t.Errorf("without local service: %s, want %q", r, want)
	}
}

func TestGet(t *testing.T) {
	e := newEnv(t, envOptions{})
	data := pattern(1<<20, 3)
	e.addImage("read-ticket-00001", newMem(data), readTicket)
	// A ticket larger than its image: reads stop at the image end.
	e.addImage("big-ticket-000001", newMem(data[:4096]),
		`{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["read"], "timeout": 300}`)
	tests := []struct {
		name, path, rng string
		code            int
		want            []byte
		contentRange    string
	}{
		{"whole", "/images/read-ticket-00001", "", 200, data, ""},
		{"range", "/images/read-ticket-00001", "bytes=100-199", 206, data[100:200], "bytes 100-199/1048576"},
		{"open range", "/images/read-ticket-00001", "bytes=1048000-", 206, data[1048000:], "bytes 1048000-1048575/1048576"},
		{"past ticket", "/images/read-ticket-00001", "bytes=0-1048576", 416, []byte("Requested range out of allowed range\n"), "bytes */1048576"},
		{"past image", "/images/big-ticket-000001", "bytes=0-4096", 416, []byte("Requested more bytes than available: 4097 > 4096\n"), "bytes */4096"},
		{"image shorter", "/images/big-ticket-000001", "", 200, data[:4096], ""},
		{"suffix", "/images/read-ticket-00001", "bytes=-100", 416, []byte("suffix-byte-range-spec not supported yet\n"), ""},
		{"multiple", "/images/read-ticket-00001", "bytes=0-1,4-5", 416,
			[]byte("Cannot satisfy range 'bytes=0-1,4-5', invalid range or multiple ranges\n"), ""},
		{"first > last", "/images/read-ticket-00001", "bytes=5-4", 416, []byte("Cannot satisfy range 'bytes=5-4', first > last\n"), ""},
		{"missing", "/images/missing", "", 403, []byte("You are not allowed to access this resource: No such ticket missing\n"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.rng != "" {
				hdr = append(hdr, "Range: "+tc.rng)
			}
			r := e.do("GET", tc.path, nil, hdr...)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d (%.100q)", r.code, tc.code, r.body)
			}
			if !bytes.Equal(r.body, tc.want) {
				t.Errorf("body differs: got %d bytes %.80q, want %d bytes", len(r.body), r.body, len(tc.want))
			}
			if got := r.header.Get("Content-Range"); got != tc.contentRange {
				t.Errorf("Content-Range = %q, want %q", got, tc.contentRange)
			}
			if r.header.Get("Server") != "imageio/2.5.3" {
				t.Errorf("Server = %q", r.header.Get("Server"))
			}
			if r.code >= 400 && r.header.Get("Content-Type") != "text/plain; charset=UTF-8" {
				t.Errorf("error Content-Type = %q", r.header.Get("Content-Type"))
			}
		})
	}
	r := e.do("GET", "/images/read-ticket-00001?close=y", nil, "Range: bytes=0-9")
	if r.header.Get("Content-Disposition") != "attachment; filename=disk.raw" ||
		r.header.Get("Content-Type") != "application/octet-stream" || r.header.Get("Content-Length") != "10" {
		t.Errorf("headers = %v", r.header)
	}
}

func TestPut(t *testing.T) {
	e := newEnv(t, envOptions{})
	img := mem.New(1 << 20)
	e.addImage("write-ticket-0001", img, writeTicket)
	data := pattern(300000, 9)

	r := e.do("PUT", "/images/write-ticket-0001?flush=n", bytes.NewReader(data))
	if r.code != 200 || len(r.body) != 0 {
		t.Fatalf("PUT = %s", r)
	}
	r = e.do("PUT", "/images/write-ticket-0001", bytes.NewReader(data[:1000]), "Content-Range: bytes 500000-500999/*")
	if r.code != 200 {
		t.Fatalf("PUT with Content-Range = %s", r)
	}
	got := img.Bytes()
	if !bytes.Equal(got[:300000], data) || !bytes.Equal(got[500000:501000], data[:1000]) {
		t.Error("image content differs from what was written")
	}
	if img.Stats().Flushes != 1 {
		t.Errorf("flushes = %d, want 1 (flush=n, then the default flush=y)", img.Stats().Flushes)
	}

	tests := []struct {
		name   string
		path   string
		body   []byte
		header []string
		code   int
		msg    string
	}{
		{"past ticket", "/images/write-ticket-0001", data[:10], []string{"Content-Range: bytes 1048570-1048579/*"}, 416, "Requested range out of allowed range\n"},
		{"bad content range", "/images/write-ticket-0001", data[:10], []string{"Content-Range: bytes 9-0/*"}, 400, "Invalid Content-Range 'bytes 9-0/*', first > last\n"},
		{"bad flush", "/images/write-ticket-0001?flush=x", data[:10], nil, 400, "Unsupported value 'x' for 'flush', expecting one of ['n', 'y']\n"},
		{"read only ticket", "/images/read-ticket-00001", data[:10], nil, 403, ""},
	}
	e.addImage("read-ticket-00001", mem.New(1<<20), readTicket)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("PUT", tc.path, bytes.NewReader(tc.body), tc.header...)
			if r.code != tc.code {
				t.Fatalf("status %s, want %d", r, tc.code)
			}
			if tc.msg != "" && string(r.body) != tc.msg {
				t.Errorf("body = %q, want %q", r.body, tc.msg)
			}
		})
	}
	if got := img.Bytes(); !bytes.Equal(got[1048570:], make([]byte, 6)) {
		t.Error("rejected PUT wrote data")
	}
}

// rawRequest sends bytes over a new TLS connection and returns what the
// server answered until it closed the connection or the deadline.
func rawRequest(t *testing.T, e *env, req string, closeWrite bool) string {
	t.Helper()
	conn := dialRaw(t, e)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	out, _ := io.ReadAll(conn)
	return string(out)
}

func TestPutShortBody(t *testing.T) {
	e := newEnv(t, envOptions{plain: true, bufferSize: 4096})
	img := mem.New(1 << 20)
	e.addImage("write-ticket-0001", img, writeTicket)
	body := strings.Repeat("x", 10000)
	out := rawRequest(t, e, "PUT /images/write-ticket-0001 HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n"+body, true)
	if !strings.HasPrefix(out, "HTTP/1.1 400 ") || !strings.Contains(out, "Requested 20000 bytes, available 10000 bytes") {
		t.Errorf("response = %q", out)
	}
	got := img.Bytes()
	if !bytes.Equal(got[:10000], []byte(body)) {
		t.Error("bytes that arrived were not written")
	}
	if !bytes.Equal(got[10000:20000], make([]byte, 10000)) {
		t.Error("data written past what arrived")
	}
}

func TestPutNoContentLength(t *testing.T) {
	e := newEnv(t, envOptions{plain: true})
	e.addImage("write-ticket-0001", mem.New(1<<20), writeTicket)
	out := rawRequest(t, e, "PUT /images/write-ticket-0001 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false)
	if !strings.HasPrefix(out, "HTTP/1.1 400 ") || !strings.Contains(out, "Content-Length header is required\n") {
		t.Errorf("chunked PUT response = %q", out)
	}
	out = rawRequest(t, e, "PUT /images/write-ticket-0001 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false)
	if !strings.HasPrefix(out, "HTTP/1.1 400 ") || !strings.Contains(out, "Content-Length header is required\n") {
		t.Errorf("PUT without Content-Length response = %q", out)
	}
}

func TestPatch(t *testing.T) {
	e := newEnv(t, envOptions{})
	data := pattern(1<<20, 5)
	img := newMem(data)
	e.addImage("write-ticket-0001", img, writeTicket)
	e.addImage("read-ticket-00001", newMem(data), readTicket)
	tests := []struct {
		name, path, body string
		code             int
		msg              string
	}{
		{"zero", "/images/write-ticket-0001", `{"op": "zero", "offset": 4096, "size": 8192, "flush": true}`, 200, ""},
		{"zero default offset", "/images/write-ticket-0001", `{"op": "zero", "size": 100}`, 200, ""},
		{"flush", "/images/write-ticket-0001", `{"op": "flush", "offset": "ignored"}`, 200, ""},
		{"trim", "/images/write-ticket-0001", `{"op": "trim"}`, 400, "Unsupported value 'trim' for 'op', expecting one of ['flush', 'zero']\n"},
		{"no op", "/images/write-ticket-0001", `{}`, 400, "Missing required value for op\n"},
		{"no size", "/images/write-ticket-0001", `{"op": "zero"}`, 400, "Missing required value for 'size'\n"},
		{"size string", "/images/write-ticket-0001", `{"op": "zero", "size": "1"}`, 400, "Integer required '1'\n"},
		{"size bool", "/images/write-ticket-0001", `{"op": "zero", "size": true}`, 400, "Integer required True\n"},
		{"negative offset", "/images/write-ticket-0001", `{"op": "zero", "size": 1, "offset": -1}`, 400, "Invalid value -1 < 0\n"},
		{"flush not bool", "/images/write-ticket-0001", `{"op": "zero", "size": 1, "flush": 1}`, 400, "Boolean required 1\n"},
		{"past end", "/images/write-ticket-0001", `{"op": "zero", "size": 2, "offset": 1048575}`, 416, "Requested range out of allowed range\n"},
		{"bad json", "/images/write-ticket-0001", `{"op": `, 400, ""},
		{"not object", "/images/write-ticket-0001", `[1]`, 400, ""},
		{"read ticket", "/images/read-ticket-00001", `{"op": "flush"}`, 403, "You are not allowed to access this resource: Transfer=tr-read-ticket-00001 forbids write\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("PATCH", tc.path, strings.NewReader(tc.body))
			if r.code != tc.code {
				t.Fatalf("status %s, want %d", r, tc.code)
			}
			if tc.msg != "" && string(r.body) != tc.msg {
				t.Errorf("body = %q, want %q", r.body, tc.msg)
			}
		})
	}
	want := append([]byte(nil), data...)
	clear(want[:100])
	clear(want[4096 : 4096+8192])
	if !bytes.Equal(img.Bytes(), want) {
		t.Error("image content after zero differs")
	}
	if st := img.Stats(); st.Zeros != 2 || st.Flushes != 2 {
		t.Errorf("zeros %d flushes %d, want 2 and 2", st.Zeros, st.Flushes)
	}
}

func TestExtents(t *testing.T) {
	e := newEnv(t, envOptions{})
	data := make([]byte, 1<<20)
	copy(data[:mem.ChunkSize], pattern(mem.ChunkSize, 1))
	e.addImage("read-ticket-00001", newMem(data), readTicket)
	dirtyImg := mem.NewWithDataCaps(make([]byte, 1<<20), backend.Caps{Extents: []string{backend.ContextZero, backend.ContextDirty}, MaxReaders: 1, MaxWriters: 1})
	dirtyImg.WriteAt(t.Context(), pattern(4096, 2), 0)
	e.addImage("dirty-ticket-0001", dirtyImg,
		`{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["read"], "timeout": 300, "dirty": true}`)
	tests := []struct {
		name, path string
		code       int
		body       string
	}{
		{"zero", "/images/read-ticket-00001/extents", 200,
			`[{"start": 0, "length": 65536, "zero": false, "hole": false}, {"start": 65536, "length": 983040, "zero": true, "hole": true}]` + "\n"},
		{"explicit zero", "/images/read-ticket-00001/extents?context=zero", 200,
			`[{"start": 0, "length": 65536, "zero": false, "hole": false}, {"start": 65536, "length": 983040, "zero": true, "hole": true}]` + "\n"},
		{"dirty", "/images/dirty-ticket-0001/extents?context=dirty", 200,
			`[{"start": 0, "length": 65536, "dirty": true, "zero": false}, {"start": 65536, "length": 983040, "dirty": false, "zero": true}]` + "\n"},
		{"dirty not in ticket", "/images/read-ticket-00001/extents?context=dirty", 404, "Ticket does not support dirty extents\n"},
		{"bad context", "/images/read-ticket-00001/extents?context=x", 400, "Unsupported value 'x' for 'context', expecting one of ['dirty', 'zero']\n"},
		{"missing", "/images/missing/extents", 403, "You are not allowed to access this resource: No such ticket missing\n"},
		{"post", "/images/read-ticket-00001/extents", 405, "Method 'POST' not defined for '/images/read-ticket-00001/extents'\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := "GET"
			if tc.name == "post" {
				method = "POST"
			}
			r := e.do(method, tc.path, nil)
			if r.code != tc.code {
				t.Fatalf("status %s, want %d", r, tc.code)
			}
			if diff := cmp.Diff(tc.body, string(r.body)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestChecksum(t *testing.T) {
	e := newEnv(t, envOptions{})
	data := pattern(3<<20+12345, 4)
	clear(data[1<<20 : 2<<20])
	e.addImage("read-ticket-00001", newMem(data),
		`{"uuid": "ID", "size": 4194304, "url": "URL", "ops": ["read"], "timeout": 300}`)
	for _, q := range []struct {
		query, alg string
		bs         int
	}{
		{"", "blake2b", 4 << 20},
		{"?algorithm=sha256&block_size=2097152", "sha256", 2 << 20},
	} {
		r := e.do("GET", "/images/read-ticket-00001/checksum"+q.query, nil)
		if r.code != 200 {
			t.Fatalf("checksum%s = %s", q.query, r)
		}
		want, err := checksum.Sum(bytes.NewReader(data), q.alg, q.bs)
		if err != nil {
			t.Fatal(err)
		}
		wantBody := fmt.Sprintf(`{"algorithm": "%s", "block_size": %d, "checksum": "%s"}`+"\n", q.alg, q.bs, want.Checksum)
		if string(r.body) != wantBody {
			t.Errorf("checksum%s = %q, want %q", q.query, r.body, wantBody)
		}
	}
	errs := []struct{ query, msg string }{
		{"?block_size=4096", "Block size out of allowed range: 1048576-16777216\n"},
		{"?block_size=1052672", ""},
		{"?block_size=1048577", "Block size is not aligned to 4096\n"},
		{"?block_size=x", "Invalid block size: 'x'\n"},
		{"?algorithm=crc", ""},
	}
	for _, tc := range errs {
		r := e.do("GET", "/images/read-ticket-00001/checksum"+tc.query, nil)
		if tc.msg == "" {
			if tc.query == "?block_size=1052672" {
				if r.code != 200 {
					t.Errorf("%s = %s, want 200", tc.query, r)
				}
				continue
			}
			if r.code != 400 || !strings.HasPrefix(string(r.body), "Unsupported value 'crc' for 'algorithm', expecting one of ['blake2b'") {
				t.Errorf("%s = %s", tc.query, r)
			}
			continue
		}
		if r.code != 400 || string(r.body) != tc.msg {
			t.Errorf("%s = %s, want 400 %q", tc.query, r, tc.msg)
		}
	}
	r := e.do("GET", "/images/missing/checksum", nil)
	if r.code != 403 || r.close {
		t.Errorf("checksum of missing ticket = %s, close %v; want 403 keeping the connection", r, r.close)
	}
	r = e.do("GET", "/images/anything/checksum/algorithms", nil)
	var algs struct{ Algorithms []string }
	if r.code != 200 || json.Unmarshal(r.body, &algs) != nil || !contains(algs.Algorithms, "blake2b") || !contains(algs.Algorithms, "sha256") {
		t.Errorf("algorithms = %s", r)
	}
}

func TestRouting(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addImage("read-ticket-00001", newMem(pattern(1<<20, 1)), readTicket)
	tests := []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", "/info/", 200, `{"version": "2.5.3"}` + "\n"},
		{"GET", "/info", 404, "No handler for '/info'\n"},
		{"GET", "/nothing", 404, "No handler for '/nothing'\n"},
		{"FOO", "/images/x", 405, "Invalid method 'FOO'\n"},
		{"DELETE", "/images/read-ticket-00001", 405, "Method 'DELETE' not defined for '/images/read-ticket-00001'\n"},
		{"POST", "/images/x", 405, "Method 'POST' not defined for '/images/x'\n"},
		{"GET", "/images/", 400, "Ticket id is required\n"},
		{"GET", "/images/" + strings.Repeat("a", 4100), 414, "Request line too long\n"},
		{"PUT", "/info/", 405, "Method 'PUT' not defined for '/info/'\n"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path[:min(len(tc.path), 30)], func(t *testing.T) {
			r := e.do(tc.method, tc.path, nil)
			if r.code != tc.code || string(r.body) != tc.msg {
				t.Errorf("got %s, want %d %q", r, tc.code, tc.msg)
			}
		})
	}
	r := e.do("HEAD", "/images/read-ticket-00001", nil)
	if r.code != 405 {
		t.Errorf("HEAD = %s, want 405", r)
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addImage("read-ticket-00001", newMem(pattern(1<<20, 1)), readTicket)
	tests := []struct {
		method, path, allowMethods string
		headers                    []string
		want                       bool
	}{
		{"OPTIONS", "/images/read-ticket-00001", "OPTIONS,GET,PUT",
			[]string{"Origin: https://engine", "Access-Control-Request-Method: PUT", "Access-Control-Request-Headers: content-range"}, true},
		{"GET", "/images/read-ticket-00001", "*", []string{"Origin: https://engine", "Access-Control-Request-Method: GET"}, true},
		{"GET", "/images/missing", "*", []string{"Origin: https://engine", "Access-Control-Request-Method: GET"}, true},
		{"GET", "/info/", "", []string{"Origin: https://engine"}, true},
		{"GET", "/images/read-ticket-00001", "", nil, false},
		{"PATCH", "/images/read-ticket-00001", "", []string{"Origin: https://engine"}, false},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var body io.Reader
			if tc.method == "PATCH" {
				body = strings.NewReader(`{"op": "flush"}`)
			}
			r := e.do(tc.method, tc.path, body, tc.headers...)
			origin := r.header.Get("Access-Control-Allow-Origin")
			if (origin == "*") != tc.want {
				t.Fatalf("Access-Control-Allow-Origin = %q, want set %v", origin, tc.want)
			}
			if !tc.want {
				return
			}
			if got := r.header.Get("Access-Control-Allow-Methods"); got != tc.allowMethods {
				t.Errorf("Allow-Methods = %q, want %q", got, tc.allowMethods)
			}
			if got := r.header.Get("Access-Control-Max-Age"); got != "86400" {
				t.Errorf("Max-Age = %q", got)
			}
		})
	}
}

func TestAuthorizationReasons(t *testing.T) {
	e := newEnv(t, envOptions{})
	tk := e.addImage("read-ticket-00001", newMem(pattern(1<<20, 1)),
		`{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["read"], "timeout": 10, "transfer_id": "tr-1"}`)
	r := e.do("GET", "/images/read-ticket-00001", nil, "Range: bytes=0-0")
	if r.code != 206 {
		t.Fatalf("GET = %s", r)
	}
	// A completed request touched the ticket: 10 s from now.
	if got := tk.Status().Expires; got != 1010 {
		t.Errorf("expires = %d, want 1010", got)
	}
	e.clock.Add(10)
	r = e.do("GET", "/images/read-ticket-00001", nil)
	if r.code != 403 || string(r.body) != "You are not allowed to access this resource: Transfer=tr-1 expired\n" {
		t.Fatalf("expired GET = %s", r)
	}
	if err := e.store.Extend(tk.UUID, 100); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/images/read-ticket-00001", nil, "Range: bytes=0-0"); r.code != 206 {
		t.Fatalf("GET after extend = %s", r)
	}
	if err := e.store.Cancel(t.Context(), tk.UUID, time.Second); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/images/read-ticket-00001", nil)
	if r.code != 403 || !r.close {
		t.Errorf("GET after cancel = %s", r)
	}
	if strings.Contains(e.logs.String(), "read-ticket-00001") {
		t.Error("log contains a whole ticket id")
	}
}

func TestConcurrentReadersWriters(t *testing.T) {
	e := newEnv(t, envOptions{maxConns: 8, bufferSize: 16 << 10})
	const size = 1 << 20
	img := mem.New(size)
	e.addImage("rw-ticket-0000001", img,
		`{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["read", "write"], "timeout": 300}`)
	data := pattern(size, 7)
	const workers, chunk = 4, size / 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := w * chunk
			for i := 0; i < chunk; i += 64 << 10 {
				part := data[off+i : off+i+64<<10]
				r := e.do("PUT", "/images/rw-ticket-0000001?flush=n", bytes.NewReader(part),
					fmt.Sprintf("Content-Range: bytes %d-%d/*", off+i, off+i+len(part)-1))
				if r.code != 200 {
					t.Errorf("PUT = %s", r)
					return
				}
				// Concurrent reads of a region this worker owns.
				r = e.do("GET", "/images/rw-ticket-0000001", nil, fmt.Sprintf("Range: bytes=%d-%d", off+i, off+i+len(part)-1))
				if r.code != 206 || !bytes.Equal(r.body, part) {
					t.Errorf("GET after PUT = %d, equal %v", r.code, bytes.Equal(r.body, part))
					return
				}
			}
		}()
	}
	wg.Wait()
	if !bytes.Equal(img.Bytes(), data) {
		t.Error("image differs after concurrent writes")
	}
	r := e.do("GET", "/images/rw-ticket-0000001", nil)
	if !bytes.Equal(r.body, data) {
		t.Error("full read differs")
	}
}

func TestMaxConnections(t *testing.T) {
	e := newEnv(t, envOptions{maxConns: 1, plain: true})
	e.addImage("read-ticket-00001", newMem(pattern(1<<20, 1)), readTicket)
	c1 := dialRaw(t, e)
	defer c1.Close()
	io.WriteString(c1, "GET /images/read-ticket-00001 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n")
	readResponse(t, c1)
	// The first connection holds the ticket's only slot.
	out := rawRequest(t, e, "GET /images/read-ticket-00001 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n", false)
	if !strings.HasPrefix(out, "HTTP/1.1 503 ") {
		t.Errorf("second connection got %.60q, want 503", out)
	}
}

func dialRaw(t *testing.T, e *env) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(strings.TrimPrefix(e.base, "https://"), "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(e.base, "https://") {
		tr := e.client.Transport.(*http.Transport)
		tc := tlsClient(c, tr)
		return tc
	}
	return c
}

func readResponse(t *testing.T, c net.Conn) *http.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufioReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp
}
