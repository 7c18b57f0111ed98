// Package daemontest runs a real imageiod daemon inside a test process:
// HTTPS on 127.0.0.1 with certificates made by the test, optionally the
// local Unix socket service, and tickets added straight to its store.
//
// It is test support only and never part of a program.
package daemontest

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/daemon"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/ticket"
)

// Options configures Start.
type Options struct {
	// Local also runs the local service on a random abstract Unix socket.
	Local bool
	// HTTPCAFile is [backend_http] ca_file, the CA the daemon trusts when
	// it proxies to another daemon; empty means the daemon's own CA.
	HTTPCAFile string
	// Schemes adds ticket URL schemes to daemon.DefaultSchemes.
	Schemes map[string]daemon.Scheme
}

// Daemon is a daemon started by Start.
type Daemon struct {
	*daemon.Daemon
	// TLS holds the daemon's certificate, key and CA.
	TLS testutil.TLSFiles
	// Dir is the test directory that holds the TLS files.
	Dir string

	schemes []string
}

// Start runs a daemon until the test ends; the test fails if Run returns
// an error.
func Start(t testing.TB, opts Options) *Daemon {
	t.Helper()
	dir := t.TempDir()
	files := testutil.NewTLS(t, dir)
	cfg := config.Default()
	cfg.TLS = config.TLS{Enable: true, CertFile: files.CertFile, KeyFile: files.KeyFile}
	cfg.Remote = config.Remote{Host: "127.0.0.1", Port: 0}
	cfg.Local = config.Local{Enable: opts.Local}
	cfg.Control.Enable = false
	cfg.BackendHTTP.CAFile = files.CAFile
	if opts.HTTPCAFile != "" {
		cfg.BackendHTTP.CAFile = opts.HTTPCAFile
	}
	schemes := daemon.DefaultSchemes(cfg)
	maps.Copy(schemes, opts.Schemes)
	d, err := daemon.Listen(cfg, daemon.Options{ShutdownTimeout: time.Second, Schemes: schemes})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	return &Daemon{Daemon: d, TLS: files, Dir: dir, schemes: daemon.SchemeNames(schemes)}
}

// AddTicket adds a sparse read-write ticket for the image at url of size
// bytes and returns the transfer URL of the remote service.
func (d *Daemon) AddTicket(t testing.TB, url string, size int64) string {
	t.Helper()
	return d.addTicket(t, url, size, false)
}

// AddDirtyTicket is AddTicket for a ticket with "dirty": true (extents
// report dirty ranges).
func (d *Daemon) AddDirtyTicket(t testing.TB, url string, size int64) string {
	t.Helper()
	return d.addTicket(t, url, size, true)
}

func (d *Daemon) addTicket(t testing.TB, url string, size int64, dirty bool) string {
	t.Helper()
	id := rand.Text()
	doc := fmt.Sprintf(`{"uuid": %q, "size": %d, "url": %q, "ops": ["read", "write"], "timeout": 300, "sparse": true, "dirty": %v}`,
		id, size, url, dirty)
	tk, err := ticket.Parse([]byte(doc), ticket.ParseOptions{InactivityTimeout: 60, Schemes: d.schemes})
	if err != nil {
		t.Fatal(err)
	}
	d.Tickets.Add(tk)
	return fmt.Sprintf("https://%s/images/%s", d.RemoteAddr(), id)
}
