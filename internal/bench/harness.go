package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/imageio/imageio/internal/testutil"
)

// config holds the settings of a benchmark run.
type config struct {
	Work       string // work directory (images, results, temporary files)
	Bin        string // directory of imageio, imageiod, imageioctl
	Size       int64  // main image size
	SparseSize int64  // sparse image size; 0 skips it
	Runs       int
	Only       *regexp.Regexp // nil runs everything
	Seed       uint64
	FloorSize  int64 // bytes each floor moves; 0 skips the floors
}

// configFromEnv reads the BENCH_* variables.
func configFromEnv(getenv func(string) string) (config, error) {
	cfg := config{Work: "bench-work", Bin: "bin", Size: 4 << 30, SparseSize: 32 << 30, Runs: 1, Seed: 1,
		FloorSize: 2 << 30}
	if v := getenv("BENCH_WORK"); v != "" {
		cfg.Work = v
	}
	if v := getenv("BENCH_BIN"); v != "" {
		cfg.Bin = v
	}
	for _, s := range []struct {
		name string
		dst  *int64
	}{{"BENCH_SIZE", &cfg.Size}, {"BENCH_SPARSE_SIZE", &cfg.SparseSize}, {"BENCH_FLOOR_SIZE", &cfg.FloorSize}} {
		if v := getenv(s.name); v != "" {
			n, err := parseSize(v)
			if err != nil {
				return config{}, fmt.Errorf("%s: %w", s.name, err)
			}
			*s.dst = n
		}
	}
	if cfg.Size < minRun {
		return config{}, fmt.Errorf("BENCH_SIZE: %d bytes is smaller than %d", cfg.Size, minRun)
	}
	if cfg.FloorSize != 0 && cfg.FloorSize < minFloorSize {
		return config{}, fmt.Errorf("BENCH_FLOOR_SIZE: %d bytes is smaller than %s (0 skips the floors)",
			cfg.FloorSize, formatSize(minFloorSize))
	}
	if v := getenv("BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return config{}, fmt.Errorf("BENCH_RUNS: %q: want a number from 1 to 100", v)
		}
		cfg.Runs = n
	}
	if v := getenv("BENCH_ONLY"); v != "" {
		re, err := regexp.Compile(v)
		if err != nil {
			return config{}, fmt.Errorf("BENCH_ONLY: %w", err)
		}
		cfg.Only = re
	}
	if v := getenv("BENCH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return config{}, fmt.Errorf("BENCH_SEED: %q: want an unsigned number", v)
		}
		cfg.Seed = n
	}
	return cfg, nil
}

// image is one sample image the scenarios copy.
type image struct {
	Label string     `json:"label"`
	Path  string     `json:"path"`
	Stats imageStats `json:"stats"`
}

// DataGiB is the image's data (not zero, allocated) in GiB.
func (im *image) DataGiB() float64 { return float64(im.Stats.Data) / (1 << 30) }

// result is one run of one scenario on one image.
type result struct {
	Image    string `json:"image"`
	Scenario string `json:"scenario"`
	Run      int    `json:"run"`
	// Wall is the client's wall time in seconds.
	Wall float64 `json:"wall_s"`
	// ClientCPU is the client program's own CPU seconds; ClientChildCPU
	// those of the children it started (imageio's private qemu-nbd).
	ClientCPU      float64 `json:"client_cpu_s"`
	ClientChildCPU float64 `json:"client_child_cpu_s"`
	// DaemonCPU is imageiod's CPU seconds during the transfer.
	DaemonCPU float64 `json:"daemon_cpu_s"`
	// ServerCPU is the CPU seconds of the qemu-nbd servers the harness
	// started, during the transfer.
	ServerCPU float64 `json:"server_cpu_s"`
	// ClientRSS is the client program's own peak RSS; ClientTreeRSS the
	// largest of it and its children's; DaemonRSS imageiod's. Bytes.
	ClientRSS     int64 `json:"client_rss"`
	ClientTreeRSS int64 `json:"client_tree_rss"`
	DaemonRSS     int64 `json:"daemon_rss"`
	// MachineCPU is the CPU seconds the whole machine spent busy while
	// the client ran (-1 when unknown); what the scenario's own processes
	// did not use was other work on the machine. IOWait is the percentage
	// of the wall time in which some task waited for I/O (Linux PSI; -1
	// when unknown).
	MachineCPU float64 `json:"machine_cpu_s"`
	IOWait     float64 `json:"io_wait_pct"`
	Verified   bool    `json:"verified"`
	Error      string  `json:"error,omitempty"`
	Skipped    string  `json:"skipped,omitempty"`
}

