package enginesim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultUsername is the user the simulator accepts unless Config says
// otherwise.
const DefaultUsername = "admin@internal"

// Config describes a simulator.
type Config struct {
	// StorageDir holds the disk files, named by disk id. Required.
	StorageDir string
	// StateDir holds the certificates, the daemons' configuration, sockets
	// and logs. "" makes a temporary directory removed by Close.
	StateDir string
	// Listen is the engine's HTTPS address (default "127.0.0.1:0").
	Listen string
	// Imageiod is the imageiod binary; "" looks next to the running
	// executable, then in $PATH.
	Imageiod string
	// HostPort and ProxyPort are the daemons' HTTPS ports; 0 picks free ones.
	HostPort, ProxyPort int
	// NoProxy runs no proxy daemon; transfers then have no proxy_url.
	NoProxy bool
	// Username and Password accepted by SSO; Password "" generates one.
	Username, Password string
	// StorageDomains are the storage domains, "NAME" or "NAME:TYPE" with
	// TYPE nfs (the default), iscsi or fcp; default ["data1"]. All keep their
	// disks in StorageDir; block domains (iscsi, fcp) refuse sparse raw disks
	// like the engine.
	StorageDomains []string

	// DiskDelay is how long a new disk stays locked (default 200 ms).
	DiskDelay time.Duration
	// InitDelay is how long a new transfer stays initializing (default 300 ms).
	InitDelay time.Duration
	// FinalizeDelay is how long finalizing takes (default 300 ms).
	FinalizeDelay time.Duration
	// Retention is how long a finished transfer is kept before GET gives
	// 404 (default 30 s; the engine keeps them 15 or 30 minutes).
	Retention time.Duration
	// MonitorInterval is how often a transferring transfer's ticket is
	// read for activity and inactivity (default 1 s, the engine's poll).
	MonitorInterval time.Duration

	// Faults are the initial fault knobs; see SetFaults.
	Faults Faults

	// Logf receives one line per request and per phase change; nil
	// discards them.
	Logf func(format string, args ...any)
}

// Faults are knobs that make the simulator misbehave like a troubled
// engine. They can be changed while it runs with SetFaults.
type Faults struct {
	// SlowInit is added to InitDelay.
	SlowInit time.Duration
	// PausedSystem sends new transfers from initializing to paused_system,
	// as when imageio is not running on the host.
	PausedSystem bool
	// FinalizeFailure makes finalize of an upload end in finished_failure
	// with the disk illegal, as when verification fails.
	FinalizeFailure bool
	// DeadTransferURL gives transfer_url a port nobody listens on; the
	// proxy_url still works.
	DeadTransferURL bool
	// TokenLifetime expires SSO tokens this long after login; API calls
	// with an expired token get 401 with the engine's HTML page. 0 = never.
	TokenLifetime time.Duration
	// OldEngine removes finished transfers at once (engines before 4.4.7).
	OldEngine bool
	// EmptyResponses answers every API GET with 200 and an empty body, as a
	// broken reverse proxy might; the pinned SDK prints to stdout on such
	// an answer unless the client guards against it.
	EmptyResponses bool
}

// Request is one request the simulator received, for test assertions. The
// password of SSO requests is replaced by "***".
type Request struct {
	Time   time.Time
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
	Status int
}

// Sim is a running engine simulator.
type Sim struct {
	cfg      Config
	url      string
	certs    certFiles
	stateDir string
	ownState bool // remove stateDir on Close
	hostID   string
	sdIDs    map[string]string // name -> id
	sdNames  []string          // in configuration order
	sdTypes  map[string]string // name -> storage type
	dcID     string
	deadPort int

	// Username and Password are the credentials SSO accepts.
	Username, Password string

	host, proxy *daemon
	srv         *http.Server
	serveDone   chan struct{}
	ctx         context.Context // canceled by Close; owned goroutines stop on it
	stop        context.CancelFunc
	wg          sync.WaitGroup

	// mu guards the fields below. Lock order: mu is never held while
	// calling a daemon, qemu-img or qemu-nbd.
	mu        sync.Mutex
	faults    Faults
	tokens    map[string]time.Time // token -> expiry (zero = never)
	disks     map[string]*disk
	transfers map[string]*transfer
	backups   map[string]*backup
	// checkpoints lists each VM's checkpoints, oldest (the root) first.
	checkpoints map[string][]*checkpoint
	requests    []Request
	closed      bool
}

