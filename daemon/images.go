package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imageio/imageio/ticket"
)

// maxZeroStep is the largest range one backend Zero call covers, so a
// canceled zero stops soon.
const maxZeroStep = 128 << 20

// maxPatchBody bounds PATCH documents.
const maxPatchBody = 64 << 10

var (
	readFeatures  = []string{"checksum", "extents"}
	writeFeatures = []string{"checksum", "extents", "flush", "zero"}
)

// authorize checks the ticket for op and returns it with this connection's
// backend for it, opening the backend on the connection's first request
// for the ticket.
func (s *Service) authorize(r *request, op string) (*ticket.Ticket, *connBackend, error) {
	t, err := s.cfg.Tickets.Authorize(r.id, op)
	if err != nil {
		return nil, nil, err
	}
	if r.conn == nil {
		return nil, nil, errors.New("request without connection state")
	}
	if b := r.conn.backend(t); b != nil {
		return t, b, nil
	}
	sch, ok := s.cfg.Schemes[ticket.Scheme(t.URL)]
	if !ok {
		return nil, nil, fmt.Errorf("opening backend: no backend for scheme %q", ticket.Scheme(t.URL))
	}
	// The backend lives as long as the connection, not the request.
	be, err := sch.Open(r.conn.ctx, t)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s backend for transfer %s: %w", ticket.Scheme(t.URL), t.TransferID, err)
	}
	size := sch.BufferSize
	if size <= 0 {
		size = DefaultBufferSize
	}
	b := &connBackend{Backend: be, bufferSize: min(size, MaxDataBuffer), chunkSize: min(size, MaxChunk)}
	if err := t.Attach(r.conn.id, b); err != nil {
		b.Close()
		return nil, nil, err
	}
	r.conn.addBackend(t, b)
	if t.InactivityTimeout > 0 && r.conn.conn != nil {
		r.conn.conn.setTimeout(time.Duration(t.InactivityTimeout) * time.Second)
	}
	return t, b, nil
}

// closeOnAuthError marks authorization failures of images requests to
// close the connection, as the reference does.
func closeOnAuthError(err error) error {
	var ae *ticket.AuthError
	if errors.As(err, &ae) {
		he := toHTTPError(err)
		he.Close = true
		return he
	}
	return err
}

// endOp ends op and records it in the connection statistics.
func endOp(r *request, op *ticket.Op, kind string, start time.Time) error {
	r.conn.record(kind, op.Done(), time.Since(start))
	return op.End()
}

type optionsResponse struct {
	UnixSocket string   `json:"unix_socket,omitempty"`
	Features   []string `json:"features"`
	MaxReaders *int     `json:"max_readers,omitempty"`
	MaxWriters *int     `json:"max_writers,omitempty"`
}

func (s *Service) options(w http.ResponseWriter, r *request, id string) error {
	cors(w, r, "OPTIONS,GET,PUT")
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	resp := optionsResponse{UnixSocket: s.cfg.UnixSocket}
	var allow []string
	if id == "*" {
		allow = []string{"OPTIONS", "GET", "PUT", "PATCH"}
		resp.Features = writeFeatures
	} else {
		t, b, err := s.authorize(r, ticket.OpRead)
		if err != nil {
			return closeOnAuthError(err)
		}
		op, _, err := t.Begin(r.conn.ctx, 0)
		if err != nil {
			return closeOnAuthError(err)
		}
		caps := b.Caps()
		start := time.Now()
		if err := endOp(r, op, "options", start); err != nil {
			return closeOnAuthError(err)
		}
		s.log.Info("OPTIONS", "connection", r.conn.id, "transfer", t.TransferID)
		allow = []string{"OPTIONS", "GET"}
		resp.Features = readFeatures
		if t.May(ticket.OpWrite) {
			allow = append(allow, "PUT", "PATCH")
			resp.Features = writeFeatures
		}
		readers, writers := s.limit(caps.MaxReaders), s.limit(caps.MaxWriters)
		resp.MaxReaders, resp.MaxWriters = &readers, &writers
	}
	w.Header().Set("Allow", strings.Join(allow, ","))
	body, err := pyJSON(resp)
	if err != nil {
		return err
	}
	return writeJSON(w, body)
}