// ok reports whether the run worked: not skipped, no error.
func (r result) ok() bool { return r.Skipped == "" && r.Error == "" }

// harness runs the scenarios and owns every process they start.
type harness struct {
	cfg    config
	work   string // absolute work directory
	tmp    string // per-run scratch directory under work
	bin    string // absolute bin directory
	self   string // this program, for "bench copy"
	stderr io.Writer
	tls    testutil.TLSFiles
	seq    int
	// servers started and not yet stopped; cleanup stops them. Only the
	// harness goroutine touches it.
	servers []*server
}

// runBench is "bench run".
func runBench(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	h, err := newHarness(cfg, stderr)
	if err != nil {
		return err
	}
	defer h.cleanup()

	floorResults := h.runFloors(ctx)
	var images []*image
	if ctx.Err() == nil && h.anyScenario() {
		if images, err = h.images(ctx); err != nil {
			return err
		}
	}
	var results []result
run:
	for _, im := range images {
		for r := 1; r <= cfg.Runs; r++ {
			for _, sc := range scenarios {
				if cfg.Only != nil && !cfg.Only.MatchString(sc.Name) {
					continue
				}
				res := h.runScenario(ctx, sc, im, r)
				if ctx.Err() != nil {
					break run // the interrupted run is not reported
				}
				results = append(results, res)
			}
		}
	}
	rep := newReport(cfg, images, results)
	rep.addFloors(cfg, floorResults)
	rep.Text(stdout)
	if err := rep.Save(h.work); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; the table has the runs that finished: %w", ctx.Err())
	}
	return nil
}

// anyScenario reports whether BENCH_ONLY selects a scenario.
func (h *harness) anyScenario() bool {
	for _, sc := range scenarios {
		if h.cfg.Only == nil || h.cfg.Only.MatchString(sc.Name) {
			return true
		}
	}
	return false
}

func newHarness(cfg config, stderr io.Writer) (*harness, error) {
	work, err := filepath.Abs(cfg.Work)
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the bench program: %w", err)
	}
	for _, tool := range []string{"qemu-img", "qemu-io", "qemu-nbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("bench needs %s (package qemu-utils): %w", tool, err)
		}
	}
	h := &harness{cfg: cfg, work: work, bin: bin, self: self, stderr: stderr}
	h.tmp = filepath.Join(work, "tmp")
	if err := os.RemoveAll(h.tmp); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(h.tmp, "tls"), 0o755); err != nil {
		return nil, err
	}
	// Unix socket paths are limited to 107 bytes.
	if n := len(filepath.Join(h.tmp, "s999-daemon", "control.sock")); n > 100 {
		return nil, fmt.Errorf("work directory %s is too deep for Unix socket paths (%d bytes); set BENCH_WORK to a shorter path", work, n)
	}
	if h.tls, err = testutil.WriteTLS(filepath.Join(h.tmp, "tls")); err != nil {
		return nil, fmt.Errorf("making TLS certificates: %w", err)
	}
	return h, nil
}

// cleanup stops every server still running and removes the scratch
// directory.
func (h *harness) cleanup() {
	for i := len(h.servers) - 1; i >= 0; i-- {
		_ = h.servers[i].Stop()
	}
	h.servers = nil
	_ = os.RemoveAll(h.tmp)
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.stderr, "bench: "+format+"\n", args...)
}

