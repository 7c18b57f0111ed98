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
	"unsafe"

	ovirtsdk4 "github.com/ovirt/go-ovirt"
)

// maxBody bounds the API response bodies the guard reads into memory.
const maxBody = 16 << 20

// guard is the http.RoundTripper wrapped around the SDK's transport. See
// "Keeping stdout clean" in the package documentation.
type guard struct {
	logf func(string, ...any)

	// mu guards ctx.
	mu sync.Mutex
	// ctx is the context of the SDK call in progress. Contexts are not
	// normally kept in structs; the SDK has no way to pass one, so Client.call
	// sets it for the duration of one call (calls are serialized).
	ctx context.Context
}

func (g *guard) setContext(ctx context.Context) {
	g.mu.Lock()
	g.ctx = ctx
	g.mu.Unlock()
}

func (g *guard) clearContext() {
	g.mu.Lock()
	g.ctx = nil
	g.mu.Unlock()
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading engine response: %w", err)
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
		body = []byte("<fault><reason>" + html.EscapeString(reason) + "</reason><detail>" + html.EscapeString(detail) + "</detail></fault>")
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
