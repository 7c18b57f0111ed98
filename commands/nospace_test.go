package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/daemon/daemontest"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/nbd"
)

// TestUploadNoSpace uploads to a daemon whose ticket is on nbdkit's full
// plugin (every write and zero fails with ENOSPC), over HTTPS and over
// the daemon's local socket: the upload fails at once with exit status 1
// and one line on stderr that says the storage is full and passes on the
// daemon's message, without retrying, naming the ticket or leaving a
// qemu-nbd behind.
func TestUploadNoSpace(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "nbdkit")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	// A data run larger than one request (8 MiB), so the daemon answers
	// while the client is still sending, a zero run and a small data run.
	const size = 24 << 20
	qcow := filepath.Join(t.TempDir(), "disk.qcow2")
	testutil.MakeImage(t, qcow, "qcow2", size, []testutil.Run{
		{Off: 0, Len: 12 << 20, Kind: testutil.Data},
		{Off: 16 << 20, Len: 4 << 20, Kind: testutil.Zero},
		{Off: 22 << 20, Len: 64 << 10, Kind: testutil.Data},
	}, 3)
	sock := testutil.StartNBDKit(t, "full", "size=24M")
	want := fmt.Sprintf("imageio: uploading %q: the storage is full: "+
		"No space left on the storage: NBD server error ENOSPC (no space left on device)", qcow)
	for _, local := range []bool{false, true} {
		name := "https"
		if local {
			name = "local socket"
		}
		t.Run(name, func(t *testing.T) {
			d := daemontest.Start(t, daemontest.Options{Local: local})
			url := d.AddTicket(t, "nbd:unix:"+sock, size)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			stdout, stderr, code := runApp(t, ctx, "upload", qcow, "--transfer-url", url, "--cafile", d.TLS.CAFile)
			t.Logf("stderr:\n%s", stderr)
			if code != ExitFailure {
				t.Errorf("exit status %d, want %d", code, ExitFailure)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			// Phase lines ("[ 0.0 ] uploading") may come first; the error
			// is the one line from imageio, and the last.
			var msgs []string
			for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
				if strings.HasPrefix(l, "imageio:") {
					msgs = append(msgs, l)
				}
			}
			if len(msgs) != 1 || msgs[0] != want || !strings.HasSuffix(stderr, want+"\n") {
				t.Errorf("imageio lines on stderr: %q, want only %q", msgs, want)
			}
			for _, bad := range []string{"retrying", ticketOf(url), "500"} {
				if strings.Contains(stderr, bad) {
					t.Errorf("stderr contains %q", bad)
				}
			}
			if left := children("qemu-nbd"); len(left) > 0 {
				t.Errorf("qemu-nbd left running: pids %v", left)
			}
		})
	}
}

// children lists the pids of this process's children running command
// name (Linux /proc; nil elsewhere).
func children(name string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		j := strings.IndexByte(s, '(')
		if i < 0 || j < 0 || j > i {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || s[j+1:i] != name {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestExplainNoSpace checks the one-line messages for a full storage on
// the error chains the backends build: a 507 from the daemon on upload,
// an ENOSPC from the local qemu-nbd on download. (The download case is
// not run for real: filling a local file system needs a small mount.)
func TestExplainNoSpace(t *testing.T) {
	daemon507 := fmt.Errorf("uploading %q: copying 0-65535: %w", "disk.qcow2", &httpbackend.ServerError{
		Op: "writing 0-65535 of https://h/images/***", Code: 507, Message: "No space left on the storage: disk full"})
	localENOSPC := fmt.Errorf("downloading to %q: copying 0-65535: writing nbd:unix:/s: %w", "out.qcow2",
		fmt.Errorf("%w: %w", backend.ErrNoSpace, &nbd.Error{Errno: nbd.ENOSPC}))
	other := fmt.Errorf("uploading %q: %w", "disk.qcow2", &httpbackend.ServerError{Op: "writing", Code: 500})
	tests := []struct {
		name string
		got  error
		want string
	}{
		{"upload 507", explainNoSpace(daemon507, "disk.qcow2"),
			`uploading "disk.qcow2": the storage is full: No space left on the storage: disk full`},
		{"upload 500", explainNoSpace(other, "disk.qcow2"), other.Error()},
		{"download local ENOSPC", explainLocalNoSpace(localENOSPC, "out.qcow2"),
			`downloading to "out.qcow2": the local file system is full: NBD server error ENOSPC (no space left on device)`},
		{"download other", explainLocalNoSpace(other, "out.qcow2"), other.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got.Error() != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
			if errors.Is(tc.got, backend.ErrNoSpace) != strings.Contains(tc.want, "full") {
				t.Errorf("errors.Is(%v, backend.ErrNoSpace) is wrong", tc.got)
			}
			if code := ExitCode(tc.got); code != ExitFailure {
				t.Errorf("exit status %d, want %d", code, ExitFailure)
			}
		})
	}
}
