package engine

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	ovirtsdk4 "github.com/ovirt/go-ovirt"
)

// maxBody bounds the API response bodies the guard reads into memory.
const maxBody = 16 << 20

// guard is the http.RoundTripper wrapped around the SDK's transport. See
// "Keeping stdout clean" in the package documentation.
type guard struct {
	logf func(string, ...any)

	// mu guards ctx and unauthorized.
	mu sync.Mutex
	// ctx is the context of the SDK call in progress. Contexts are not
	// normally kept in structs; the SDK has no way to pass one, so Client.call
	// sets it for the duration of one call (calls are serialized).
	ctx context.Context
	// unauthorized is set when an API request of the current call was
	// answered with HTTP 401.
	unauthorized bool
}

// begin starts an SDK call: its requests get ctx, and the 401 flag is
// cleared.
func (g *guard) begin(ctx context.Context) {
	g.mu.Lock()
	g.ctx = ctx
	g.unauthorized = false
	g.mu.Unlock()
}

// end ends the SDK call started by begin.
func (g *guard) end() {
	g.mu.Lock()
	g.ctx = nil
	g.unauthorized = false
	g.mu.Unlock()
}

// takeUnauthorized reports whether an API request answered 401 since begin
// or the previous takeUnauthorized, and clears the flag.
func (g *guard) takeUnauthorized() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.unauthorized
	g.unauthorized = false
	return u
}

// installGuard wraps the transport of conn's unexported *http.Client.
func installGuard(conn *ovirtsdk4.Connection, g *guard) error {
	f := reflect.ValueOf(conn).Elem().FieldByName("client")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*http.Client]() {
		return errors.New("building engine connection: unsupported go-ovirt version (no client field)")
	}
	hc := *(**http.Client)(unsafe.Pointer(f.UnsafeAddr()))
	if hc == nil {
		return errors.New("building engine connection: unsupported go-ovirt version (nil client)")
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = &guardTransport{g: g, next: next}
	return nil
}

type guardTransport struct {
	g    *guard
	next http.RoundTripper
}

func (t *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.g.mu.Lock()
	ctx := t.g.ctx
	t.g.mu.Unlock()
	if ctx != nil {
		req = req.WithContext(ctx)
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		t.g.logf("engine: %s %s: %v", req.Method, req.URL.Path, err)
		return nil, err
	}
	t.g.logf("engine: %s %s: %s", req.Method, req.URL.Path, resp.Status)
	// SSO requests are JSON and parsed without the XML reader.
	if !strings.Contains(req.Header.Get("Accept"), "xml") {
		return resp, nil
	}
	if resp.StatusCode == http.StatusUnauthorized {
		t.g.mu.Lock()
		t.g.unauthorized = true
		t.g.mu.Unlock()
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading engine response: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized && rootElement(body) != "fault" {
		// An expired token gets the engine's HTML page. The SDK's action
		// reader would fail on it with "Tag not matched"; as a <fault>
		// every SDK path reports an *ovirtsdk4.AuthError.
		body = faultDocument("Unauthorized", pageText(body))
		resp.Header.Set("Content-Type", "application/xml")
	}
	if !hasElement(body) && !(req.Method == http.MethodDelete && resp.StatusCode/100 == 2) && !(len(body) == 0 && resp.StatusCode >= 400) {
		// The SDK would print "err is EOF" to stdout on this body.
		reason := "Empty response"
		detail := fmt.Sprintf("engine answered %s with no XML document", resp.Status)
		if len(bytes.TrimSpace(body)) > 0 {
			detail += ": " + truncate(strings.TrimSpace(string(body)), 200)
		}
		if resp.StatusCode/100 == 2 {
			resp.StatusCode = http.StatusBadGateway
			resp.Status = "502 Bad Gateway"
		}
		body = faultDocument(reason, detail)
		resp.Header.Set("Content-Type", "application/xml")
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

// hasElement reports whether body is a well-formed XML document with at
// least one element. Anything else could make the SDK's reader fail, and
// its reader prints on failure.
func hasElement(body []byte) bool {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	seen := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return seen
		}
		if err != nil {
			return false
		}
		if _, ok := tok.(xml.StartElement); ok {
			seen = true
		}
	}
}

// faultDocument returns an engine <fault> with reason and detail. Text
// that XML cannot hold (invalid UTF-8, control characters) is dropped, so
// the document is always well formed.
func faultDocument(reason, detail string) []byte {
	return []byte("<fault><reason>" + xmlText(reason) + "</reason><detail>" + xmlText(detail) + "</detail></fault>")
}

// xmlText escapes s for XML character data, dropping what XML 1.0 forbids.
func xmlText(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20, r == utf8.RuneError, r >= 0xd800 && r <= 0xdfff, r == 0xfffe, r == 0xffff:
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	return html.EscapeString(s)
}

// rootElement returns the name of the first element of body, or "" when
// there is none (or the XML breaks before it).
func rootElement(body []byte) string {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = false
	for {
		tok, err := d.Token()
		if err != nil {
			return ""
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name.Local
		}
	}
}

// pageText returns the text of an HTML or plain-text error page on one
// line, at most 200 bytes, for an error message.
func pageText(body []byte) string {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	var parts []string
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if cd, ok := tok.(xml.CharData); ok {
			if s := strings.Join(strings.Fields(string(cd)), " "); s != "" {
				parts = append(parts, s)
			}
		}
	}
	if len(parts) == 0 {
		parts = strings.Fields(string(body))
	}
	return truncate(strings.Join(parts, " "), 200)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