// limit caps a backend's reader or writer count by max_connections.
func (s *Service) limit(n int) int {
	if n <= 0 {
		n = 1
	}
	if s.cfg.MaxConnections > 0 && n > s.cfg.MaxConnections {
		n = s.cfg.MaxConnections
	}
	return n
}

func (s *Service) get(w http.ResponseWriter, r *request, id string) error {
	cors(w, r, "*")
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	if v, _ := r.q("close"); v == "y" {
		w.Header().Set("Connection", "close")
	}
	var rng *byteRange
	if h := r.Header.Get("Range"); h != "" {
		br, err := parseRange(h)
		if err != nil {
			return err
		}
		if br.Suffix {
			return errorf(http.StatusRequestedRangeNotSatisfiable, "suffix-byte-range-spec not supported yet")
		}
		rng = &br
	}
	t, b, err := s.authorize(r, ticket.OpRead)
	if err != nil {
		return closeOnAuthError(err)
	}
	avail := min(t.Size, b.Size())
	var offset, size int64
	if rng != nil {
		offset = rng.First
	}
	if rng != nil && rng.Last >= 0 {
		size = rng.Last - offset + 1
		if offset+size > t.Size {
			return &httpError{Code: http.StatusRequestedRangeNotSatisfiable, Msg: "Requested range out of allowed range",
				ContentRange: fmt.Sprintf("bytes */%d", t.Size)}
		}
		if offset+size > avail {
			return &httpError{Code: http.StatusRequestedRangeNotSatisfiable,
				Msg:          fmt.Sprintf("Requested more bytes than available: %d > %d", offset+size, avail),
				ContentRange: fmt.Sprintf("bytes */%d", avail)}
		}
	} else {
		size = avail - offset
		if size <= 0 && offset > 0 {
			return &httpError{Code: http.StatusRequestedRangeNotSatisfiable,
				Msg:          fmt.Sprintf("Requested more bytes than available: %d > %d", offset+1, avail),
				ContentRange: fmt.Sprintf("bytes */%d", avail)}
		}
	}
	s.log.Debug("READ", "connection", r.conn.id, "transfer", t.TransferID, "offset", offset, "size", size)

	op, ctx, err := t.Begin(r.conn.ctx, offset)
	if err != nil {
		return closeOnAuthError(err)
	}
	start := time.Now()
	h := w.Header()
	disposition := "attachment"
	if t.Filename != "" {
		disposition += "; filename=" + t.Filename
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", disposition)
	if rng != nil {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, offset+size-1, t.Size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	var tc *timeoutConn
	if s.cfg.TLS != nil {
		tc = r.conn.conn
	}
	werr := s.copyOut(ctx, w, tc, b, op, offset, size)
	if err := endOp(r, op, "read", start); err != nil && werr == nil {
		werr = err
	}
	return werr
}

// opWriter counts the bytes written through it as done by op.
type opWriter struct {
	w  io.Writer
	op *ticket.Op
}

func (w *opWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.op.Add(int64(n))
	return n, err
}

// opReader counts the bytes read through it as done by op and stops at the
// next read once ctx is canceled.
type opReader struct {
	ctx context.Context
	r   io.Reader
	op  *ticket.Op
}

func (r *opReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	r.op.Add(int64(n))
	return n, err
}

func (s *Service) put(w http.ResponseWriter, r *request, id string) error {
	cors(w, r, "*")
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	if v, _ := r.q("close"); v == "y" {
		w.Header().Set("Connection", "close")
	}
	if _, ok := r.Header["Content-Length"]; !ok || len(r.TransferEncoding) > 0 || r.ContentLength < 0 {
		return errorf(http.StatusBadRequest, "Content-Length header is required")
	}
	size := r.ContentLength
	var offset int64
	if h := r.Header.Get("Content-Range"); h != "" {
		cr, err := parseContentRange(h)
		if err != nil {
			return err
		}
		offset = cr.First
	}
	flush, err := enumParam(r, "flush", []string{"n", "y"}, "y")
	if err != nil {
		return err
	}
	t, b, err := s.authorize(r, ticket.OpWrite)
	if err != nil {
		return closeOnAuthError(err)
	}
	if offset+size > t.Size || offset+size < 0 {
		return &httpError{Code: http.StatusRequestedRangeNotSatisfiable, Msg: "Requested range out of allowed range",
			ContentRange: fmt.Sprintf("bytes */%d", t.Size)}
	}
	if avail := b.Size(); offset+size > avail {
		return &httpError{Code: http.StatusRequestedRangeNotSatisfiable,
			Msg:          fmt.Sprintf("Requested more bytes than available: %d > %d", offset+size, avail),
			ContentRange: fmt.Sprintf("bytes */%d", avail)}
	}
	s.log.Debug("WRITE", "connection", r.conn.id, "transfer", t.TransferID, "offset", offset, "size", size, "flush", flush)

	op, ctx, err := t.Begin(r.conn.ctx, offset)
	if err != nil {
		return closeOnAuthError(err)
	}
	start := time.Now()
	werr := s.copyIn(ctx, r, b, op, offset, size)
	if werr == nil && flush == "y" {
		if err := b.Flush(ctx); err != nil {
			werr = fmt.Errorf("flushing: %w", err)
		}
	}
	if err := endOp(r, op, "write", start); err != nil {
		return closeOnAuthError(err)
	}
	return werr
}

// partialError is a body shorter than its Content-Length.
func partialError(requested, available int64, err error) error {
	return &httpError{Code: http.StatusBadRequest, Close: true, Err: err,
		Msg: fmt.Sprintf("Requested %d bytes, available %d bytes", requested, available)}
}

func (s *Service) patch(w http.ResponseWriter, r *request, id string) error {
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	msg, err := readPatch(r)
	if err != nil {
		return err
	}
	op, err := enumValue(msg, "op", []string{"flush", "zero"}, "")
	if err != nil {
		return err
	}
	if op == "zero" {
		return s.zero(r, msg)
	}
	return s.flush(r)
}

// readPatch reads and decodes a PATCH document.
func readPatch(r *request) (map[string]any, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxPatchBody+1))
	if err != nil {
		return nil, &httpError{Code: http.StatusBadRequest, Msg: "Error reading request body", Err: err, Close: true}
	}
	if len(data) > maxPatchBody {
		return nil, &httpError{Code: http.StatusRequestEntityTooLarge, Close: true,
			Msg: fmt.Sprintf("Request body is larger than %d bytes", maxPatchBody)}
	}
	return parsePatch(data)
}

