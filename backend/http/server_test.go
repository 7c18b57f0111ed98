package http

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/internal/testutil"
)

// testServer serves a mem image over the images API wire protocol. It is a
// small test handler for fault injection (dropped connections, resets,
// 5xx), run on a real loopback HTTP or HTTPS server; the tests against the
// real daemon are in daemon_test.go.
type testServer struct {
	img    *mem.Backend
	ticket string
	// oldDaemon answers OPTIONS with 405 and has no extents.
	oldDaemon   bool
	features    []string
	maxWriters  int
	unixSocket  string
	idleTimeout time.Duration
	// fault, when set, is called for every request with its number (from
	// 1); it may break the exchange and report that it did.
	fault func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool

	requests atomic.Int64
	srv      *httptest.Server
	caFile   string
	// mu guards the fields that follow.
	mu      sync.Mutex
	methods []string
	forget  bool // answer 403 to every request
}

func (s *testServer) setFault(f func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

func (s *testServer) forgetTicket() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget = true
}

func newTestServer(t *testing.T, img *mem.Backend, tlsOn bool, configure func(*testServer)) *testServer {
	t.Helper()
	s := &testServer{
		img:        img,
		ticket:     "0123456789abcdef-ticket",
		features:   []string{"checksum", "extents", "flush", "zero"},
		maxWriters: 4,
	}
	if configure != nil {
		configure(s)
	}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.Config.IdleTimeout = s.idleTimeout
	if tlsOn {
		files := testutil.NewTLS(t, t.TempDir())
		s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{files.Cert}}
		s.srv.StartTLS()
		s.caFile = files.CAFile
	} else {
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *testServer) url() string { return s.srv.URL + "/images/" + s.ticket }

var contentRange = regexp.MustCompile(`^bytes (\d+)-(\d+|\*)/(\d+|\*)$`)

func (s *testServer) ServeHTTP(w nethttp.ResponseWriter, r *nethttp.Request) {
	n := int(s.requests.Add(1))
	s.mu.Lock()
	s.methods = append(s.methods, r.Method)
	fault, forget := s.fault, s.forget
	s.mu.Unlock()
	if fault != nil && fault(w, r, n) {
		return
	}
	path := r.URL.Path
	if !strings.HasPrefix(path, "/images/") {
		nethttp.Error(w, "No handler for "+path, nethttp.StatusNotFound)
		return
	}
	rest := strings.TrimPrefix(path, "/images/")
	id, sub, _ := strings.Cut(rest, "/")
	if r.Method == nethttp.MethodOptions && s.oldDaemon {
		nethttp.Error(w, "Invalid method", nethttp.StatusMethodNotAllowed)
		return
	}
	if id != s.ticket || forget {
		nethttp.Error(w, "You are not allowed to access this resource: No such ticket "+id, nethttp.StatusForbidden)
		return
	}
	ctx := r.Context()
	switch {
	case sub == "extents" && r.Method == nethttp.MethodGet && !s.oldDaemon:
		c := r.URL.Query().Get("context")
		if c == "" {
			c = backend.ContextZero
		}
		ext, err := s.img.Extents(ctx, c)
		if err != nil {
			nethttp.Error(w, err.Error(), nethttp.StatusNotFound)
			return
		}
		writeJSON(w, ext)
	case sub == "checksum" && r.Method == nethttp.MethodGet:
		bs, _ := strconv.Atoi(r.URL.Query().Get("block_size"))
		res, err := checksum.Compute(ctx, s.img, r.URL.Query().Get("algorithm"), bs)
		if err != nil {
			nethttp.Error(w, err.Error(), nethttp.StatusBadRequest)
			return
		}
		writeJSON(w, res)
	case sub != "":
		nethttp.Error(w, "No handler for "+path, nethttp.StatusNotFound)
	case r.Method == nethttp.MethodOptions:
		writeJSON(w, map[string]any{"unix_socket": s.unixSocket, "features": s.features,
			"max_readers": 8, "max_writers": s.maxWriters})
	case r.Method == nethttp.MethodGet:
		s.get(w, r)
	case r.Method == nethttp.MethodPut:
		s.put(w, r)
	case r.Method == nethttp.MethodPatch:
		s.patch(w, r)
	default:
		nethttp.Error(w, "Method not defined", nethttp.StatusMethodNotAllowed)
	}
}

