package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/control"
	"github.com/imageio/imageio/enginesim"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/nbd"
)

// TestUploadNoSpace uploads to an imageiod process whose ticket is on
// nbdkit's full plugin (every write and zero fails with ENOSPC), over HTTPS and over
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
			d := startImageiod(t, local)
			url := d.addTicket(t, "nbd:unix:"+sock, size)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			stdout, stderr, code := runApp(t, ctx, "upload", qcow, "--transfer-url", url, "--cafile", d.tls.CAFile)
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
			for _, bad := range []string{"retrying", ticketOf(url)} {
				if strings.Contains(stderr, bad) {
					t.Errorf("stderr contains %q", bad)
				}
			}
			// A 500 status, not the digits in a temporary path.
			if regexp.MustCompile(`\b500\b`).MatchString(stderr) {
				t.Errorf("stderr names status 500")
			}
			if left := testutil.Children("qemu-nbd"); len(left) > 0 {
				t.Errorf("qemu-nbd left running: %v", left)
			}
			// The 507 came from the service the client was meant to use.
			service := "remote"
			if local {
				service = "local"
			}
			if log := d.log.String(); !regexp.MustCompile(`service=` + service + ` method=PUT path=\S+ status=507 `).MatchString(log) {
				t.Errorf("imageiod log has no 507 for a PUT on the %s service:\n%s", service, log)
			}
		})
	}
}

// imageiodProc is an imageiod process started by startImageiod.
type imageiodProc struct {
	base string // https://127.0.0.1:PORT
	tls  testutil.TLSFiles
	ctl  *control.Client
	log  *testutil.LockedBuffer
}

// startImageiod builds imageiod (once per test binary) and runs it with
// HTTPS on a free port of 127.0.0.1, a control socket and, with local, the
// local socket service, until the test ends.
func startImageiod(t *testing.T, local bool) *imageiodProc {
	t.Helper()
	bin, err := enginesim.BuildImageiod()
	if err != nil {
		t.Fatal(err)
	}
	// Socket paths must be short: not under t.TempDir().
	dir, err := os.MkdirTemp("", "iod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	files := testutil.NewTLS(t, dir)
	conf := fmt.Sprintf("[daemon]\ndrop_privileges = false\nsystemd_enable = false\nrun_dir = %s\n\n"+
		"[tls]\nenable = true\ncert_file = %s\nkey_file = %s\nca_file = %s\n\n"+
		"[remote]\nhost = 127.0.0.1\nport = 0\n\n"+
		"[local]\nenable = %v\nsocket = %s\n\n"+
		"[control]\ntransport = unix\nsocket = %s\n",
		dir, files.CertFile, files.KeyFile, files.CAFile, local, filepath.Join(dir, "local.sock"), filepath.Join(dir, "control.sock"))
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf.d", "50-test.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &imageiodProc{tls: files, ctl: control.NewClient("unix", filepath.Join(dir, "control.sock")), log: &testutil.LockedBuffer{}}
	// Cleanups run last first: the log is shown after the daemon stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("imageiod log:\n%s", d.log.String())
		}
	})
	cmd := exec.Command(bin, "--conf-dir", dir)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	exited := testutil.StartProcess(t, cmd, true)
	// The daemon logs its address once it listens.
	re := regexp.MustCompile(`msg="imageiod started".* remote=(\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		if m := re.FindStringSubmatch(d.log.String()); m != nil {
			d.base = "https://" + m[1]
			return d
		}
		select {
		case <-exited:
			t.Fatalf("imageiod exited: %s", d.log.String())
		default:
		}
		if i >= 2000 || time.Now().After(deadline) {
			t.Fatalf("imageiod did not start in 20 s: %s", d.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// addTicket adds a sparse read-write ticket for url through the control
// socket and returns its transfer URL.
func (d *imageiodProc) addTicket(t *testing.T, url string, size int64) string {
	t.Helper()
	id := newUUID()
	doc := fmt.Sprintf(`{"uuid": %q, "size": %d, "url": %q, "ops": ["read", "write"], "timeout": 300, "sparse": true}`, id, size, url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.ctl.AddTicket(ctx, []byte(doc)); err != nil {
		t.Fatalf("adding a ticket: %v", err)
	}
	return d.base + "/images/" + id
}

// TestDownloadNoSpace downloads an image with 24 MiB of data into an
// 8 MiB file system (a tmpfs mounted in a private mount namespace, so the
// test needs the right to make one, as root has): imageio exits with
// status 1 and one line saying the local file system is full and naming
// the file, removes the partial image (keeps it with --keep-partial) and
// leaves no qemu-nbd behind.
func TestDownloadNoSpace(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "unshare", "mount")
	if out, err := exec.Command("unshare", "--mount", "--propagation", "private",
		"mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", t.TempDir()).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs in a mount namespace: %v: %s", err, out)
	}
	const size = 32 << 20
	src := filepath.Join(t.TempDir(), "disk.qcow2")
	testutil.MakeImage(t, src, "qcow2", size, []testutil.Run{{Off: 4 << 20, Len: 24 << 20, Kind: testutil.Data}}, 4)
	sock := testutil.StartQemuNBD(t, src, "qcow2")
	d := startImageiod(t, false)
	url := d.addTicket(t, "nbd:unix:"+sock, size)
	bin := buildImageio(t)
	// The shell mounts the small file system, runs imageio in it and
	// lists what is left there before the namespace (and the mount) ends.
	const script = `dir=$1
shift
mount -t tmpfs -o size=8m tmpfs "$dir" || exit 99
"$@"
rc=$?
left=$(ls -A "$dir") || exit 98
echo "left:$left"
exit $rc`
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep-partial=%v", keep), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.qcow2")
			args := []string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", dir,
				bin, "download", url, out, "--format", "qcow2", "--cafile", d.tls.CAFile}
			if keep {
				args = append(args, "--keep-partial")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "unshare", args...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			t.Logf("stderr:\n%s", stderr.String())
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != ExitFailure {
				t.Fatalf("got %v, want exit status %d", err, ExitFailure)
			}
			want := fmt.Sprintf("imageio: downloading to %q: the local file system is full: ", out)
			var msgs []string
			for _, l := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
				if strings.HasPrefix(l, "imageio:") {
					msgs = append(msgs, l)
				}
			}
			if len(msgs) != 1 || !strings.HasPrefix(msgs[0], want) || !strings.Contains(msgs[0], "ENOSPC") {
				t.Errorf("imageio lines on stderr: %q, want one starting %q and naming ENOSPC", msgs, want)
			}
			left := strings.TrimSpace(stdout.String())
			if wantLeft := map[bool]string{false: "left:", true: "left:out.qcow2"}[keep]; left != wantLeft {
				t.Errorf("in the full file system: %q, want %q", left, wantLeft)
			}
			if p := qemuNBDFor(out); len(p) > 0 {
				t.Errorf("qemu-nbd left running: %q", p)
			}
		})
	}
}

// TestExplainNoSpace checks the one-line messages for a full storage on
// the error chains the backends build: a 507 from the daemon on upload,
// an ENOSPC from the local qemu-nbd on download (run for real by
// TestDownloadNoSpace where a small file system can be mounted).
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