// parsePatch decodes a PATCH JSON document; it must be an object.
func parsePatch(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, errorf(http.StatusBadRequest, "Invalid JSON message %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf(http.StatusBadRequest, "Invalid JSON message extra data after the document")
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, errorf(http.StatusBadRequest, "Invalid JSON message expecting an object, got %s", ticket.Repr(doc))
	}
	return m, nil
}

// zeroRequest is a validated PATCH zero document.
type zeroRequest struct {
	Offset, Size int64
	Flush        bool
}

func parseZero(msg map[string]any) (zeroRequest, error) {
	var z zeroRequest
	var err error
	if z.Size, err = intValue(msg, "size", false); err != nil {
		return z, err
	}
	if z.Offset, err = intValue(msg, "offset", true); err != nil {
		return z, err
	}
	if v, ok := msg["flush"]; ok {
		b, ok := v.(bool)
		if !ok {
			return z, errorf(http.StatusBadRequest, "Boolean required %s", ticket.Repr(v))
		}
		z.Flush = b
	}
	return z, nil
}

func (s *Service) zero(r *request, msg map[string]any) error {
	z, err := parseZero(msg)
	if err != nil {
		return err
	}
	t, b, err := s.authorize(r, ticket.OpWrite)
	if err != nil {
		return closeOnAuthError(err)
	}
	if z.Offset+z.Size > t.Size || z.Offset+z.Size < 0 {
		return &httpError{Code: http.StatusRequestedRangeNotSatisfiable, Msg: "Requested range out of allowed range",
			ContentRange: fmt.Sprintf("bytes */%d", t.Size)}
	}
	if avail := b.Size(); z.Offset+z.Size > avail {
		return &httpError{Code: http.StatusRequestedRangeNotSatisfiable,
			Msg:          fmt.Sprintf("Requested more bytes than available: %d > %d", z.Offset+z.Size, avail),
			ContentRange: fmt.Sprintf("bytes */%d", avail)}
	}
	s.log.Debug("ZERO", "connection", r.conn.id, "transfer", t.TransferID, "offset", z.Offset, "size", z.Size, "flush", z.Flush)
	op, ctx, err := t.Begin(r.conn.ctx, z.Offset)
	if err != nil {
		return closeOnAuthError(err)
	}
	start := time.Now()
	var zerr error
	for off, end := z.Offset, z.Offset+z.Size; off < end && zerr == nil; {
		if err := ctx.Err(); err != nil {
			zerr = fmt.Errorf("zeroing: %w", err)
			break
		}
		n := min(end-off, maxZeroStep)
		if err := b.Zero(ctx, off, n, t.Sparse); err != nil {
			zerr = fmt.Errorf("zeroing %d bytes at %d: %w", n, off, err)
			break
		}
		op.Add(n)
		off += n
	}
	if zerr == nil && z.Flush {
		if err := b.Flush(ctx); err != nil {
			zerr = fmt.Errorf("flushing: %w", err)
		}
	}
	if err := endOp(r, op, "zero", start); err != nil {
		return closeOnAuthError(err)
	}
	return zerr
}

