package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/ticket"
)

// ServerVersion is sent in the Server header, as the reference daemon's
// clients may parse it.
const ServerVersion = "imageio/2.5.3"

// maxBody bounds the ticket and patch documents the server reads.
const maxBody = 1 << 20

// ServerConfig configures the control service.
type ServerConfig struct {
	Tickets *ticket.Store
	// Parse holds the defaults and URL schemes for new tickets.
	Parse ticket.ParseOptions
	// RemoveTimeout bounds how long DELETE waits for ongoing operations
	// ([control] remove_timeout).
	RemoveTimeout time.Duration
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
}

// Server serves the tickets API.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
}

// NewServer returns the control service handler.
func NewServer(cfg ServerConfig) *Server {
	l := cfg.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: l.With("service", "control")}
}

// httpError is an error with the status and message for the client; Err
// goes only to the log.
type httpError struct {
	Code int
	Msg  string
	Err  error
}

func (e *httpError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Code, e.Msg, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Msg)
}

func errorf(code int, format string, args ...any) *httpError {
	return &httpError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

var allowedMethods = map[string]bool{
	"GET": true, "PUT": true, "PATCH": true, "POST": true, "DELETE": true, "OPTIONS": true, "HEAD": true,
}

// ServeHTTP routes a request as the reference's router does: by path
// prefix, then by method.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", ServerVersion)
	err := s.route(w, r)
	if err == nil {
		return
	}
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{Code: http.StatusInternalServerError, Msg: "Server failed to perform the request, check logs", Err: err}
	}
	level := slog.LevelInfo
	if he.Code >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", redactPath(r.URL.Path), "status", he.Code, "err", redactErr(he, r.URL.Path))
	writeError(w, he.Code, he.Msg)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	body := msg + "\n"
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func writeJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(b)
	return err
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) error {
	if !allowedMethods[r.Method] {
		return errorf(http.StatusMethodNotAllowed, "Invalid method %s", ticket.Repr(r.Method))
	}
	path := r.URL.Path
	switch {
	case strings.HasPrefix(path, "/tickets/"):
		id := strings.TrimPrefix(path, "/tickets/")
		switch r.Method {
		case http.MethodGet:
			return s.get(w, r, id)
		case http.MethodPut:
			return s.put(w, r, id)
		case http.MethodPatch:
			return s.patch(w, r, id)
		case http.MethodDelete:
			return s.delete(w, r, id)
		}
	case strings.HasPrefix(path, "/profile/"):
		switch r.Method {
		case http.MethodGet, http.MethodPost:
			return errorf(http.StatusNotFound, "profiling is not supported")
		}
	default:
		return errorf(http.StatusNotFound, "No handler for %s", ticket.Repr(path))
	}
	return errorf(http.StatusMethodNotAllowed, "Method %s not defined for %s", ticket.Repr(r.Method), ticket.Repr(path))
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, id string) error {
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	t, err := s.cfg.Tickets.Get(id)
	if err != nil {
		return errorf(http.StatusNotFound, "No such ticket %s", ticket.Repr(id))
	}
	return writeJSON(w, t.Status())
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, id string) error {
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	t, err := ticket.Parse(body, s.cfg.Parse)
	if err != nil {
		var ie *ticket.InvalidError
		if errors.As(err, &ie) && ie.JSON {
			return errorf(http.StatusBadRequest, "Ticket is not in a json format: %s", ie.Message)
		}
		if errors.As(err, &ie) {
			return errorf(http.StatusBadRequest, "Invalid ticket: %s", ie.Message)
		}
		return err
	}
	s.cfg.Tickets.Add(t)
	s.log.Info("ADD", "ticket", ticket.Redact(t.UUID), "transfer", t.TransferID, "ops", t.Ops,
		"size", t.Size, "timeout", t.Timeout, "scheme", ticket.Scheme(t.URL), "sparse", t.Sparse, "dirty", t.Dirty)
	return nil
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request, id string) error {
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return errorf(http.StatusBadRequest, "Invalid patch: %v", err)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return errorf(http.StatusBadRequest, "Invalid patch: expecting a JSON object")
	}
	v, ok := m["timeout"]
	if !ok {
		return errorf(http.StatusBadRequest, "Missing required value for 'timeout'")
	}
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(string(n), ".eE") {
		return errorf(http.StatusBadRequest, "Integer required %s", ticket.Repr(v))
	}
	timeout, err := n.Int64()
	if err != nil {
		return errorf(http.StatusBadRequest, "Invalid value %s: too large", n)
	}
	if timeout < 0 {
		return errorf(http.StatusBadRequest, "Invalid value %d < 0", timeout)
	}
	t, err := s.cfg.Tickets.Get(id)
	if err != nil {
		return errorf(http.StatusNotFound, "No such ticket: %s", id)
	}
	s.log.Info("EXTEND", "ticket", ticket.Redact(id), "transfer", t.TransferID, "timeout", timeout)
	t.Extend(timeout)
	return nil
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, id string) error {
	if id == "" {
		s.log.Info("REMOVE all tickets")
		s.cfg.Tickets.Clear()
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	t, err := s.cfg.Tickets.Get(id)
	if err != nil {
		s.log.Info("REMOVE", "ticket", ticket.Redact(id), "transfer", "(deleted)")
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	s.log.Info("REMOVE", "ticket", ticket.Redact(id), "transfer", t.TransferID)
	if err := s.cfg.Tickets.Cancel(r.Context(), id, s.cfg.RemoveTimeout); err != nil {
		var ce *ticket.CancelTimeoutError
		if errors.As(err, &ce) {
			return &httpError{Code: http.StatusConflict, Msg: ce.Error(), Err: err}
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, &httpError{Code: http.StatusBadRequest, Msg: "Error reading request body", Err: err}
	}
	if len(body) > maxBody {
		return nil, errorf(http.StatusRequestEntityTooLarge, "Request body is larger than %d bytes", maxBody)
	}
	return body, nil
}

// redactPath hides the ticket id in a /tickets/{id} path.
func redactPath(p string) string {
	if id, ok := strings.CutPrefix(p, "/tickets/"); ok && id != "" {
		return "/tickets/" + ticket.Redact(id)
	}
	return p
}

// redactErr returns the log text of an error: the client message may name
// the ticket id (of the path; engines use the same id in the body and in
// proxy URLs), the log must not.
func redactErr(he *httpError, path string) string {
	text := he.Error()
	if id, ok := strings.CutPrefix(path, "/tickets/"); ok && id != "" {
		text = strings.ReplaceAll(text, id, ticket.Redact(id))
	}
	return text
}

// Run serves the control API on ln until ctx is done, then shuts down
// gracefully: requests in flight get up to 10 seconds to finish.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 60 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving control API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// Listen opens the listener of the control service described by c: a Unix
// socket with mode 0660 or a TCP port on the loopback address only.
func Listen(c config.Control) (net.Listener, error) {
	switch strings.ToLower(c.Transport) {
	case "unix":
		if c.Socket == "" {
			return nil, errors.New("listening for control service: [control] socket is empty")
		}
		if strings.HasPrefix(c.Socket, "\x00") {
			return net.Listen("unix", "@"+c.Socket[1:])
		}
		if fi, err := os.Lstat(c.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			// A socket left by a daemon that did not stop cleanly.
			os.Remove(c.Socket)
		}
		ln, err := net.Listen("unix", c.Socket)
		if err != nil {
			return nil, fmt.Errorf("listening for control service: %w", err)
		}
		if err := os.Chmod(c.Socket, 0o660); err != nil {
			ln.Close()
			return nil, fmt.Errorf("setting control socket mode: %w", err)
		}
		return ln, nil
	case "tcp":
		if c.Port < 0 || c.Port > 65535 {
			return nil, fmt.Errorf("listening for control service: invalid configuration: control.port = %d", c.Port)
		}
		host := "127.0.0.1"
		if !c.PreferIPv4 {
			host = "::1"
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(c.Port)))
		if err != nil {
			return nil, fmt.Errorf("listening for control service: %w", err)
		}
		return ln, nil
	default:
		return nil, fmt.Errorf("listening for control service: invalid configuration: control.transport = %s", c.Transport)
	}
}
