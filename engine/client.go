package engine

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	ovirtsdk4 "github.com/ovirt/go-ovirt"
)

// Config says how to reach the engine and how long to wait.
type Config struct {
	// URL of the engine, "https://engine.example.com"; "/ovirt-engine/api"
	// is appended when the path does not end with it.
	URL      string
	Username string // e.g. admin@internal
	Password string
	// CAFile is a PEM file of CA certificates trusted in addition to the
	// system pool; Insecure skips verification altogether.
	CAFile   string
	Insecure bool

	// Timeout bounds one HTTP request (default 60 s).
	Timeout time.Duration
	// DiskTimeout bounds the wait for a new disk to become ok (default 120 s).
	DiskTimeout time.Duration
	// TransferTimeout bounds the wait for a transfer to reach transferring,
	// and the wait after cancel (default 60 s).
	TransferTimeout time.Duration
	// FinalizeTimeout bounds the wait after finalize (default 300 s).
	FinalizeTimeout time.Duration
	// PollInterval is the first delay between polls (default 250 ms); it
	// doubles up to MaxPollInterval (default 2 s).
	PollInterval    time.Duration
	MaxPollInterval time.Duration

	// Logf receives debug messages; nil discards them.
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Timeout, 60*time.Second)
	def(&c.DiskTimeout, 120*time.Second)
	def(&c.TransferTimeout, 60*time.Second)
	def(&c.FinalizeTimeout, 300*time.Second)
	def(&c.PollInterval, 250*time.Millisecond)
	def(&c.MaxPollInterval, 2*time.Second)
	if c.MaxPollInterval < c.PollInterval {
		c.MaxPollInterval = c.PollInterval
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// APIURL returns the API URL for an engine URL: "/ovirt-engine/api" is
// appended unless the path already ends with it; a trailing "/" is dropped.
func APIURL(engineURL string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(engineURL))
	if err != nil {
		return "", fmt.Errorf("parsing engine URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", fmt.Errorf("parsing engine URL %q: scheme must be https or http", engineURL)
	}
	if u.Host == "" {
		return "", fmt.Errorf("parsing engine URL %q: no host", engineURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(u.Path, "/ovirt-engine/api") {
		u.Path += "/ovirt-engine/api"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String(), nil
}

// Client is a connection to one engine.
type Client struct {
	cfg    Config
	apiURL string
	guard  *guard

	// mu serializes SDK calls and guards conn.
	mu   sync.Mutex
	conn *ovirtsdk4.Connection
}

// Connect builds a connection to the engine, logs in and checks it by
// reading the API root.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	cfg.setDefaults()
	api, err := APIURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Username == "" {
		return nil, errors.New("connecting to engine: no username")
	}
	if cfg.Password == "" {
		return nil, errors.New("connecting to engine: no password")
	}
	c := &Client{cfg: cfg, apiURL: api, guard: &guard{logf: cfg.Logf}}
	c.mu.Lock()
	err = c.rebuild()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	err = c.call(ctx, "connecting to engine", func(conn *ovirtsdk4.Connection) error {
		_, err := conn.SystemService().Get().Send()
		return err
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// URL returns the API URL the client talks to.
func (c *Client) URL() string { return c.apiURL }

// Close releases the connection. It does not revoke the SSO token: the
// pinned SDK sends the logout without the token, so the request would do
// nothing; the engine expires the session.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.CloseIfRevokeSSOToken(false)
	c.conn = nil
	return err
}

// rebuild makes a new SDK connection (which logs in on first use).
// Called with mu held.
func (c *Client) rebuild() error {
	b := ovirtsdk4.NewConnectionBuilder().
		URL(c.apiURL).
		Username(c.cfg.Username).
		Password(c.cfg.Password).
		Insecure(c.cfg.Insecure).
		Timeout(c.cfg.Timeout)
	if c.cfg.CAFile != "" && !c.cfg.Insecure {
		b = b.CAFile(c.cfg.CAFile)
	}
	conn, err := b.Build()
	if err != nil {
		return fmt.Errorf("building engine connection: %w", err)
	}
	if err := installGuard(conn, c.guard); err != nil {
		return err
	}
	c.conn = conn
	return nil
}

// call runs fn with the current connection under mu, with ctx applied to
// its HTTP requests. On HTTP 401 it rebuilds the connection (a fresh login)
// and runs fn once more. Errors are wrapped with what.
func (c *Client) call(ctx context.Context, what string, fn func(*ovirtsdk4.Connection) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return fmt.Errorf("%s: client is closed", what)
	}
	c.guard.begin(ctx)
	defer c.guard.end()
	err := fn(c.conn)
	// The 401 is seen by the transport wrapper, whatever error the SDK
	// made of it (an action's reader reports a tag mismatch on the HTML
	// page of an expired token).
	unauthorized := c.guard.takeUnauthorized()
	if err != nil && (unauthorized || isUnauthorized(err)) {
		c.cfg.Logf("engine: %s: HTTP 401, logging in again", what)
		if rerr := c.rebuild(); rerr != nil {
			return fmt.Errorf("%s: %w", what, rerr)
		}
		err = fn(c.conn)
		unauthorized = c.guard.takeUnauthorized()
	}
	if err != nil {
		return wrap(ctx, what, err, unauthorized)
	}
	return nil
}

// isUnauthorized reports whether err is an HTTP 401 from the API (an
// expired or revoked token), as opposed to a rejected login.
func isUnauthorized(err error) bool {
	var ae *ovirtsdk4.AuthError
	if errors.As(err, &ae) && ae.Code == 401 {
		return true
	}
	var pe *ovirtsdk4.ResponseParseError
	return errors.As(err, &pe) && pe.Code == 401
}

// wrap adds context and our sentinels to an SDK error; unauthorized says
// that the transport saw HTTP 401 during the call.
func wrap(ctx context.Context, what string, err error, unauthorized bool) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%s: %w (%w)", what, cerr, err)
	}
	var ae *ovirtsdk4.AuthError
	if unauthorized || errors.As(err, &ae) || isUnauthorized(err) {
		return fmt.Errorf("%s: %w: %w", what, ErrAuth, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isNotFound reports whether err is the SDK's 404.
func isNotFound(err error) bool {
	var nf *ovirtsdk4.NotFoundError
	return errors.As(err, &nf)
}

// poller sleeps between polls with doubling delays, bounded by a deadline.
type poller struct {
	delay, max time.Duration
	deadline   time.Time
}

func (c *Client) newPoller(timeout time.Duration) *poller {
	return &poller{delay: c.cfg.PollInterval, max: c.cfg.MaxPollInterval, deadline: time.Now().Add(timeout)}
}

// wait sleeps before the next poll. It returns ErrTimeout when the
// deadline has passed and the context's error when it is done.
func (p *poller) wait(ctx context.Context) error {
	left := time.Until(p.deadline)
	if left <= 0 {
		return ErrTimeout
	}
	d := min(p.delay, left)
	p.delay = min(2*p.delay, p.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
