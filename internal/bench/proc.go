package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat; Linux
// fixes it at 100 for user space.
const clockTicks = 100

// stopTimeout bounds how long a process may take to stop after SIGTERM
// before it gets SIGKILL.
const stopTimeout = 10 * time.Second

// procTimes are the CPU times of a process from /proc/PID/stat, in seconds.
type procTimes struct {
	User, System           float64 // the process itself (all threads)
	ChildUser, ChildSystem float64 // children it waited for
}

// CPU is the process's own user and system time.
func (t procTimes) CPU() float64 { return t.User + t.System }

// ChildCPU is the user and system time of the children it waited for.
func (t procTimes) ChildCPU() float64 { return t.ChildUser + t.ChildSystem }

// parseStat parses the content of /proc/PID/stat.
func parseStat(b []byte) (procTimes, error) {
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself; the fields after the last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procTimes{}, errors.New("parsing /proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime..cstime are fields 14..17.
	if len(f) < 15 {
		return procTimes{}, fmt.Errorf("parsing /proc stat: %d fields, want at least 17", len(f)+2)
	}
	var v [4]float64
	for j := range v {
		n, err := strconv.ParseUint(f[11+j], 10, 64)
		if err != nil {
			return procTimes{}, fmt.Errorf("parsing /proc stat field %d: %w", 14+j, err)
		}
		v[j] = float64(n) / clockTicks
	}
	return procTimes{User: v[0], System: v[1], ChildUser: v[2], ChildSystem: v[3]}, nil
}

// readTimes reads the CPU times of a live or zombie process.
func readTimes(pid int) (procTimes, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procTimes{}, err
	}
	return parseStat(b)
}

// parseHWM returns VmHWM (peak resident set size) in bytes from the content
// of /proc/PID/status; 0 when absent (a zombie has no memory left).
func parseHWM(b []byte) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parsing VmHWM %q", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing VmHWM %q: %w", line, err)
		}
		return n << 10, nil
	}
	return 0, nil
}

// readHWM reads a process's peak RSS in bytes.
func readHWM(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseHWM(b)
}

// usage is what one measured run of a program cost.
type usage struct {
	Wall     float64 // seconds from start to exit
	CPU      float64 // the program's own user+system seconds
	ChildCPU float64 // user+system seconds of the children it waited for (its qemu-nbd)
	PeakRSS  int64   // the program's own peak RSS (VmHWM, sampled every 10 ms)
	TreeRSS  int64   // peak RSS of the program or any child it waited for (rusage)
}

// hwmSample is how often a measured program's VmHWM is read. VmHWM only
// grows, so a sample misses at most what the program grew in its last
// interval.
const hwmSample = 10 * time.Millisecond

// measure runs cmd to its end and returns what it cost. cmd must not have
// been started. Its CPU times are read from /proc after it exits but
// before it is reaped (waitid with WNOWAIT), so they are the program's own,
// apart from the children it waited for.
func measure(ctx context.Context, cmd *exec.Cmd) (usage, error) {
	setGroup(cmd)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return usage{}, err
	}
	pid := cmd.Process.Pid
	// On cancellation the program gets SIGTERM first, so that it can stop
	// its children and remove its temporary files, then SIGKILL.
	exitedOrKilled := make(chan struct{})
	defer close(exitedOrKilled)
	stop := context.AfterFunc(ctx, func() {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-exitedOrKilled:
		case <-time.After(stopTimeout):
		}
		killGroup(pid)
	})
	defer stop()

	var peak atomic.Int64
	sampled := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(hwmSample)
		defer t.Stop()
		for {
			if n, err := readHWM(pid); err == nil && n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-exited:
				return
			case <-t.C:
			}
		}
	}()

	var u usage
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	u.Wall = time.Since(start).Seconds()
	times, terr := readTimes(pid)
	close(exited)
	<-sampled
	err := cmd.Wait()
	if terr != nil {
		return u, fmt.Errorf("reading CPU times of %s: %w", cmd.Path, terr)
	}
	u.CPU, u.ChildCPU, u.PeakRSS = times.CPU(), times.ChildCPU(), peak.Load()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.TreeRSS = ru.Maxrss << 10
	}
	return u, err
}

// setGroup starts cmd in its own process group, so that stopping it stops
// the children it started too, and kills it if the harness dies.
func setGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// killGroup sends SIGKILL to the process group of pid.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// server is a long-running process started by the harness (qemu-nbd,
// imageiod).
type server struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // the result of Wait, set before done is closed

	// mu guards stopped.
	mu      sync.Mutex
	stopped bool
}

// startServer starts a long-running program with its output in logPath.
func startServer(name, logPath string, argv ...string) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	return startProcess(name, cmd)
}

// startProcess starts cmd, which must not have been started, in its own
// process group as a server.
func startProcess(name string, cmd *exec.Cmd) (*server, error) {
	setGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// Pid returns the process id.
func (s *server) Pid() int { return s.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (s *server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Times reads the process's CPU times.
func (s *server) Times() (procTimes, error) { return readTimes(s.Pid()) }

// PeakRSS reads the process's peak RSS.
func (s *server) PeakRSS() (int64, error) { return readHWM(s.Pid()) }

// Stop sends SIGTERM to the process group, then SIGKILL after
// stopTimeout, and waits for the process. Stopping twice is a no-op.
func (s *server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	select {
	case <-s.done:
		return fmt.Errorf("%s exited early: %w", s.name, s.err)
	default:
	}
	pid := s.Pid()
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		killGroup(pid)
		<-s.done
		return fmt.Errorf("stopping %s: killed after %v", s.name, stopTimeout)
	}
	// Anything left in the group (children of the server) goes too.
	killGroup(pid)
	return nil
}

// machineBusy returns the CPU seconds the whole machine has spent busy
// (user, nice, system, irq, softirq, steal; not idle or iowait) since boot,
// from the first line of /proc/stat.
func machineBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseMachineBusy(b)
}

func parseMachineBusy(b []byte) (float64, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("parsing /proc/stat: unexpected first line %q", line)
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing /proc/stat: %w", err)
		}
		busy += n
	}
	return float64(busy) / clockTicks, nil
}

// ioPressure reads the "some" stall total of I/O from /proc/pressure/io:
// microseconds in which at least one task waited for I/O. ok is false when
// the kernel has no PSI.
func ioPressure() (total float64, ok bool) {
	b, err := os.ReadFile("/proc/pressure/io")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for _, f := range strings.Fields(line) {
		if v, found := strings.CutPrefix(f, "total="); found {
			n, err := strconv.ParseFloat(v, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// loadMeter measures what the whole machine did during a period: CPU
// seconds spent busy, and the share of time some task waited for I/O.
type loadMeter struct {
	start   time.Time
	busy    float64
	busyErr error
	io      float64
	ioOK    bool
}

func startLoad() loadMeter {
	m := loadMeter{start: time.Now()}
	m.busy, m.busyErr = machineBusy()
	m.io, m.ioOK = ioPressure()
	return m
}

// stop returns the machine's busy CPU seconds since start (-1 when
// unknown) and the percentage of the time some task waited for I/O (-1
// when unknown).
func (m loadMeter) stop() (busy, ioWait float64) {
	wall := time.Since(m.start).Seconds()
	busy, ioWait = -1, -1
	if b, err := machineBusy(); err == nil && m.busyErr == nil {
		busy = b - m.busy
	}
	if i, ok := ioPressure(); ok && m.ioOK && wall > 0 {
		ioWait = 100 * (i - m.io) / (wall * 1e6)
	}
	return busy, ioWait
}