func (s *Service) flush(r *request) error {
	t, b, err := s.authorize(r, ticket.OpWrite)
	if err != nil {
		return closeOnAuthError(err)
	}
	s.log.Info("FLUSH", "connection", r.conn.id, "transfer", t.TransferID)
	op, ctx, err := t.Begin(r.conn.ctx, 0)
	if err != nil {
		return closeOnAuthError(err)
	}
	start := time.Now()
	ferr := b.Flush(ctx)
	if err := endOp(r, op, "flush", start); err != nil {
		return closeOnAuthError(err)
	}
	if ferr != nil {
		return fmt.Errorf("flushing: %w", ferr)
	}
	return nil
}

// intValue validates integer key of a PATCH document (>= 0); optional keys
// default to 0.
func intValue(msg map[string]any, key string, optional bool) (int64, error) {
	v, ok := msg[key]
	if !ok {
		if optional {
			return 0, nil
		}
		return 0, errorf(http.StatusBadRequest, "Missing required value for %s", ticket.Repr(key))
	}
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(string(n), ".eE") {
		return 0, errorf(http.StatusBadRequest, "Integer required %s", ticket.Repr(v))
	}
	i, err := n.Int64()
	if err != nil || i > 1<<62 {
		return 0, errorf(http.StatusRequestedRangeNotSatisfiable, "Requested range out of allowed range")
	}
	if i < 0 {
		return 0, errorf(http.StatusBadRequest, "Invalid value %d < 0", i)
	}
	return i, nil
}

// enumValue validates key of a PATCH document against values.
func enumValue(msg map[string]any, key string, values []string, def string) (string, error) {
	v, ok := msg[key]
	if !ok {
		if def != "" {
			return def, nil
		}
		return "", errorf(http.StatusBadRequest, "Missing required value for %s", key)
	}
	s, ok := v.(string)
	if !ok || !contains(values, s) {
		return "", errorf(http.StatusBadRequest, "Unsupported value %s for %s, expecting one of %s",
			ticket.Repr(v), ticket.Repr(key), ticket.Repr(values))
	}
	return s, nil
}

// enumParam validates query parameter key against values.
func enumParam(r *request, key string, values []string, def string) (string, error) {
	v, ok := r.q(key)
	if !ok {
		return def, nil
	}
	if !contains(values, v) {
		return "", errorf(http.StatusBadRequest, "Unsupported value %s for %s, expecting one of %s",
			ticket.Repr(v), ticket.Repr(key), ticket.Repr(values))
	}
	return v, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func (s *Service) infoHandler(w http.ResponseWriter, r *request, _ string) error {
	cors(w, r, "*")
	return writeJSON(w, []byte(`{"version": "`+Version+`"}`))
}

// pyJSON encodes v as Python's json.dumps does by default: ", " and ": "
// separators.
func pyJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return respace(b), nil
}

// respace adds a space after every ',' and ':' outside strings of compact
// JSON.
func respace(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/4)
	inString, escaped := false, false
	for _, c := range b {
		out = append(out, c)
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == ',' || c == ':'):
			out = append(out, ' ')
		}
	}
	return out
}
