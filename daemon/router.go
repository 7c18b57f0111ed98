package daemon

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/imageio/imageio/backend"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/ticket"
)

// httpError is an error with what the client gets: Code and Msg. Err is
// logged only. Close asks to close the connection after the response.
type httpError struct {
	Code  int
	Msg   string
	Err   error
	Close bool
	// ContentRange is sent as Content-Range (for 416).
	ContentRange string
}

func (e *httpError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Code, e.Msg, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Msg)
}

func (e *httpError) Unwrap() error { return e.Err }

func errorf(code int, format string, args ...any) *httpError {
	return &httpError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

const internalErrorMsg = "Server failed to perform the request, check logs"

// toHTTPError maps an error from a handler, the ticket store or a backend
// to the response. This is the only place that chooses status codes for
// errors that are not already *httpError.
func toHTTPError(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	var ae *ticket.AuthError
	switch {
	case errors.As(err, &ae):
		return &httpError{Code: http.StatusForbidden, Msg: ae.ClientMessage(), Err: err}
	case errors.Is(err, ticket.ErrTooManyConnections):
		return &httpError{Code: http.StatusServiceUnavailable, Msg: "Too many connections for this transfer", Err: err, Close: true}
	case errors.Is(err, backend.ErrOutOfRange):
		return &httpError{Code: http.StatusRequestedRangeNotSatisfiable, Msg: "Requested range out of allowed range", Err: err}
	case errors.Is(err, backend.ErrNotSupported):
		return &httpError{Code: http.StatusNotFound, Msg: "Operation not supported: " + firstLine(err), Err: err}
	case errors.Is(err, backend.ErrNoSpace):
		return &httpError{Code: http.StatusInsufficientStorage, Msg: noSpaceMessage(err), Err: err}
	}
	return &httpError{Code: http.StatusInternalServerError, Msg: internalErrorMsg, Err: err}
}

// noSpaceMsg starts the message of a 507.
const noSpaceMsg = "No space left on the storage"

// noSpaceMessage is the client message for a backend error matching
// backend.ErrNoSpace. A 507 from an upstream daemon (a proxy ticket) is
// passed on with that daemon's message. Otherwise the message names only
// the innermost cause (the errno or the NBD error), not the layers above
// it, which name the backend's socket or file.
func noSpaceMessage(err error) string {
	var se *httpbackend.ServerError
	if errors.As(err, &se) && se.Code == http.StatusInsufficientStorage && se.Message != "" {
		return se.Message
	}
	c := innermost(err)
	if errors.Is(c, backend.ErrNoSpace) {
		return noSpaceMsg
	}
	msg := c.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return noSpaceMsg + ": " + msg
}

// innermost follows err's chain to its end. Where an error wraps several
// (fmt.Errorf with two %w: the sentinel first, then the cause), the last
// one is followed.
func innermost(err error) error {
	for range 100 {
		var next error
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			if errs := u.Unwrap(); len(errs) > 0 {
				next = errs[len(errs)-1]
			}
		case interface{ Unwrap() error }:
			next = u.Unwrap()
		}
		if next == nil {
			return err
		}
		err = next
	}
	return err
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// route is one entry of the routing table: a path pattern matched at the
// start of the unquoted path (as Python's re.match), and the handler of
// each method.
type route struct {
	re      *regexp.Regexp
	methods map[string]handlerFunc
}

type handlerFunc func(s *Service, w http.ResponseWriter, r *request, id string) error

var (
	reExtents    = regexp.MustCompile(`^/images/(.*)/extents`)
	reAlgorithms = regexp.MustCompile(`^/images/(.*)/checksum/algorithms`)
	reChecksum   = regexp.MustCompile(`^/images/(.*)/checksum`)
	reImages     = regexp.MustCompile(`^/images/(.*)`)
	reInfo       = regexp.MustCompile(`^/info/`)
)

var imageRoutes = []route{
	{reExtents, map[string]handlerFunc{"GET": (*Service).extents}},
	{reAlgorithms, map[string]handlerFunc{"GET": (*Service).algorithms}},
	{reChecksum, map[string]handlerFunc{"GET": (*Service).checksum}},
	{reImages, map[string]handlerFunc{
		"OPTIONS": (*Service).options,
		"GET":     (*Service).get,
		"PUT":     (*Service).put,
		"PATCH":   (*Service).patch,
	}},
}

var infoRoute = route{reInfo, map[string]handlerFunc{"GET": (*Service).infoHandler}}

var allowedMethods = map[string]bool{
	"GET": true, "PUT": true, "PATCH": true, "POST": true, "DELETE": true, "OPTIONS": true, "HEAD": true,
}

// maxRequestLine is the longest request line accepted, with its CRLF.
const maxRequestLine = 4096

// request is an http.Request with the daemon's per-request state.
type request struct {
	*http.Request
	conn  *connState
	id    string // ticket id from the path, "" if none
	body  *countingBody
	query map[string]string
}

// q returns query parameter key ("" if missing); the last one wins, as
// with the reference's parse_qsl.
func (r *request) q(key string) (string, bool) {
	v, ok := r.query[key]
	return v, ok
}

// countingBody tracks how much of a request body was read, to know whether
// the connection can be kept after an error.
type countingBody struct {
	io.ReadCloser
	n   int64
	eof bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// ServeHTTP dispatches a request and writes the error response when its
// handler fails.
func (s *Service) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	w.Header().Set("Server", serverHeader)
	cs, _ := hr.Context().Value(connKey{}).(*connState)
	body := &countingBody{ReadCloser: hr.Body}
	hr.Body = body
	r := &request{Request: hr, conn: cs, body: body, query: lastValues(hr)}
	rw := &responseWriter{ResponseWriter: w}
	err := s.dispatch(rw, r)
	if err == nil {
		if !rw.wrote {
			rw.WriteHeader(http.StatusOK)
		}
		return
	}
	he := toHTTPError(err)
	attrs := []any{"method", hr.Method, "path", redactPath(hr.URL.Path), "status", he.Code, "err", redactErr(he, r.id)}
	if cs != nil {
		attrs = append(attrs, "connection", cs.id)
	}
	switch {
	case he.Code >= 500:
		s.log.Error("request failed", attrs...)
	default:
		s.log.Info("request failed", attrs...)
	}
	if rw.wrote {
		// The response started; the short body makes net/http close
		// the connection, which tells the client.
		return
	}
	if he.Code == http.StatusInsufficientStorage && !he.Close {
		drainBody(hr, body)
	}
	if he.Close || unreadBody(hr, body) {
		w.Header().Set("Connection", "close")
	}
	if he.ContentRange != "" {
		w.Header().Set("Content-Range", he.ContentRange)
	}
	writeError(w, he.Code, he.Msg)
}

// maxDrain is the most of a request body that is read and thrown away
// after a 507, so that a client that sends its whole body before it reads
// the answer (ours does over the Unix socket) gets the 507 instead of a
// broken pipe, which it would take for a network error and retry. Our
// client sends at most 128 MiB per request. With more left unread the
// connection is closed as after other errors.
const maxDrain = 128 << 20

// drainBody reads the rest of the request body, if there is at most
// maxDrain of it, and throws it away.
func drainBody(r *http.Request, body *countingBody) {
	if !unreadBody(r, body) || r.ContentLength < 0 || r.ContentLength-body.n > maxDrain {
		return
	}
	io.Copy(io.Discard, body)
}

// unreadBody reports whether part of the request body was not read; the
// connection is closed then rather than reading the rest.
func unreadBody(r *http.Request, body *countingBody) bool {
	if r.ContentLength == 0 || body.eof {
		return false
	}
	return r.ContentLength < 0 || body.n < r.ContentLength
}

func (s *Service) dispatch(w http.ResponseWriter, r *request) error {
	if n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4; n > maxRequestLine {
		return &httpError{Code: http.StatusRequestURITooLong, Msg: "Request line too long", Close: true}
	}
	if !allowedMethods[r.Method] {
		return errorf(http.StatusMethodNotAllowed, "Invalid method %s", ticket.Repr(r.Method))
	}
	path := r.URL.Path
	routes := imageRoutes
	if s.info {
		routes = append(routes[:len(routes):len(routes)], infoRoute)
	}
	for _, rt := range routes {
		m := rt.re.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		h, ok := rt.methods[r.Method]
		if !ok {
			return errorf(http.StatusMethodNotAllowed, "Method %s not defined for %s", ticket.Repr(r.Method), ticket.Repr(path))
		}
		if len(m) > 1 {
			r.id = m[1]
		}
		return h(s, w, r, r.id)
	}
	return errorf(http.StatusNotFound, "No handler for %s", ticket.Repr(path))
}

// lastValues returns the query parameters, the last value of each.
func lastValues(r *http.Request) map[string]string {
	q := r.URL.Query()
	m := make(map[string]string, len(q))
	for k, v := range q {
		m[k] = v[len(v)-1]
	}
	return m
}

// responseWriter remembers whether the response started.
type responseWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *responseWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cors adds the CORS headers of the reference daemon; allowMethods is sent
// when the client asks with Access-Control-Request-Method.
func cors(w http.ResponseWriter, r *request, allowMethods string) {
	h := w.Header()
	modified := false
	if r.Header.Get("Origin") != "" {
		h.Set("Access-Control-Allow-Origin", "*")
		modified = true
	}
	if r.Header.Get("Access-Control-Request-Headers") != "" {
		h.Set("Access-Control-Allow-Headers", "*")
		modified = true
	}
	if r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", allowMethods)
		modified = true
	}
	if modified {
		h.Set("Access-Control-Max-Age", "86400")
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	body := msg + "\n"
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// writeJSON sends body (JSON without the newline) as the reference does:
// application/json, the document and a newline.
func writeJSON(w http.ResponseWriter, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(http.StatusOK)
	body = append(body, '\n')
	_, err := w.Write(body)
	return err
}

// redactPath hides the ticket id in an images path.
func redactPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/images/")
	if !ok || rest == "" || rest == "*" {
		return p
	}
	id, tail, _ := strings.Cut(rest, "/")
	if tail != "" {
		tail = "/" + tail
	}
	return "/images/" + ticket.Redact(id) + tail
}

// redactErr is the log text of an error: every occurrence of the ticket
// id (client messages may name it, so may errors that embed a URL) is
// replaced by its redacted form.
func redactErr(he *httpError, id string) string {
	var ae *ticket.AuthError
	if errors.As(he.Err, &ae) {
		return ae.Error()
	}
	s := he.Error()
	if id != "" && id != "*" {
		s = strings.ReplaceAll(s, id, ticket.Redact(id))
	}
	return s
}