// images builds (or finds in the cache) the sample images.
func (h *harness) images(ctx context.Context) ([]*image, error) {
	type spec struct {
		label, name string
		size        int64
		mix         mix
	}
	specs := []spec{{formatSize(h.cfg.Size), "dense", h.cfg.Size, denseMix}}
	if h.cfg.SparseSize > 0 {
		specs = append(specs, spec{formatSize(h.cfg.SparseSize) + " sparse", "sparse", h.cfg.SparseSize, sparseMix})
	}
	var images []*image
	for _, s := range specs {
		path := filepath.Join(h.work, fmt.Sprintf("%s-%s-seed%d-v1.qcow2", s.name, formatSize(s.size), h.cfg.Seed))
		if _, err := os.Stat(path); err != nil {
			h.logf("building %s image %s (once; cached)", s.label, filepath.Base(path))
			start := time.Now()
			if err := buildImage(ctx, path, s.size, layout(s.size, s.mix, h.cfg.Seed), h.cfg.Seed); err != nil {
				return nil, fmt.Errorf("building %s: %w", path, err)
			}
			h.logf("built %s in %.1f s", filepath.Base(path), time.Since(start).Seconds())
		}
		st, err := mapImage(ctx, path)
		if err != nil {
			return nil, err
		}
		h.logf("image %s: %s virtual, %.2f GiB data, %.2f GiB zero clusters, %.2f GiB holes",
			s.label, formatSize(st.Size), gib(st.Data), gib(st.Zero), gib(st.Hole))
		images = append(images, &image{Label: s.label, Path: path, Stats: st})
	}
	return images, nil
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// scratch returns a fresh path in the scratch directory.
func (h *harness) scratch(name string) string {
	h.seq++
	return filepath.Join(h.tmp, fmt.Sprintf("s%d-%s", h.seq, name))
}

// runScenario runs one scenario once, with everything it starts stopped
// and its files removed before it returns.
func (h *harness) runScenario(ctx context.Context, sc scenario, im *image, n int) result {
	res := result{Image: im.Label, Scenario: sc.Name, Run: n}
	for _, need := range sc.Needs {
		path := need
		if !strings.Contains(need, "/") {
			if p, err := exec.LookPath(need); err == nil {
				path = p
			}
		} else {
			path = filepath.Join(h.bin, strings.TrimPrefix(need, "bin/"))
		}
		if _, err := os.Stat(path); err != nil {
			res.Skipped = need + " not found"
			h.logf("%-28s %s: skipped: %s", sc.Name, im.Label, res.Skipped)
			return res
		}
	}
	mark := len(h.servers)
	var files []string
	env := &runEnv{h: h, im: im, res: &res, files: &files}
	err := sc.Run(ctx, env)
	// Stop what the scenario left running, newest first.
	for i := len(h.servers) - 1; i >= mark; i-- {
		_ = h.servers[i].Stop()
	}
	h.servers = h.servers[:mark]
	for _, f := range files {
		_ = os.RemoveAll(f)
	}
	if err != nil {
		res.Error = err.Error()
		h.logf("%-28s %s run %d: error: %v", sc.Name, im.Label, n, err)
		return res
	}
	h.logf("%-28s %s run %d: %.2f s, client %.2f CPU-s %s, daemon %.2f CPU-s %s, verified %v",
		sc.Name, im.Label, n, res.Wall, res.ClientCPU, mib(res.ClientRSS), res.DaemonCPU, mib(res.DaemonRSS), res.Verified)
	return res
}

func mib(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

// runEnv is what a scenario works with.
type runEnv struct {
	h     *harness
	im    *image
	res   *result
	files *[]string
}

// file returns a scratch path removed when the scenario ends.
func (e *runEnv) file(name string) string {
	p := e.h.scratch(name)
	*e.files = append(*e.files, p)
	return p
}

// createTarget makes an empty qcow2 image of the source's size.
func (e *runEnv) createTarget(ctx context.Context) (string, error) {
	path := e.file("target.qcow2")
	err := command(ctx, "qemu-img", "create", "-q", "-f", "qcow2", path, strconv.FormatInt(e.im.Stats.Size, 10))
	return path, err
}

// startServer starts a long-running process owned by the harness.
func (e *runEnv) startServer(name string, argv ...string) (*server, error) {
	s, err := startServer(name, e.file(name+".log"), argv...)
	if err != nil {
		return nil, err
	}
	e.h.servers = append(e.h.servers, s)
	return s, nil
}

// logTail returns the end of a server's log, for errors.
func logTail(s *server) string {
	f, ok := s.cmd.Stdout.(*os.File)
	if !ok {
		return ""
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return ""
	}
	return strings.TrimSpace(tail(string(b), 800))
}

// qemuNBD serves an image with the options imageio's own qemu-nbd uses
// (O_DIRECT, native AIO, several clients) and waits until it accepts. It
// returns the server and its NBD URL (nbd+unix form).
func (e *runEnv) qemuNBD(ctx context.Context, path string, readOnly bool) (*server, string, error) {
	sock := e.file("nbd.sock")
	argv := []string{"qemu-nbd", "--socket=" + sock, "--persistent", "--shared=8", "--format=qcow2",
		"--cache=none", "--aio=native"}
	if readOnly {
		argv = append(argv, "--read-only", "--allocation-depth")
	} else {
		argv = append(argv, "--discard=unmap", "--detect-zeroes=unmap")
	}
	s, err := e.startServer("qemu-nbd", append(argv, path)...)
	if err != nil {
		return nil, "", err
	}
	if err := waitDial(ctx, s, "unix", sock); err != nil {
		return nil, "", err
	}
	return s, "nbd+unix:///?socket=" + sock, nil
}

// waitDial waits until addr accepts connections, or s exits, for at most
// 15 seconds.
func waitDial(ctx context.Context, s *server, network, addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if s.Exited() {
			return fmt.Errorf("%s exited before accepting connections: %s", s.name, logTail(s))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s on %s: %w", s.name, addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// measureClient runs a client program and fills the result's client
// fields. Its output goes to a log, quoted in the error when it fails.
func (e *runEnv) measureClient(ctx context.Context, argv ...string) error {
	logPath := e.file(filepath.Base(argv[0]) + ".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	load := startLoad()
	u, err := measure(ctx, cmd)
	e.res.MachineCPU, e.res.IOWait = load.stop()
	e.res.Wall, e.res.ClientCPU, e.res.ClientChildCPU = u.Wall, u.CPU, u.ChildCPU
	e.res.ClientRSS, e.res.ClientTreeRSS = u.PeakRSS, u.TreeRSS
	if err != nil {
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("%s: %w: %s", filepath.Base(argv[0]), err, strings.TrimSpace(tail(string(b), 800)))
	}
	return nil
}

// cpuMeter sums the CPU seconds servers spend between start and stop.
type cpuMeter struct {
	servers []*server
	before  []float64
}

func startCPU(servers ...*server) (*cpuMeter, error) {
	m := &cpuMeter{servers: servers}
	for _, s := range servers {
		t, err := s.Times()
		if err != nil {
			return nil, fmt.Errorf("reading CPU times of %s: %w", s.name, err)
		}
		m.before = append(m.before, t.CPU())
	}
	return m, nil
}

// stop returns the CPU seconds spent since start.
func (m *cpuMeter) stop() (float64, error) {
	var sum float64
	for i, s := range m.servers {
		t, err := s.Times()
		if err != nil {
			return 0, fmt.Errorf("reading CPU times of %s: %w", s.name, err)
		}
		sum += t.CPU() - m.before[i]
	}
	return sum, nil
}

// verify compares the copy with the source.
func (e *runEnv) verify(ctx context.Context, path string) error {
	if err := command(ctx, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", e.im.Path, path); err != nil {
		return fmt.Errorf("verifying %s: %w", filepath.Base(path), err)
	}
	e.res.Verified = true
	return nil
}

// daemon is a running imageiod with its configuration.
type daemon struct {
	srv     *server
	confDir string
	port    int
}

// startDaemon starts imageiod with a generated configuration: remote
// service on 127.0.0.1 with the harness's certificate, the local service
// on a Unix socket when local is set, control on a Unix socket.
func (e *runEnv) startDaemon(ctx context.Context, local bool) (*daemon, error) {
	dir := e.file("daemon")
	confD := filepath.Join(dir, "conf.d")
	if err := os.MkdirAll(confD, 0o755); err != nil {
		return nil, err
	}
	control := filepath.Join(dir, "control.sock")
	localSocket := ""
	if local {
		localSocket = filepath.Join(dir, "local.sock")
	}
	conf := fmt.Sprintf(`# Written by the imageio benchmark.
[daemon]
run_dir = %s
drop_privileges = false
systemd_enable = false

[tls]
enable = true
key_file = %s
cert_file = %s
ca_file = %s

[remote]
host = 127.0.0.1
port = 0

[local]
enable = %v
socket = %s

[control]
transport = unix
socket = %s
`, dir, e.h.tls.KeyFile, e.h.tls.CertFile, e.h.tls.CAFile, local, localSocket, control)
	if err := os.WriteFile(filepath.Join(confD, "99-bench.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	s, err := e.startServer("imageiod", filepath.Join(e.h.bin, "imageiod"), "-c", dir)
	if err != nil {
		return nil, err
	}
	port, err := remotePort(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := waitDial(ctx, s, "unix", control); err != nil {
		return nil, err
	}
	if local {
		if err := waitDial(ctx, s, "unix", localSocket); err != nil {
			return nil, err
		}
	}
	return &daemon{srv: s, confDir: dir, port: port}, nil
}

// startedLine is imageiod's log line once it serves, with the remote
// service's address: msg="imageiod started" ... remote=127.0.0.1:PORT.
var startedLine = regexp.MustCompile(`msg="imageiod started".* remote=127\.0\.0\.1:([0-9]+)`)

// remotePort waits for imageiod to log that it serves and returns the port
// its remote service bound ([remote] port = 0 picks a free one).
func remotePort(ctx context.Context, s *server) (int, error) {
	logPath := s.cmd.Stdout.(*os.File).Name()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if m := startedLine.FindSubmatch(b); m != nil {
			port, err := strconv.Atoi(string(m[1]))
			if err != nil {
				return 0, fmt.Errorf("parsing imageiod's remote port: %w", err)
			}
			return port, waitDial(ctx, s, "tcp", net.JoinHostPort("127.0.0.1", string(m[1])))
		}
		if s.Exited() {
			return 0, fmt.Errorf("imageiod exited: %s", logTail(s))
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("imageiod did not log its remote address in 15 s: %s", logTail(s))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// addTicket adds a ticket for the NBD URL with imageioctl and returns the
// transfer URL.
func (e *runEnv) addTicket(ctx context.Context, d *daemon, nbdURL string, size int64, op string) (string, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	uuid := hex.EncodeToString(id)
	t := map[string]any{
		"uuid":               uuid,
		"size":               size,
		"url":                nbdURL,
		"ops":                []string{op},
		"timeout":            3600,
		"inactivity_timeout": 600,
		"sparse":             true,
		"transfer_id":        "bench-" + uuid[:8],
	}
	b, err := json.Marshal(t)
	if err != nil {
		return "", err
	}
	path := e.file("ticket.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", err
	}
	if err := command(ctx, filepath.Join(e.h.bin, "imageioctl"), "-c", d.confDir, "add-ticket", path); err != nil {
		return "", fmt.Errorf("adding ticket: %w", err)
	}
	return fmt.Sprintf("https://127.0.0.1:%d/images/%s", d.port, uuid), nil
}

// nbdUnixURL turns the nbd+unix URL the harness uses into the
// nbd:unix:PATH form tickets carry.
func nbdUnixURL(u string) (string, error) {
	sock, ok := strings.CutPrefix(u, "nbd+unix:///?socket=")
	if !ok {
		return "", errors.New("not an nbd+unix URL: " + u)
	}
	return "nbd:unix:" + sock, nil
}
