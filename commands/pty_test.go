package commands

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal, or skips.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlocking pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("opening pty: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// TestBarOnTerminal draws the bar on a real terminal and reads it back.
func TestBarOnTerminal(t *testing.T) {
	master, tty := openPTY(t)
	if got := chooseDisplay(tty, false, false); got != displayBar {
		t.Fatalf("display on a terminal: %v, want the bar", got)
	}
	if got := chooseDisplay(tty, true, false); got != displayNone {
		t.Errorf("display on a terminal with --quiet: %v, want none", got)
	}
	if got := chooseDisplay(tty, false, true); got != displayJSON {
		t.Errorf("display on a terminal with --json: %v, want JSON", got)
	}

	read := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 4096)
		master.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := 0; i < 1000 && !strings.Contains(b.String(), "100"); i++ {
			n, err := master.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		read <- b.String()
	}()
	var stdout bytes.Buffer
	p := newProgress(&stdout, tty, displayBar)
	p.Phase(phaseUploading)
	p.Update(50<<20, 100<<20)
	time.Sleep(300 * time.Millisecond) // at least one redraw
	p.Update(100<<20, 100<<20)
	p.Close()
	out := <-read
	if !strings.Contains(out, phaseUploading) || !strings.Contains(out, "MiB") {
		t.Errorf("terminal shows %q; want the phase and byte counts", out)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
}
