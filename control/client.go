package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/imageio/imageio/config"
)

// ServerError is the error the Client returns when the control service
// answers with a status other than 2xx.
type ServerError struct {
	Code    int    // HTTP status code
	Message string // response body without the trailing newline
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server error: %d %s", e.Code, e.Message)
}

// IsNotFound reports whether err is a ServerError with status 404.
func IsNotFound(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// Client talks to the control service of one daemon. It is safe for
// concurrent use.
type Client struct {
	http *http.Client
	base string // scheme and host for request URLs
}

// clientTimeout bounds one request, like the reference's admin client.
const clientTimeout = 60 * time.Second

// NewClient returns a client for the control service listening on addr:
// network "unix" with a socket path (a leading "\x00" or "@" names an
// abstract socket) or "tcp" with "127.0.0.1:port".
func NewClient(network, addr string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			a := addr
			if network == "unix" && strings.HasPrefix(a, "\x00") {
				a = "@" + a[1:]
			}
			return d.DialContext(ctx, network, a)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	host := "localhost"
	if network != "unix" {
		host = addr
	}
	return &Client{
		http: &http.Client{Transport: tr, Timeout: clientTimeout},
		base: "http://" + host,
	}
}

// ClientFromConfig returns a client for the control service described by
// the [control] section of the daemon configuration in confDir.
func ClientFromConfig(confDir string) (*Client, error) {
	cfg, err := config.Load(confDir)
	if err != nil {
		return nil, err
	}
	return clientFor(cfg.Control)
}

func clientFor(c config.Control) (*Client, error) {
	switch c.Transport {
	case "unix":
		return NewClient("unix", c.Socket), nil
	case "tcp":
		if c.Port <= 0 || c.Port > 65535 {
			return nil, fmt.Errorf("control service: invalid port %d", c.Port)
		}
		host := "127.0.0.1"
		if !c.PreferIPv4 {
			host = "::1"
		}
		return NewClient("tcp", net.JoinHostPort(host, strconv.Itoa(c.Port))), nil
	default:
		return nil, fmt.Errorf("control service: unsupported transport %q", c.Transport)
	}
}

// AddTicket adds or replaces the ticket described by the JSON document.
func (c *Client) AddTicket(ctx context.Context, ticket []byte) error {
	id, err := ticketID(ticket)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPut, id, ticket)
	return err
}

// GetTicket returns the status of the ticket id as JSON.
func (c *Client) GetTicket(ctx context.Context, id string) (json.RawMessage, error) {
	body, err := c.do(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(bytes.TrimSpace(body)), nil
}

// ModTicket extends the ticket id to expire timeout seconds from now.
func (c *Client) ModTicket(ctx context.Context, id string, timeout int) error {
	body, err := json.Marshal(map[string]int{"timeout": timeout})
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPatch, id, body)
	return err
}

// DelTicket cancels and removes the ticket id. Removing a missing ticket
// is not an error.
func (c *Client) DelTicket(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, id, nil)
	return err
}

// ticketID returns the uuid of a ticket document for the request path. A
// document without a usable uuid is sent under a placeholder so the server
// reports what is wrong with it.
func ticketID(ticket []byte) (string, error) {
	var t struct {
		UUID any `json:"uuid"`
	}
	if err := json.Unmarshal(ticket, &t); err != nil {
		return "", fmt.Errorf("parsing ticket: %w", err)
	}
	if s, ok := t.UUID.(string); ok && s != "" {
		return s, nil
	}
	return "-", nil
}

// maxResponse bounds the response bodies the client reads.
const maxResponse = 1 << 20

func (c *Client) do(ctx context.Context, method, id string, body []byte) ([]byte, error) {
	u := c.base + "/tickets/" + url.PathEscape(id)
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, fmt.Errorf("making %s request: %w", method, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error embeds the URL, which holds the ticket id: a secret.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("sending %s request to control service: %w", method, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("reading control service response: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &ServerError{Code: resp.StatusCode, Message: strings.TrimRight(string(data), "\r\n")}
	}
	return data, nil
}
