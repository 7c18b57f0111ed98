package enginesim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imageio/imageio/control"
)

// daemon is one imageiod process run by the simulator: the host daemon or
// the engine's proxy.
type daemon struct {
	name    string // "host" or "proxy"
	dir     string // config and run dir
	port    int    // remote HTTPS port
	control *control.Client
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error         // set before done is closed
	logFile *os.File
}

// daemonConfig describes the config file the simulator writes.
type daemonConfig struct {
	name   string
	dir    string
	port   int
	certs  certFiles
	proxy  bool // http backend towards the host; local service off
	logTo  string
	binary string
}

// findImageiod returns the imageiod binary to run: path if given, else the
// one next to the running executable, else the one in $PATH.
func findImageiod(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "imageiod")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath("imageiod")
	if err != nil {
		return "", fmt.Errorf("finding imageiod (use --imageiod): %w", err)
	}
	return p, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// writeConfig writes dir/conf.d/50-enginesim.conf.
func writeConfig(c daemonConfig) error {
	if err := os.MkdirAll(filepath.Join(c.dir, "conf.d"), 0o700); err != nil {
		return fmt.Errorf("making %s config dir: %w", c.name, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by enginesim for its %s daemon.\n", c.name)
	fmt.Fprintf(&b, "[daemon]\ndrop_privileges = false\nsystemd_enable = false\nrun_dir = %s\n\n", c.dir)
	fmt.Fprintf(&b, "[tls]\nenable = true\ncert_file = %s\nkey_file = %s\nca_file = %s\n\n", c.certs.Cert, c.certs.Key, c.certs.CA)
	fmt.Fprintf(&b, "[remote]\nhost = 127.0.0.1\nport = %d\n\n", c.port)
	if c.proxy {
		fmt.Fprintf(&b, "[local]\nenable = false\n\n")
		fmt.Fprintf(&b, "[backend_http]\nca_file = %s\n\n", c.certs.CA)
	} else {
		fmt.Fprintf(&b, "[local]\nenable = true\nsocket = %s\n\n", filepath.Join(c.dir, "local.sock"))
	}
	fmt.Fprintf(&b, "[control]\ntransport = unix\nsocket = %s\n", filepath.Join(c.dir, "control.sock"))
	name := filepath.Join(c.dir, "conf.d", "50-enginesim.conf")
	if err := os.WriteFile(name, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("writing %s config: %w", c.name, err)
	}
	return nil
}

// startDaemon writes the config and starts imageiod, waiting (bounded) until
// its control socket and remote port answer.
func startDaemon(ctx context.Context, c daemonConfig) (*daemon, error) {
	if err := writeConfig(c); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(c.logTo, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s daemon log: %w", c.name, err)
	}
	cmd := exec.Command(c.binary, "--conf-dir", c.dir)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s daemon: %w", c.name, err)
	}
	d := &daemon{
		name:    c.name,
		dir:     c.dir,
		port:    c.port,
		control: control.NewClient("unix", filepath.Join(c.dir, "control.sock")),
		cmd:     cmd,
		done:    make(chan struct{}),
		logFile: logf,
	}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	if err := d.waitReady(ctx, 15*time.Second); err != nil {
		d.stop()
		return nil, fmt.Errorf("starting %s daemon: %w; its log ends with:\n%s", c.name, err, logTail(c.logTo, 2048))
	}
	return d, nil
}

// startDaemonPort starts a daemon on c.port, or, when it is 0, on a free
// port, trying again with another port if the first one was taken in the
// meantime.
func startDaemonPort(ctx context.Context, c daemonConfig) (*daemon, error) {
	if c.port != 0 {
		return startDaemon(ctx, c)
	}
	var err error
	for i := 0; i < 3; i++ {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		var d *daemon
		if d, err = startDaemon(ctx, c); err == nil {
			return d, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// logTail returns the last n bytes of a log file.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// waitReady polls the control socket and the remote port.
func (d *daemon) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port))
	for {
		select {
		case <-d.done:
			return fmt.Errorf("imageiod exited: %v", d.waitErr)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := d.control.GetTicket(cctx, "enginesim-probe")
		cancel()
		var se *control.ServerError
		if err == nil || errors.As(err, &se) {
			conn, derr := net.DialTimeout("tcp", addr, time.Second)
			if derr == nil {
				conn.Close()
				return nil
			}
			err = derr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("imageiod not ready after %s: %w", timeout, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-d.done:
			t.Stop()
			return fmt.Errorf("imageiod exited: %v", d.waitErr)
		case <-t.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// stop sends SIGTERM and waits, then SIGKILL after a bound.
func (d *daemon) stop() error {
	defer d.logFile.Close()
	select {
	case <-d.done:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	return fmt.Errorf("stopping %s daemon: killed after 10s", d.name)
}

// url returns the daemon's images URL for a ticket.
func (d *daemon) url(ticket string) string {
	return "https://127.0.0.1:" + strconv.Itoa(d.port) + "/images/" + ticket
}