// Start makes the state directory and certificates, starts the imageiod
// host daemon (and the proxy unless NoProxy) and the engine's HTTPS
// listener. Close stops everything.
func Start(ctx context.Context, cfg Config) (_ *Sim, err error) {
	if cfg.StorageDir == "" {
		return nil, errors.New("starting engine simulator: no storage directory")
	}
	if st, err := os.Stat(cfg.StorageDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("starting engine simulator: storage directory %q is not a directory", cfg.StorageDir)
	}
	setDefaults(&cfg)
	binary, err := findImageiod(cfg.Imageiod)
	if err != nil {
		return nil, err
	}
	s := &Sim{
		cfg:         cfg,
		Username:    cfg.Username,
		Password:    cfg.Password,
		faults:      cfg.Faults,
		tokens:      map[string]time.Time{},
		disks:       map[string]*disk{},
		transfers:   map[string]*transfer{},
		backups:     map[string]*backup{},
		checkpoints: map[string][]*checkpoint{},
		hostID:      newID(),
		dcID:        newID(),
		sdIDs:       map[string]string{},
		serveDone:   make(chan struct{}),
	}
	s.sdTypes = map[string]string{}
	for _, entry := range cfg.StorageDomains {
		name, typ, _ := strings.Cut(entry, ":")
		switch typ {
		case "":
			typ = "nfs"
		case "nfs", "iscsi", "fcp":
		default:
			return nil, fmt.Errorf("starting engine simulator: storage domain %q: unsupported type %q", name, typ)
		}
		if name == "" || s.sdIDs[name] != "" {
			return nil, fmt.Errorf("starting engine simulator: empty or repeated storage domain name %q", entry)
		}
		s.sdIDs[name] = newID()
		s.sdNames = append(s.sdNames, name)
		s.sdTypes[name] = typ
	}
	if s.Password == "" {
		s.Password = randomHex(12)
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.stateDir = cfg.StateDir
	if s.stateDir == "" {
		if s.stateDir, err = os.MkdirTemp("", "enginesim-"); err != nil {
			return nil, fmt.Errorf("making state directory: %w", err)
		}
		s.ownState = true
	} else if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("making state directory: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	lhost, lport, _ := net.SplitHostPort(ln.Addr().String())
	host, _, _ := net.SplitHostPort(cfg.Listen)
	hostname, _ := os.Hostname()
	if s.certs, err = writeCerts(s.stateDir, []string{host, lhost, hostname}); err != nil {
		ln.Close()
		return nil, err
	}
	if s.deadPort, err = freePort(); err != nil {
		ln.Close()
		return nil, err
	}
	s.host, err = startDaemonPort(ctx, daemonConfig{
		name: "host", dir: filepath.Join(s.stateDir, "host"), port: cfg.HostPort, certs: s.certs,
		logTo: filepath.Join(s.stateDir, "host.log"), binary: binary,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	if !cfg.NoProxy {
		s.proxy, err = startDaemonPort(ctx, daemonConfig{
			name: "proxy", dir: filepath.Join(s.stateDir, "proxy"), port: cfg.ProxyPort, certs: s.certs, proxy: true,
			logTo: filepath.Join(s.stateDir, "proxy.log"), binary: binary,
		})
		if err != nil {
			ln.Close()
			return nil, err
		}
	}
	cert, err := tls.LoadX509KeyPair(s.certs.Cert, s.certs.Key)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("loading server certificate: %w", err)
	}
	urlHost := lhost
	if ip := net.ParseIP(lhost); ip != nil && ip.IsUnspecified() {
		urlHost = "127.0.0.1"
	}
	s.url = "https://" + net.JoinHostPort(urlHost, lport)
	s.srv = &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	go func() {
		defer close(s.serveDone)
		s.srv.ServeTLS(ln, "", "")
	}()
	return s, nil
}

func setDefaults(c *Config) {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.Username == "" {
		c.Username = DefaultUsername
	}
	if len(c.StorageDomains) == 0 {
		c.StorageDomains = []string{"data1"}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.DiskDelay, 200*time.Millisecond)
	def(&c.InitDelay, 300*time.Millisecond)
	def(&c.FinalizeDelay, 300*time.Millisecond)
	def(&c.Retention, 30*time.Second)
	def(&c.MonitorInterval, time.Second)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// URL returns the engine's base URL, https://HOST:PORT; the API is at
// URL()+"/ovirt-engine/api".
func (s *Sim) URL() string { return s.url }

// CAFile returns the PEM file of the CA that signed the engine's and the
// daemons' certificates.
func (s *Sim) CAFile() string { return s.certs.CA }

// StateDir returns the directory with the certificates, daemon
// configurations and logs.
func (s *Sim) StateDir() string { return s.stateDir }

// HostURL and ProxyURL return the base URLs of the imageiod daemons
// ("" for the proxy when it is not running).
func (s *Sim) HostURL() string { return "https://127.0.0.1:" + strconv.Itoa(s.host.port) }

// ProxyURL returns the base URL of the proxy daemon, or "".
func (s *Sim) ProxyURL() string {
	if s.proxy == nil {
		return ""
	}
	return "https://127.0.0.1:" + strconv.Itoa(s.proxy.port)
}

// HostID returns the id of the simulated host (the one transfers run on).
func (s *Sim) HostID() string { return s.hostID }

// SetFaults replaces the fault knobs. New values apply to later requests
// and to transfers that have not yet passed the affected step.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// Faults returns the current fault knobs.
func (s *Sim) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Requests returns a copy of the request log (the newest entries, when
// more than 100000 requests were made).
func (s *Sim) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ExpireTokens makes every SSO token issued so far invalid, as when the
// engine's SSO session times out.
func (s *Sim) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := time.Now().Add(-time.Second)
	for t := range s.tokens {
		s.tokens[t] = past
	}
}

// Close cancels transfers in progress (removing their tickets and stopping
// their qemu-nbd), stops the listener and the daemons, and removes the
// state directory if Start made it. Disk files stay in StorageDir.
func (s *Sim) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	var errs []error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		cancel()
		<-s.serveDone
	}
	s.wg.Wait()
	for _, d := range []*daemon{s.proxy, s.host} {
		if d != nil {
			if err := d.stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.ownState {
		if err := os.RemoveAll(s.stateDir); err != nil {
			errs = append(errs, fmt.Errorf("removing state directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// newID returns a random UUID (version 4).
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand.Read does not fail on supported platforms.
		return "00000000-0000-4000-8000-000000000000"
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return newID()
	}
	return hex.EncodeToString(b)
}