func writeJSON(w nethttp.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *testServer) get(w nethttp.ResponseWriter, r *nethttp.Request) {
	size := s.img.Size()
	start, end := int64(0), size-1
	status := nethttp.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		a, b, ok := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
		var err1, err2 error
		start, err1 = strconv.ParseInt(a, 10, 64)
		if b != "" {
			end, err2 = strconv.ParseInt(b, 10, 64)
		}
		if !ok || err1 != nil || err2 != nil || start > end {
			nethttp.Error(w, "Cannot satisfy range", nethttp.StatusRequestedRangeNotSatisfiable)
			return
		}
		if end >= size {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			nethttp.Error(w, "Requested range out of allowed range", nethttp.StatusRequestedRangeNotSatisfiable)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		status = nethttp.StatusPartialContent
	}
	buf := make([]byte, end-start+1)
	if err := s.img.ReadAt(r.Context(), buf, start); err != nil {
		nethttp.Error(w, err.Error(), nethttp.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(status)
	_, _ = w.Write(buf)
}

func (s *testServer) put(w nethttp.ResponseWriter, r *nethttp.Request) {
	if r.ContentLength < 0 {
		nethttp.Error(w, "Content-Length header is required", nethttp.StatusBadRequest)
		return
	}
	var off int64
	if cr := r.Header.Get("Content-Range"); cr != "" {
		m := contentRange.FindStringSubmatch(cr)
		if m == nil {
			nethttp.Error(w, "Invalid Content-Range "+cr, nethttp.StatusBadRequest)
			return
		}
		off, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if off+r.ContentLength > s.img.Size() {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", s.img.Size()))
		nethttp.Error(w, "Requested range out of allowed range", nethttp.StatusRequestedRangeNotSatisfiable)
		return
	}
	buf := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, buf); err != nil {
		nethttp.Error(w, "short body", nethttp.StatusBadRequest)
		return
	}
	if err := s.img.WriteAt(r.Context(), buf, off); err != nil {
		nethttp.Error(w, err.Error(), nethttp.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", "0")
}

func (s *testServer) patch(w nethttp.ResponseWriter, r *nethttp.Request) {
	var msg struct {
		Op     string `json:"op"`
		Offset int64  `json:"offset"`
		Size   *int64 `json:"size"`
	}
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
		nethttp.Error(w, "Invalid JSON message", nethttp.StatusBadRequest)
		return
	}
	switch msg.Op {
	case "flush":
		if err := s.img.Flush(r.Context()); err != nil {
			nethttp.Error(w, err.Error(), nethttp.StatusInternalServerError)
		}
	case "zero":
		if msg.Size == nil {
			nethttp.Error(w, "Missing required value for 'size'", nethttp.StatusBadRequest)
			return
		}
		err := s.img.Zero(r.Context(), msg.Offset, *msg.Size, false)
		if errors.Is(err, backend.ErrOutOfRange) {
			nethttp.Error(w, err.Error(), nethttp.StatusRequestedRangeNotSatisfiable)
		} else if err != nil {
			nethttp.Error(w, err.Error(), nethttp.StatusInternalServerError)
		}
	default:
		nethttp.Error(w, "Unsupported value for 'op'", nethttp.StatusBadRequest)
	}
}

// resetConn closes the request's connection with a TCP reset.
func resetConn(w nethttp.ResponseWriter) {
	conn, _, err := nethttp.NewResponseController(w).Hijack()
	if err != nil {
		panic(nethttp.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// resetOddPutHalfway is a fault for the test server: every other PUT has
// half of its body read, then its connection reset.
func resetOddPutHalfway(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
	if r.Method != nethttp.MethodPut || n%2 == 0 {
		return false
	}
	buf := make([]byte, r.ContentLength/2)
	_, _ = r.Body.Read(buf)
	resetConn(w)
	return true
}
