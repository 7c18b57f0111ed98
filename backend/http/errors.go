package http

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/imageio/imageio/backend"
)

// Sentinel errors of this package. Callers branch on them with errors.Is.
var (
	// ErrForbidden is a 403 from the daemon: the ticket is unknown, expired,
	// canceled or does not allow the operation.
	ErrForbidden = errors.New("access forbidden")
	// ErrNoSpace is a 507 from the daemon: the storage is full. It is
	// backend.ErrNoSpace, so errors.Is with either matches, and a daemon
	// that proxies to another passes the 507 on.
	ErrNoSpace = backend.ErrNoSpace
)

// ServerError is an error response from the daemon. Message is the text
// the daemon sent, with the ticket id redacted.
type ServerError struct {
	Op      string // what the client was doing, e.g. "writing 0-4194303"
	Code    int    // HTTP status
	Message string
}

func (e *ServerError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = nethttp.StatusText(e.Code)
	}
	return fmt.Sprintf("%s: server returned %d: %s", e.Op, e.Code, msg)
}

// Unwrap maps the status to this package's and backend's sentinels.
func (e *ServerError) Unwrap() error {
	switch e.Code {
	case nethttp.StatusForbidden:
		return ErrForbidden
	case nethttp.StatusRequestedRangeNotSatisfiable:
		return backend.ErrOutOfRange
	case nethttp.StatusInsufficientStorage:
		return ErrNoSpace
	case nethttp.StatusNotImplemented:
		return backend.ErrNotSupported
	}
	return nil
}

// transient reports whether retrying the request may succeed.
func (e *ServerError) transient() bool {
	return e.Code >= 500 && e.Code != nethttp.StatusNotImplemented &&
		e.Code != nethttp.StatusInsufficientStorage
}

// CertificateError says that the daemon's certificate is not trusted by the
// CA bundle in use.
type CertificateError struct {
	URL    string // redacted
	CAFile string // "" means the system CAs
	Err    error
}

func (e *CertificateError) Error() string {
	ca := "the system CAs"
	if e.CAFile != "" {
		ca = fmt.Sprintf("the CA file %q", e.CAFile)
	}
	return fmt.Sprintf("connecting to %s: server certificate not trusted by %s (%v); "+
		"give the CA that signed it with --cafile", e.URL, ca, e.Err)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// transientError marks an error from the network: the request may succeed
// when sent again.
type transientError struct {
	err error
	msg string // err's text, redacted
}

func (e *transientError) Error() string { return e.msg }
func (e *transientError) Unwrap() error { return e.err }

// isTransient reports whether err is worth a retry.
func isTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *ServerError
	if errors.As(err, &se) {
		return se.transient()
	}
	var te *transientError
	return errors.As(err, &te)
}

// isCertError reports whether err comes from verifying the server
// certificate.
func isCertError(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &invalid) ||
		errors.As(err, &hostname) || errors.As(err, &verify)
}

// isNetError reports whether err looks like a connection failure (used only
// to classify errors that did not come from the transport itself).
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED)
}

// redactor hides a ticket id in URLs and messages. The id is a secret
// only where it names the ticket: as a segment of a URL path
// (".../images/ID/extents") and in the daemon's "No such ticket ID"
// message. Elsewhere the same characters may be an ordinary word of a
// message (an id is any string the engine chose), so they are left alone.
type redactor struct {
	secret string // the ticket id; "" when the URL has none
}

// Redacted replaces the ticket id.
const Redacted = "***"

// noSuchTicket starts the daemon's message for an unknown ticket, which is
// followed by the id.
const noSuchTicket = "No such ticket "

func newRedactor(u *url.URL) redactor {
	p := strings.TrimRight(u.Path, "/")
	i := strings.LastIndexByte(p, '/')
	if i < 0 || i == len(p)-1 {
		return redactor{}
	}
	return redactor{secret: p[i+1:]}
}

// text replaces the ticket id in s where it is a path segment (after a
// '/') or follows "No such ticket ", in its plain and path-escaped forms.
func (r redactor) text(s string) string {
	if r.secret == "" {
		return s
	}
	forms := []string{r.secret}
	if esc := url.PathEscape(r.secret); esc != r.secret {
		forms = append(forms, esc)
	}
	for _, id := range forms {
		s = replaceAfter(s, "/", id, Redacted)
		s = replaceAfter(s, noSuchTicket, id, Redacted)
	}
	return s
}

// replaceAfter replaces id with repl wherever it follows prefix and ends
// at a segment boundary (the end of s, or a byte that cannot be part of a
// path segment's word: '/', '?', '#', a space, a quote, ...).
func replaceAfter(s, prefix, id, repl string) string {
	pat := prefix + id
	var b strings.Builder
	for {
		i := strings.Index(s, pat)
		if i < 0 {
			break
		}
		end := i + len(pat)
		if end < len(s) && !isBoundary(s[end]) {
			b.WriteString(s[:i+1])
			s = s[i+1:]
			continue
		}
		b.WriteString(s[:i+len(prefix)])
		b.WriteString(repl)
		s = s[end:]
	}
	if b.Len() == 0 {
		return s
	}
	b.WriteString(s)
	return b.String()
}

// isBoundary reports whether c ends a ticket id: anything but a letter, a
// digit, or one of "-_~%" (which ids and their escaped forms contain).
func isBoundary(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return false
	}
	return !strings.ContainsRune("-_~%", rune(c))
}

// url returns u as a string without the ticket id, user info and query.
func (r redactor) url(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	c.RawPath = ""
	if r.secret == "" {
		return c.String()
	}
	// Replace with a placeholder that needs no escaping, then with
	// Redacted, which url.URL.String would escape.
	// The id is the last segment (see newRedactor); replace that one only.
	trimmed := strings.TrimRight(c.Path, "/")
	if strings.HasSuffix(trimmed, "/"+r.secret) {
		c.Path = trimmed[:len(trimmed)-len(r.secret)] + "REDACTED" + c.Path[len(trimmed):]
	} else {
		c.Path = replaceAfter(c.Path, "/", r.secret, "REDACTED")
	}
	return strings.ReplaceAll(c.String(), "/REDACTED", "/"+Redacted)
}

// transportError turns an error from Client.Do or from reading a response
// body into a redacted error: *url.Error, which embeds the URL with the
// ticket id, is replaced by its cause (callers name the request with the
// redacted URL), certificate errors become *CertificateError, context
// errors are kept as they are, and the rest is marked transient.
func (b *Backend) transportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// The caller's message names the request and the redacted URL;
		// keep only the cause.
		err = ue.Err
	}
	if isCertError(err) {
		return &CertificateError{URL: b.display, CAFile: b.opts.CAFile, Err: innerCertError(err)}
	}
	return &transientError{err: err, msg: b.red.text(err.Error())}
}

// innerCertError returns the x509 error without the url.Error around it.
func innerCertError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// cause returns the network error under err, for short messages.
func cause(err error) error {
	var te *transientError
	if errors.As(err, &te) {
		return te
	}
	return err
}
