package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/control"
	"github.com/imageio/imageio/ticket"
)

// Options are the parts of a Daemon that do not come from the
// configuration files.
type Options struct {
	Logger *slog.Logger
	// Schemes overrides DefaultSchemes (tests add an in-memory backend).
	Schemes map[string]Scheme
	// ShutdownTimeout bounds the graceful stop (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// PipelineDepth is the data buffers per GET or PUT
	// (DefaultPipelineDepth); 1 copies serially.
	PipelineDepth int
}

// Daemon is imageiod: the remote, local and control services sharing one
// ticket store, with their listeners bound.
type Daemon struct {
	Tickets *ticket.Store

	log                   *slog.Logger
	remote, local         *Service
	control               *control.Server
	remoteLn, localLn, cl net.Listener
	localSocket           string
}

// Listen binds the listeners of the services enabled in cfg and returns
// the daemon ready to Run. The control service listens only on a Unix
// socket or on the loopback address.
func Listen(cfg config.Config, opts Options) (_ *Daemon, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	schemes := opts.Schemes
	if schemes == nil {
		schemes = DefaultSchemes(cfg)
	}
	d := &Daemon{
		Tickets: ticket.NewStore(ticket.Config{MaxConnections: cfg.Daemon.MaxConnections}),
		log:     log,
	}
	defer func() {
		if err != nil {
			d.closeListeners()
		}
	}()
	var tlsConf *tls.Config
	if cfg.TLS.Enable {
		if tlsConf, err = TLSConfig(cfg.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.Remote.Port < 0 || cfg.Remote.Port > 65535 {
		return nil, fmt.Errorf("invalid configuration: remote.port = %d", cfg.Remote.Port)
	}
	host := cfg.Remote.Host
	if host == "" {
		host = "0.0.0.0"
	}
	if d.remoteLn, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.Remote.Port))); err != nil {
		return nil, fmt.Errorf("listening for remote service: %w", err)
	}
	if cfg.Local.Enable {
		if d.localLn, d.localSocket, err = listenLocal(cfg.Local.Socket); err != nil {
			return nil, err
		}
	}
	if cfg.Control.Enable {
		if d.cl, err = control.Listen(cfg.Control); err != nil {
			return nil, err
		}
	}
	svc := Config{
		Tickets:         d.Tickets,
		Schemes:         schemes,
		MaxConnections:  cfg.Daemon.MaxConnections,
		UnixSocket:      d.localSocket,
		ShutdownTimeout: opts.ShutdownTimeout,
		PipelineDepth:   opts.PipelineDepth,
		Logger:          log,
	}
	local := svc
	svc.TLS = tlsConf
	d.remote = NewRemote(svc)
	if d.localLn != nil {
		d.local = NewLocal(local)
	}
	if d.cl != nil {
		d.control = control.NewServer(control.ServerConfig{
			Tickets:       d.Tickets,
			Parse:         ticket.ParseOptions{InactivityTimeout: cfg.Daemon.InactivityTimeout, Schemes: SchemeNames(schemes)},
			RemoveTimeout: time.Duration(cfg.Control.RemoveTimeout) * time.Second,
			Logger:        log,
		})
	}
	return d, nil
}

// listenLocal listens on the local service socket: a path, an abstract
// name starting with "\x00", or "" for a random abstract name. It returns
// the name to report as unix_socket.
func listenLocal(socket string) (net.Listener, string, error) {
	if socket == "" {
		var b [16]byte
		rand.Read(b[:])
		socket = fmt.Sprintf("\x00/org/ovirt/imageio/%x", b)
	}
	addr := socket
	if strings.HasPrefix(socket, "\x00") {
		addr = "@" + socket[1:]
	} else if fi, err := os.Lstat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(socket)
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listening for local service: %w", err)
	}
	return ln, socket, nil
}

// TLSConfig returns the server TLS configuration of the remote service:
// TLS 1.2 or later, the certificate and key of cfg (both required).
func TLSConfig(c config.TLS) (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, fmt.Errorf("TLS enabled (see [tls] section), but not configured: cert_file = %q, key_file = %q", c.CertFile, c.KeyFile)
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate: %w", err)
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading TLS CA file %s: no certificates", c.CAFile)
		}
		// Client certificates are not requested, as in the reference;
		// the CA is checked to catch a broken configuration early.
		conf.ClientCAs = pool
	}
	return conf, nil
}

// RemoteAddr is the address of the remote service.
func (d *Daemon) RemoteAddr() net.Addr { return d.remoteLn.Addr() }

// LocalSocket is the socket of the local service ("\x00..." when
// abstract), or "" when it is disabled.
func (d *Daemon) LocalSocket() string { return d.localSocket }

// ControlAddr is the address of the control service, or nil when it is
// disabled.
func (d *Daemon) ControlAddr() net.Addr {
	if d.cl == nil {
		return nil
	}
	return d.cl.Addr()
}

// Run serves every service until ctx is done or one fails, then stops
// them all gracefully.
func (d *Daemon) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.remote.Run(ctx, d.remoteLn) })
	if d.local != nil {
		g.Go(func() error { return d.local.Run(ctx, d.localLn) })
	}
	if d.control != nil {
		g.Go(func() error { return d.control.Run(ctx, d.cl) })
	}
	d.log.Info("imageiod started", "version", Version, "remote", d.remoteLn.Addr().String(),
		"local", strings.ReplaceAll(d.localSocket, "\x00", "@"), "control", addrString(d.cl))
	err := g.Wait()
	d.closeListeners()
	d.log.Info("imageiod stopped")
	return err
}

func addrString(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func (d *Daemon) closeListeners() {
	for _, ln := range []net.Listener{d.remoteLn, d.localLn, d.cl} {
		if ln != nil {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				d.log.Debug("closing listener", "err", err)
			}
		}
	}
}
