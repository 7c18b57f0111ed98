package nbdlocal

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/nbd"
	"github.com/imageio/imageio/ova"
	"github.com/imageio/imageio/qemuimg"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const (
	mib       = 1 << 20
	imageSize = 4 * mib
)

var sampleRuns = []testutil.Run{
	{Off: 0, Len: 256 << 10, Kind: testutil.Data},
	{Off: 1 * mib, Len: 512 << 10, Kind: testutil.Zero},
	{Off: 2*mib + 4096, Len: 64 << 10, Kind: testutil.Data},
}

// sample is an image and the raw file with its content.
type sample struct {
	cfg     Config
	content string
}

func makeSamples(t *testing.T) map[string]sample {
	t.Helper()
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	testutil.MakeImage(t, raw, "raw", imageSize, sampleRuns, 1)
	qcow2 := filepath.Join(dir, "disk.qcow2")
	content := testutil.MakeImage(t, qcow2, "qcow2", imageSize, sampleRuns, 1)
	comp := filepath.Join(dir, "comp.qcow2")
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2", qcow2, comp)
	ovaPath := filepath.Join(dir, "vm.ova")
	disk, err := os.ReadFile(qcow2)
	if err != nil {
		t.Fatal(err)
	}
	writeTar(t, ovaPath, map[string][]byte{"vm.ovf": []byte("<Envelope/>\n"), "disk.qcow2": disk}, "vm.ovf", "disk.qcow2")
	rawOVA := filepath.Join(dir, "raw.ova")
	rawDisk, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	writeTar(t, rawOVA, map[string][]byte{"vm.ovf": []byte("<Envelope/>\n"), "disk.raw": rawDisk}, "vm.ovf", "disk.raw")
	return map[string]sample{
		"raw":        {Config{Path: raw, ReadOnly: true}, raw},
		"qcow2":      {Config{Path: qcow2, ReadOnly: true}, content},
		"compressed": {Config{Path: comp, ReadOnly: true}, content},
		"member":     {Config{Path: ovaPath, Member: "disk.qcow2", ReadOnly: true}, content},
		"member-raw": {Config{Path: rawOVA, Member: "disk.raw", ReadOnly: true}, raw},
		"forced":     {Config{Path: qcow2, Format: "qcow2", ReadOnly: true}, content},
		"writeback":  {Config{Path: qcow2, Cache: "writeback", ReadOnly: true}, content},
	}
}

func writeTar(t *testing.T, path string, files map[string][]byte, order ...string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range order {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, ctx context.Context, cfg Config) *Server {
	t.Helper()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func dial(t *testing.T, s *Server, opts nbd.Options) *nbd.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, s.Address(), opts)
	if err != nil {
		t.Fatalf("dialing %s: %v", s.URL(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cmdline returns the command line of the server's process.
func cmdline(t *testing.T, s *Server) []string { return procList(t, s, "cmdline") }

// environ returns the environment of the server's process.
func environ(t *testing.T, s *Server) []string { return procList(t, s, "environ") }

// procList reads the NUL-separated /proc/PID/name of the server's process.
func procList(t *testing.T, s *Server, name string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", s.cmd.Process.Pid, name))
	if err != nil {
		t.Skipf("reading /proc/PID/%s: %v", name, err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func has(args []string, arg string) bool {
	for _, a := range args {
		if a == arg {
			return true
		}
	}
	return false
}

func TestServe(t *testing.T) {
	samples := makeSamples(t)
	for _, name := range []string{"raw", "qcow2", "compressed", "member", "member-raw", "forced", "writeback"} {
		t.Run(name, func(t *testing.T) {
			sm := samples[name]
			s := start(t, context.Background(), sm.cfg)
			if !strings.HasPrefix(s.URL(), "nbd:unix:/") {
				t.Errorf("URL %q, want nbd:unix:/...", s.URL())
			}
			c := dial(t, s, nbd.Options{})
			want, err := os.ReadFile(sm.content)
			if err != nil {
				t.Fatal(err)
			}
			if c.Size() != int64(len(want)) {
				t.Fatalf("size %d, want %d", c.Size(), len(want))
			}
			got := make([]byte, len(want))
			if err := c.ReadAt(context.Background(), got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("content read through NBD differs from the image's")
			}
			if !c.Flags().ReadOnly() {
				t.Error("export is not read-only")
			}
			wantDepth := name != "raw" && name != "member-raw"
			if got := c.HasMetaContext(nbd.ContextAllocationDepth); got != wantDepth {
				t.Errorf("allocation depth context: %v, want %v", got, wantDepth)
			}
			args := cmdline(t, s)
			for _, a := range []string{"--export-name=", "--persistent", "--shared=8", "--read-only"} {
				if !has(args, a) {
					t.Errorf("command line %q lacks %s", args, a)
				}
			}
			if name == "writeback" {
				if !has(args, "--cache=writeback") || !has(args, "--aio=threads") {
					t.Errorf("command line %q: want --cache=writeback --aio=threads", args)
				}
			} else if directIO(sm.cfg.Path) && (!has(args, "--cache=none") || !has(args, "--aio=native")) {
				t.Errorf("command line %q: want --cache=none --aio=native on a file system with O_DIRECT", args)
			}
			if has(args, "--discard=unmap") {
				t.Errorf("command line %q: --discard for a read-only export", args)
			}
			if last := args[len(args)-1]; !strings.HasPrefix(last, "json:") {
				t.Errorf("image %q is not a json: filename", last)
			}
			c.Close()
			checkStop(t, s)
		})
	}
}

// checkStop stops s and checks that the process and directory are gone.
func checkStop(t *testing.T, s *Server) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	select {
	case <-s.exited:
	default:
		t.Error("qemu-nbd still running after Stop")
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("directory %s still there after Stop: %v", s.dir, err)
	}
}

func TestMemberOffset(t *testing.T) {
	// The member test above must serve data at a non-zero offset.
	samples := makeSamples(t)
	m, err := ova.Find(samples["member"].cfg.Path, "disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if m.Offset == 0 {
		t.Fatal("disk.qcow2 is at offset 0")
	}
	s := start(t, context.Background(), samples["member"].cfg)
	if s.Format() != "qcow2" {
		t.Errorf("format %q, want qcow2", s.Format())
	}
	args := cmdline(t, s)
	if !strings.Contains(args[len(args)-1], `"offset":`+strconv.FormatInt(m.Offset, 10)) {
		t.Errorf("image %q does not read at offset %d", args[len(args)-1], m.Offset)
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	samples := makeSamples(t)
	s := start(t, context.Background(), samples["qcow2"].cfg)
	c := dial(t, s, nbd.Options{})
	ctx := context.Background()
	if err := c.WriteAt(ctx, []byte("x"), 0); err == nil {
		t.Error("write to a read-only export: no error")
	}
	if err := c.Zero(ctx, 0, 4096, 0); err == nil {
		t.Error("zero on a read-only export: no error")
	}
	if err := qemuimg.Compare(ctx, samples["qcow2"].cfg.Path, samples["qcow2"].content, qemuimg.CompareOptions{}); err != nil {
		t.Errorf("image changed: %v", err)
	}
}

func TestWritable(t *testing.T) {
	samples := makeSamples(t)
	// A qcow2 member cannot grow inside the OVA, so the writable member
	// is raw.
	for _, name := range []string{"raw", "qcow2", "member-raw"} {
		t.Run(name, func(t *testing.T) {
			cfg := samples[name].cfg
			cfg.ReadOnly = false
			// Work on a copy; the samples are shared.
			cp := filepath.Join(t.TempDir(), filepath.Base(cfg.Path))
			testutil.RunCommand(t, "cp", cfg.Path, cp)
			cfg.Path = cp
			expected, err := os.ReadFile(samples[name].content)
			if err != nil {
				t.Fatal(err)
			}

			s := start(t, context.Background(), cfg)
			args := cmdline(t, s)
			flags := []string{"--discard=unmap", "--detect-zeroes=unmap", "--aio=threads"}
			if directIO(cp) {
				flags = append(flags, "--cache=none")
			}
			for _, a := range flags {
				if !has(args, a) {
					t.Errorf("command line %q lacks %s", args, a)
				}
			}
			c := dial(t, s, nbd.Options{})
			ctx := context.Background()
			data := bytes.Repeat([]byte("imageio!"), 8192) // 64 KiB
			for _, off := range []int64{0, 3*mib + 512, imageSize - int64(len(data))} {
				if err := c.WriteAt(ctx, data, off); err != nil {
					t.Fatal(err)
				}
				copy(expected[off:], data)
			}
			if err := c.Zero(ctx, 128<<10, 64<<10, 0); err != nil {
				t.Fatal(err)
			}
			clear(expected[128<<10 : 192<<10])
			if err := c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			c.Close()
			checkStop(t, s)

			want := filepath.Join(t.TempDir(), "want.raw")
			if err := os.WriteFile(want, expected, 0o644); err != nil {
				t.Fatal(err)
			}
			src, err := qemuimg.SourceOf(ctx, cp, qemuimg.Options{Member: cfg.Member})
			if err != nil {
				t.Fatal(err)
			}
			if err := qemuimg.Compare(ctx, src.Filename, want, qemuimg.CompareOptions{}); err != nil {
				t.Errorf("image after writes: %v", err)
			}
		})
	}
}

// TestWriteQemuIO writes through qemu-io, an independent NBD client.
func TestWriteQemuIO(t *testing.T) {
	samples := makeSamples(t)
	cfg := samples["raw"].cfg
	cfg.ReadOnly = false
	cp := filepath.Join(t.TempDir(), "disk.raw")
	testutil.RunCommand(t, "cp", cfg.Path, cp)
	cfg.Path = cp
	s := start(t, context.Background(), cfg)
	url := "nbd+unix:///?socket=" + s.Address().Addr
	testutil.RunCommand(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 1M 64k", url)
	checkStop(t, s)

	expected, err := os.ReadFile(samples["raw"].content)
	if err != nil {
		t.Fatal(err)
	}
	copy(expected[mib:], bytes.Repeat([]byte{0xab}, 64<<10))
	want := filepath.Join(t.TempDir(), "want.raw")
	if err := os.WriteFile(want, expected, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := qemuimg.Compare(context.Background(), cp, want, qemuimg.CompareOptions{FormatA: "raw", FormatB: "raw"}); err != nil {
		t.Error(err)
	}
}

func TestNoBacking(t *testing.T) {
	samples := makeSamples(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testutil.RunCommand(t, "cp", samples["qcow2"].cfg.Path, base)
	top := filepath.Join(dir, "top.qcow2")
	ctx := context.Background()
	if err := qemuimg.Create(ctx, top, qemuimg.CreateOptions{Format: "qcow2", BackingFile: "base.qcow2"}); err != nil {
		t.Fatal(err)
	}
	for _, noBacking := range []bool{false, true} {
		t.Run(fmt.Sprintf("nobacking=%v", noBacking), func(t *testing.T) {
			s := start(t, ctx, Config{Path: top, ReadOnly: true, NoBacking: noBacking})
			c := dial(t, s, nbd.Options{})
			got := make([]byte, 4096)
			if err := c.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			zero := bytes.Equal(got, make([]byte, 4096))
			if zero != noBacking {
				t.Errorf("first block reads as zeros: %v, want %v", zero, noBacking)
			}
		})
	}
}

func TestBitmap(t *testing.T) {
	samples := makeSamples(t)
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	testutil.RunCommand(t, "cp", samples["qcow2"].cfg.Path, img)
	testutil.RunCommand(t, "qemu-img", "bitmap", "--add", img, "b0")
	s := start(t, context.Background(), Config{Path: img, ReadOnly: true, Bitmap: "b0"})
	if !has(cmdline(t, s), "--bitmap=b0") {
		t.Errorf("command line %q lacks --bitmap=b0", cmdline(t, s))
	}
	c := dial(t, s, nbd.Options{DirtyBitmap: true})
	if !c.HasMetaContext("qemu:dirty-bitmap:b0") {
		t.Error("the export has no qemu:dirty-bitmap:b0 context")
	}
}

func TestCancel(t *testing.T) {
	samples := makeSamples(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, samples["qcow2"].cfg)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("qemu-nbd still running 20 s after the context was canceled")
	}
	// Stop is done by the watcher; a Stop call waits for it.
	if err := s.Stop(); err != nil {
		t.Errorf("Stop after cancel: %v", err)
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("directory still there: %v", err)
	}
}

func TestCancelDuringStart(t *testing.T) {
	samples := makeSamples(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, samples["qcow2"].cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	checkNoDirs(t)
}

func TestStopTwice(t *testing.T) {
	samples := makeSamples(t)
	s := start(t, context.Background(), samples["raw"].cfg)
	checkStop(t, s)
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestStopKills checks that a server that ignores SIGTERM is killed after
// the stop timeout.
func TestStopKills(t *testing.T) {
	samples := makeSamples(t)
	cfg := samples["raw"].cfg
	cfg.StopTimeout = 100 * time.Millisecond
	s := start(t, context.Background(), cfg)
	// Stop the process so that SIGTERM stays pending; only SIGKILL ends it.
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	checkStop(t, s)
	if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("process ended with %v, want SIGKILL", s.cmd.ProcessState)
	}
}

// TestProcessGroup checks that qemu-nbd is out of the caller's process
// group, so that a Ctrl-C on the terminal does not reach it.
func TestProcessGroup(t *testing.T) {
	samples := makeSamples(t)
	s := start(t, context.Background(), samples["raw"].cfg)
	pgid, err := syscall.Getpgid(s.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if pgid == syscall.Getpgrp() {
		t.Errorf("qemu-nbd is in the caller's process group %d", pgid)
	}
}

func TestMissingFile(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd")
	missing := filepath.Join(t.TempDir(), "missing.qcow2")
	_, err := Start(context.Background(), Config{Path: missing})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("got %v, want ErrNotExist naming %s", err, missing)
	}
	checkNoDirs(t)
}

func TestUnknownMember(t *testing.T) {
	samples := makeSamples(t)
	_, err := Start(context.Background(), Config{Path: samples["member"].cfg.Path, Member: "nothing.vmdk"})
	if !errors.Is(err, ova.ErrMemberNotFound) {
		t.Errorf("got %v, want ova.ErrMemberNotFound", err)
	}
	checkNoDirs(t)
}

// TestEarlyExit checks that qemu-nbd's own error is reported when it exits
// before serving.
func TestEarlyExit(t *testing.T) {
	samples := makeSamples(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"wrong format", Config{Path: samples["raw"].cfg.Path, Format: "qcow2"}, "Image is not in qcow2 format"},
		{"no such bitmap", Config{Path: samples["qcow2"].cfg.Path, Bitmap: "nosuch", ReadOnly: true}, "nosuch"},
		{"bad cache mode", Config{Path: samples["raw"].cfg.Path, Cache: "sometimes"}, "sometimes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(context.Background(), tc.cfg)
			if !errors.Is(err, ErrExited) {
				t.Fatalf("got %v, want ErrExited", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain qemu-nbd's message %q", err, tc.want)
			}
			checkNoDirs(t)
		})
	}
}

func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no path", Config{}},
		{"negative shared", Config{Path: "x", Shared: -1}},
		{"bad bitmap", Config{Path: "x", Bitmap: "a,b"}},
		{"bad cache", Config{Path: "x", Cache: "none,x=y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Start(context.Background(), tc.cfg); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestBinaryFromEnv(t *testing.T) {
	samples := makeSamples(t)
	t.Setenv("QEMU_NBD", filepath.Join(t.TempDir(), "no-such-qemu-nbd"))
	_, err := Start(context.Background(), samples["raw"].cfg)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no-such-qemu-nbd") {
		t.Errorf("got %v, want ErrNotExist naming the missing binary", err)
	}
	checkNoDirs(t)
}

// checkNoDirs checks that no server directory is left in TMPDIR.
func checkNoDirs(t *testing.T) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "imageio-nbd-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) > 0 {
		t.Errorf("directories left behind: %v", dirs)
	}
}

func TestDirectIO(t *testing.T) {
	if !directIO(os.Args[0]) {
		t.Log("this file system refuses O_DIRECT")
	}
	if directIO(filepath.Join(t.TempDir(), "missing")) {
		t.Error("O_DIRECT on a missing file")
	}
}

// TestParentDeath checks that qemu-nbd is stopped when the process that
// started it is killed. The test runs itself as a child that starts a
// server and then waits to be killed.
func TestParentDeath(t *testing.T) {
	if os.Getenv("NBDLOCAL_TEST_CHILD") != "" {
		s, err := Start(context.Background(), Config{Path: os.Getenv("NBDLOCAL_TEST_CHILD"), ReadOnly: true})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("pid %d\n", s.cmd.Process.Pid)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	samples := makeSamples(t)
	child := exec.Command(os.Args[0], "-test.run=^TestParentDeath$")
	// The killed child cannot clean up its temporary files; they go into a
	// directory this test removes.
	// (t.TempDir is too long a path for the socket.)
	tmp, err := os.MkdirTemp("", "c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	child.Env = append(os.Environ(), "NBDLOCAL_TEST_CHILD="+samples["raw"].cfg.Path, "TMPDIR="+tmp)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, readErr := bufio.NewReader(out).ReadString('\n')
	child.Process.Kill()
	child.Wait()
	var pid int
	if _, err := fmt.Sscanf(line, "pid %d\n", &pid); err != nil {
		t.Fatalf("reading the child's output %q: %v, %v", line, err, readErr)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		// qemu-nbd is now a child of init (or a subreaper), which reaps it.
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			break
		}
		if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); bytes.Contains(stat, []byte(") Z ")) {
			break // exited, not yet reaped
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("qemu-nbd %d still running 20 s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartTimeout checks that a server that is not ready in time is
// stopped and cleaned up.
func TestStartTimeout(t *testing.T) {
	samples := makeSamples(t)
	cfg := samples["qcow2"].cfg
	cfg.StartTimeout = time.Nanosecond
	s, err := Start(context.Background(), cfg)
	if err == nil {
		// qemu-nbd answered on the very first try.
		checkStop(t, s)
		return
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Errorf("got %v, want a timeout", err)
	}
	checkNoDirs(t)
}

// TestCallerPanics checks that a caller that stops its server in a deferred
// call leaves no qemu-nbd and no temporary directory behind when it panics:
// the deferred Stop runs while the panic unwinds. The test runs itself as a
// child that starts a server and panics.
func TestCallerPanics(t *testing.T) {
	if path := os.Getenv("NBDLOCAL_TEST_PANIC"); path != "" {
		s, err := Start(context.Background(), Config{Path: path, ReadOnly: true})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		defer s.Stop()
		fmt.Printf("pid %d\n", s.cmd.Process.Pid)
		panic("caller fails while the server runs")
	}
	samples := makeSamples(t)
	tmp, err := os.MkdirTemp("", "p")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCallerPanics$")
	child.Env = append(os.Environ(), "NBDLOCAL_TEST_PANIC="+samples["raw"].cfg.Path, "TMPDIR="+tmp)
	out, err := child.Output()
	if err == nil {
		t.Fatalf("child exited 0 after a panic; output %q", out)
	}
	var pid int
	if _, err := fmt.Sscanf(string(out), "pid %d\n", &pid); err != nil {
		t.Fatalf("reading the child's output %q: %v", out, err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !bytes.Contains(stat, []byte(") Z ")) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("qemu-nbd %d still running after its caller panicked", pid)
		}
	}
	// The child's testutil.Main made its own TMPDIR inside tmp and, having
	// panicked, never removed it; the server's directory would be in there.
	err = filepath.WalkDir(tmp, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(tmp, path); rel != "." && !(d.IsDir() && strings.HasPrefix(rel, "imageio-test-") && !strings.Contains(rel, "/")) {
			t.Errorf("left behind after the panic: %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMallocEnv checks that qemu-nbd runs with the malloc settings, and
// that a setting in the caller's environment is kept instead.
func TestMallocEnv(t *testing.T) {
	samples := makeSamples(t)
	s := start(t, context.Background(), samples["qcow2"].cfg)
	env := environ(t, s)
	for _, kv := range mallocSettings {
		if !has(env, kv) {
			t.Errorf("qemu-nbd environment lacks %s", kv)
		}
	}

	t.Setenv("MALLOC_TRIM_THRESHOLD_", "1234")
	s = start(t, context.Background(), samples["qcow2"].cfg)
	env = environ(t, s)
	var trims []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "MALLOC_TRIM_THRESHOLD_=") {
			trims = append(trims, kv)
		}
	}
	if !slices.Equal(trims, []string{"MALLOC_TRIM_THRESHOLD_=1234"}) || !has(env, mallocSettings[0]) {
		t.Errorf("with the caller's MALLOC_TRIM_THRESHOLD_=1234: trim settings %q, mmap setting present %v",
			trims, has(env, mallocSettings[0]))
	}
}
