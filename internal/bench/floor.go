package main

// Floors: what moving bytes through sockets and TLS costs this machine's
// CPU with no imageio code in the way. Each socket floor is two processes
// (this program run as "bench floor-peer") joined by one real loopback
// connection that the harness makes and hands over; the measured process
// reports its own getrusage time around its data loop, so neither the
// peer's CPU nor process start-up and the TLS handshake count.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// Kinds and operations of floors.
const (
	floorTCP  = "tcp"
	floorTLS  = "tls"
	floorUnix = "unix"
	floorAES  = "aes-128-gcm"

	opSend    = "send"
	opReceive = "receive"
	opSeal    = "seal"
	opOpen    = "open"
)

const (
	// floorIO is the size of one read or write on a socket.
	floorIO = 1 << 20
	// floorRecord is the plaintext size of one AES-GCM record: a full
	// TLS record.
	floorRecord = 16 << 10
	// floorTLSBuffer is the buffer the daemon reads TLS connections
	// through, and collects the records it writes in (daemon/copy.go).
	floorTLSBuffer = 256 << 10
	// floorUnixBuffer is the socket buffer size package nbd asks for on
	// its connections to qemu-nbd (nbd/client.go).
	floorUnixBuffer = 4 << 20
	// minFloorSize is the smallest BENCH_FLOOR_SIZE.
	minFloorSize = 1 << 20
)

// floor is one measurement.
type floor struct {
	Name     string
	Kind, Op string
	// Buffered is imageiod's way of using crypto/tls: reads through a
	// 256 KiB buffer, the records of a write collected in one.
	Buffered bool
}

// Names of the floors; the report refers to them.
const (
	flTCPReceive  = "floor tcp receive"
	flTCPSend     = "floor tcp send"
	flTLSReceive  = "floor tls receive"
	flTLSSend     = "floor tls send"
	flTLSReceiveB = "floor tls receive buffered"
	flTLSSendB    = "floor tls send corked"
	flUnixReceive = "floor unix receive"
	flUnixSend    = "floor unix send"
	flAESSeal     = "floor aes-128-gcm seal"
	flAESOpen     = "floor aes-128-gcm open"
)

// floors run in this order in every round.
var floors = []floor{
	{flTCPReceive, floorTCP, opReceive, false},
	{flTCPSend, floorTCP, opSend, false},
	{flTLSReceive, floorTLS, opReceive, false},
	{flTLSSend, floorTLS, opSend, false},
	{flTLSReceiveB, floorTLS, opReceive, true},
	{flTLSSendB, floorTLS, opSend, true},
	{flUnixReceive, floorUnix, opReceive, false},
	{flUnixSend, floorUnix, opSend, false},
	{flAESSeal, floorAES, opSeal, false},
	{flAESOpen, floorAES, opOpen, false},
}

// floorSpec tells a floor-peer process what to do; the harness passes it
// as JSON in the one argument.
type floorSpec struct {
	Kind string `json:"kind"`
	Op   string `json:"op"`
	// Server marks the accepting end of a socket floor (the TLS server);
	// the measured end is always the server, as imageiod is.
	Server bool `json:"server,omitempty"`
	// Buffered makes a TLS end read through a floorTLSBuffer buffer and
	// collect the records of each write in one, as imageiod does.
	Buffered bool  `json:"buffered,omitempty"`
	Size     int64 `json:"size"`
	// Timeout bounds the whole run of the process.
	Timeout  time.Duration `json:"timeout"`
	CertFile string        `json:"cert_file,omitempty"`
	KeyFile  string        `json:"key_file,omitempty"`
	CAFile   string        `json:"ca_file,omitempty"`
}

// parseFloorSpec parses and checks a floor-peer argument.
func parseFloorSpec(arg string) (floorSpec, error) {
	var s floorSpec
	dec := json.NewDecoder(bytes.NewReader([]byte(arg)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return floorSpec{}, fmt.Errorf("parsing floor spec: %w", err)
	}
	ops := map[string][]string{floorTCP: {opSend, opReceive}, floorTLS: {opSend, opReceive},
		floorUnix: {opSend, opReceive}, floorAES: {opSeal, opOpen}}
	valid, ok := ops[s.Kind]
	if !ok {
		return floorSpec{}, fmt.Errorf("parsing floor spec: unknown kind %q", s.Kind)
	}
	if s.Op != valid[0] && s.Op != valid[1] {
		return floorSpec{}, fmt.Errorf("parsing floor spec: kind %s has no op %q", s.Kind, s.Op)
	}
	if s.Size <= 0 || s.Timeout <= 0 {
		return floorSpec{}, fmt.Errorf("parsing floor spec: size %d and timeout %v must be positive", s.Size, s.Timeout)
	}
	if s.Buffered && s.Kind != floorTLS {
		return floorSpec{}, fmt.Errorf("parsing floor spec: %s cannot be buffered", s.Kind)
	}
	if s.Kind == floorTLS && (s.CAFile == "" || s.Server && (s.CertFile == "" || s.KeyFile == "")) {
		return floorSpec{}, errors.New("parsing floor spec: TLS needs ca_file, and cert_file and key_file on the server")
	}
	return s, nil
}

// floorReport is what a floor-peer process prints on stdout: one JSON
// object.
type floorReport struct {
	Bytes int64 `json:"bytes"`
	// User and System are the process's getrusage times, Wall the
	// elapsed time, all in seconds, from the first byte to the last.
	User   float64 `json:"user_s"`
	System float64 `json:"system_s"`
	Wall   float64 `json:"wall_s"`
	// TLS is the negotiated version and cipher suite.
	TLS string `json:"tls,omitempty"`
}

// CPU is user plus system time.
func (r floorReport) CPU() float64 { return r.User + r.System }

// selfCPU returns this process's user and system time (all threads).
func selfCPU() (user, system float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0 // cannot fail with valid arguments
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime), tv(ru.Stime)
}

// cpuClock measures the process's CPU and wall time of a period.
type cpuClock struct {
	user, system float64
	start        time.Time
}

func startClock() cpuClock {
	u, s := selfCPU()
	return cpuClock{user: u, system: s, start: time.Now()}
}

// stop fills the times of rep.
func (c cpuClock) stop(rep *floorReport) {
	u, s := selfCPU()
	rep.Wall = time.Since(c.start).Seconds()
	rep.User, rep.System = u-c.user, s-c.system
}

// runFloorPeer is "bench floor-peer SPEC": one end of a socket floor, its
// connection on file descriptor 3, or an AES-GCM floor. It prints a
// floorReport.
func runFloorPeer(ctx context.Context, arg string, stdout io.Writer) error {
	spec, err := parseFloorSpec(arg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	var rep floorReport
	if spec.Kind == floorAES {
		rep, err = aesFloor(ctx, spec)
	} else {
		rep, err = socketFloor(ctx, spec, os.NewFile(3, "floor connection"))
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(rep)
}

// randomBuffer returns n random bytes.
func randomBuffer(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return b
}

// socketFloor moves spec.Size bytes over the connection in f.
func socketFloor(ctx context.Context, spec floorSpec, f *os.File) (floorReport, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return floorReport{}, fmt.Errorf("opening the floor connection: %w", err)
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	var rep floorReport
	var conn net.Conn = c
	var corked *bufferedConn // collects TLS records while sending
	switch spec.Kind {
	case floorUnix:
		if u, ok := c.(*net.UnixConn); ok {
			_ = u.SetReadBuffer(floorUnixBuffer)
			_ = u.SetWriteBuffer(floorUnixBuffer)
		}
	case floorTLS:
		under := c
		if spec.Buffered {
			corked = &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, floorTLSBuffer), w: bufio.NewWriterSize(c, floorTLSBuffer)}
			under = corked
		}
		tc, err := floorTLSConn(spec, under)
		if err != nil {
			return floorReport{}, err
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			return floorReport{}, fmt.Errorf("doing the TLS handshake: %w", err)
		}
		st := tc.ConnectionState()
		rep.TLS = tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
		conn = tc
	}
	// The receiver says it is ready with one byte, so that neither end
	// counts the other's start-up as its own time.
	var n int64
	if spec.Op == opSend {
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			return rep, fmt.Errorf("waiting for the receiver: %w", err)
		}
		clock := startClock()
		n, err = sendFloor(conn, spec.Size, corked)
		clock.stop(&rep)
		if err == nil {
			// Wait for the receiver to close, so that nothing unread
			// (TLS session tickets) makes the close a reset.
			_, _ = io.CopyN(io.Discard, conn, 1<<20)
		}
	} else {
		if _, err := conn.Write([]byte{1}); err != nil {
			return rep, fmt.Errorf("telling the sender to start: %w", err)
		}
		clock := startClock()
		n, err = receiveFloor(conn, spec.Size)
		clock.stop(&rep)
	}
	rep.Bytes = n
	if err != nil {
		return rep, fmt.Errorf("moving %d bytes (%s %s): stopped after %d: %w", spec.Size, spec.Kind, spec.Op, n, err)
	}
	if err := conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return rep, fmt.Errorf("closing the floor connection: %w", err)
	}
	return rep, nil
}

// floorTLSConn makes the TLS end of spec over c with the settings of
// imageiod's remote service (server) and of backend/http (client).
func floorTLSConn(spec floorSpec, c net.Conn) (*tls.Conn, error) {
	if spec.Server {
		cert, err := tls.LoadX509KeyPair(spec.CertFile, spec.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading TLS certificate: %w", err)
		}
		return tls.Server(c, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			NextProtos: []string{"http/1.1"}}), nil
	}
	pem, err := os.ReadFile(spec.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("reading CA file %s: no certificates", spec.CAFile)
	}
	return tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS12, DynamicRecordSizingDisabled: true,
		RootCAs: pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}}), nil
}

// bufferedConn reads its connection through r and, while corked,
// collects writes in w, as imageiod does under crypto/tls: one system call
// moves several TLS records.
type bufferedConn struct {
	net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	corked bool
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufferedConn) Write(p []byte) (int, error) {
	if b.corked {
		return b.w.Write(p)
	}
	return b.Conn.Write(p)
}

// cork makes writes collect until uncork.
func (b *bufferedConn) cork() { b.corked = true }

// uncork writes what was collected and stops collecting.
func (b *bufferedConn) uncork() error {
	b.corked = false
	return b.w.Flush()
}

// sendFloor writes size bytes of random data in floorIO writes and shuts
// down the sending side. With corked set, the records of each write are
// collected and written together.
func sendFloor(conn net.Conn, size int64, corked *bufferedConn) (int64, error) {
	buf := randomBuffer(floorIO)
	var sent int64
	for i := int64(0); sent < size && i <= size/floorIO; i++ {
		if corked != nil {
			corked.cork()
		}
		n, err := conn.Write(buf[:min(int64(len(buf)), size-sent)])
		sent += int64(n)
		if corked != nil {
			err = errors.Join(err, corked.uncork())
		}
		if err != nil {
			return sent, err
		}
	}
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := conn.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil {
			return sent, fmt.Errorf("shutting down the sending side: %w", err)
		}
	}
	return sent, nil
}

// receiveFloor reads the connection to its end in floorIO reads and checks
// that it carried size bytes.
func receiveFloor(conn net.Conn, size int64) (int64, error) {
	buf := make([]byte, floorIO)
	var got int64
	// Every read but the last returns at least one byte.
	for i := int64(0); i <= size+1; i++ {
		n, err := conn.Read(buf)
		got += int64(n)
		switch {
		case got > size:
			return got, fmt.Errorf("received more than %d bytes", size)
		case errors.Is(err, io.EOF) && got == size:
			return got, nil
		case errors.Is(err, io.EOF):
			return got, io.ErrUnexpectedEOF
		case err != nil:
			return got, err
		}
	}
	return got, errors.New("the connection does not end")
}

// aesFloor seals or opens spec.Size bytes in floorRecord records with
// AES-128-GCM, each with a 5-byte header as additional data, as TLS 1.3
// does. Open cycles through 64 records sealed beforehand.
func aesFloor(ctx context.Context, spec floorSpec) (floorReport, error) {
	block, err := aes.NewCipher(randomBuffer(16))
	if err != nil {
		return floorReport{}, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return floorReport{}, err
	}
	plain := randomBuffer(floorRecord)
	header := []byte{23, 3, 3, 0x40, 0x11} // TLS application data, 16 KiB + tag
	nonce := make([]byte, gcm.NonceSize())
	out := make([]byte, 0, floorRecord+gcm.Overhead())
	const sealed = 64
	var records [sealed][]byte
	if spec.Op == opOpen {
		for i := range records {
			binary.BigEndian.PutUint64(nonce[4:], uint64(i))
			records[i] = gcm.Seal(nil, nonce, plain, header)
		}
	}
	count := (spec.Size + floorRecord - 1) / floorRecord
	var rep floorReport
	clock := startClock()
	for i := int64(0); i < count; i++ {
		if i%256 == 0 && ctx.Err() != nil {
			return rep, fmt.Errorf("AES-GCM %s after %d records: %w", spec.Op, i, ctx.Err())
		}
		if spec.Op == opSeal {
			binary.BigEndian.PutUint64(nonce[4:], uint64(i))
			out = gcm.Seal(out[:0], nonce, plain, header)
		} else {
			binary.BigEndian.PutUint64(nonce[4:], uint64(i%sealed))
			if out, err = gcm.Open(out[:0], nonce, records[i%sealed], header); err != nil {
				return rep, fmt.Errorf("opening record %d: %w", i, err)
			}
		}
		rep.Bytes += int64(len(plain))
	}
	clock.stop(&rep)
	return rep, nil
}

// floorResult is one run of one floor.
type floorResult struct {
	Floor string `json:"floor"`
	Run   int    `json:"run"`
	Bytes int64  `json:"bytes"`
	// CPU is the measured process's user+system seconds while it moved
	// the bytes, User and System its parts; Wall is its elapsed time.
	CPU    float64 `json:"cpu_s"`
	User   float64 `json:"user_s"`
	System float64 `json:"system_s"`
	Wall   float64 `json:"wall_s"`
	// PeerCPU is the other end's CPU seconds (socket floors).
	PeerCPU float64 `json:"peer_cpu_s,omitempty"`
	TLS     string  `json:"tls,omitempty"`
	// OtherLoad is the percentage of the machine's CPU time (all CPUs)
	// that went to other work while the floor ran, its processes'
	// start-up included; -1 when unknown.
	OtherLoad float64 `json:"other_load_pct"`
	Error     string  `json:"error,omitempty"`
}

// PerGiB returns CPU seconds per GiB moved.
func (r floorResult) PerGiB() float64 {
	if r.Bytes <= 0 {
		return 0
	}
	return r.CPU / gib(r.Bytes)
}

// floorTimeout bounds one floor process: generous for a slow or busy
// machine (40 MB/s), plus start-up.
func floorTimeout(size int64) time.Duration {
	return 30*time.Second + time.Duration(size/(40<<20))*time.Second
}

// runFloors runs the selected floors cfg.Runs times, in rounds.
func (h *harness) runFloors(ctx context.Context) []floorResult {
	if h.cfg.FloorSize == 0 {
		return nil
	}
	var results []floorResult
	for r := 1; r <= h.cfg.Runs; r++ {
		for _, fl := range floors {
			if h.cfg.Only != nil && !h.cfg.Only.MatchString(fl.Name) {
				continue
			}
			res := h.runFloor(ctx, fl, h.cfg.FloorSize)
			if ctx.Err() != nil {
				return results // the interrupted run is not reported
			}
			res.Run = r
			if res.Error != "" {
				h.logf("%-28s run %d: error: %s", fl.Name, r, res.Error)
			} else {
				h.logf("%-28s run %d: %s in %.2f s, %.3f CPU-s (%.3f per GiB), peer %.3f CPU-s %s",
					fl.Name, r, formatSize(res.Bytes), res.Wall, res.CPU, res.PerGiB(), res.PeerCPU, res.TLS)
			}
			results = append(results, res)
		}
	}
	return results
}

// runFloor runs one floor once and stops every process it started before
// it returns.
func (h *harness) runFloor(ctx context.Context, fl floor, size int64) floorResult {
	res := floorResult{Floor: fl.Name}
	spec := floorSpec{Kind: fl.Kind, Op: fl.Op, Server: true, Buffered: fl.Buffered, Size: size, Timeout: floorTimeout(size)}
	var reps []floorReport
	var err error
	load := startLoad()
	if fl.Kind == floorAES {
		reps, err = h.floorProcesses(ctx, []floorSpec{spec}, nil)
	} else {
		reps, err = h.socketFloor(ctx, spec)
	}
	if err == nil && reps[0].Bytes != size {
		err = fmt.Errorf("moved %d bytes, want %d", reps[0].Bytes, size)
	}
	if err != nil {
		res.Error = err.Error()
		return res
	}
	wall := time.Since(load.start).Seconds()
	busy, _ := load.stop()
	m := reps[0]
	res.Bytes, res.User, res.System, res.CPU, res.Wall, res.TLS = m.Bytes, m.User, m.System, m.CPU(), m.Wall, m.TLS
	if len(reps) > 1 {
		res.PeerCPU = reps[1].CPU()
	}
	res.OtherLoad = -1
	if busy >= 0 && wall > 0 {
		res.OtherLoad = min(100, max(0, 100*(busy-res.CPU-res.PeerCPU)/(wall*float64(runtime.NumCPU()))))
	}
	return res
}

// socketFloor connects two floor-peer processes with a fresh loopback
// connection: the measured one (spec) gets the accepted end, the peer the
// dialing end and the opposite operation.
func (h *harness) socketFloor(ctx context.Context, spec floorSpec) ([]floorReport, error) {
	network, addr := "tcp", "127.0.0.1:0"
	if spec.Kind == floorUnix {
		network, addr = "unix", h.scratch("floor.sock")
	}
	server, client, err := connPair(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	defer server.Close()
	defer client.Close()
	peer := spec
	peer.Server, peer.Buffered = false, false
	peer.Op = opSend
	if spec.Op == opSend {
		peer.Op = opReceive
	}
	if spec.Kind == floorTLS {
		spec.CertFile, spec.KeyFile, spec.CAFile = h.tls.CertFile, h.tls.KeyFile, h.tls.CAFile
		peer.CAFile = h.tls.CAFile
	}
	reps, err := h.floorProcesses(ctx, []floorSpec{spec, peer}, []*os.File{server, client})
	if err == nil && reps[1].Bytes != spec.Size {
		err = fmt.Errorf("peer moved %d bytes, want %d", reps[1].Bytes, spec.Size)
	}
	return reps, err
}

// connPair makes one connection over a new listener on addr and returns
// its two ends as files: the accepted end and the dialing end.
func connPair(ctx context.Context, network, addr string) (server, client *os.File, err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listening for a floor connection: %w", err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	cc, err := d.DialContext(ctx, network, ln.Addr().String())
	if err != nil {
		ln.Close() // ends the Accept
		if a := <-ch; a.c != nil {
			a.c.Close()
		}
		return nil, nil, fmt.Errorf("dialing a floor connection: %w", err)
	}
	defer cc.Close()
	var a accepted
	select {
	case a = <-ch:
	case <-time.After(10 * time.Second):
		ln.Close()
		a = <-ch
		if a.err == nil {
			a.c.Close()
			a.err = errors.New("timed out")
		}
	}
	if a.err != nil {
		return nil, nil, fmt.Errorf("accepting a floor connection: %w", a.err)
	}
	defer a.c.Close()
	type filer interface{ File() (*os.File, error) }
	if server, err = a.c.(filer).File(); err != nil {
		return nil, nil, err
	}
	if client, err = cc.(filer).File(); err != nil {
		server.Close()
		return nil, nil, err
	}
	return server, client, nil
}

// floorProcesses runs one floor-peer process per spec, the one of files[i]
// (if any) as its descriptor 3, waits for all of them for at most the
// specs' timeout and returns their reports in order.
func (h *harness) floorProcesses(ctx context.Context, specs []floorSpec, files []*os.File) ([]floorReport, error) {
	type proc struct {
		srv            *server
		stdout, stderr bytes.Buffer
	}
	procs := make([]*proc, len(specs))
	mark := len(h.servers)
	defer func() {
		for i := len(h.servers) - 1; i >= mark; i-- {
			_ = h.servers[i].Stop()
		}
		h.servers = h.servers[:mark]
	}()
	for i, spec := range specs {
		arg, err := json.Marshal(spec)
		if err != nil {
			return nil, err
		}
		p := &proc{}
		cmd := exec.Command(h.self, "floor-peer", string(arg))
		cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
		if i < len(files) {
			cmd.ExtraFiles = []*os.File{files[i]}
		}
		if p.srv, err = startProcess("floor-peer", cmd); err != nil {
			return nil, err
		}
		h.servers = append(h.servers, p.srv)
		procs[i] = p
	}
	// The parent's copies of the connection must go, so that an end sees
	// EOF when the other process closes or dies.
	for _, f := range files {
		f.Close()
	}
	timer := time.NewTimer(specs[0].Timeout + 10*time.Second)
	defer timer.Stop()
	var errs []error
	reps := make([]floorReport, len(procs))
	for i, p := range procs {
		select {
		case <-p.srv.done:
		case <-timer.C:
			return nil, fmt.Errorf("floor-peer did not end in %v", specs[0].Timeout+10*time.Second)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if p.srv.err != nil {
			errs = append(errs, fmt.Errorf("floor-peer %s %s: %w: %s", specs[i].Kind, specs[i].Op, p.srv.err,
				bytes.TrimSpace(p.stderr.Bytes())))
			continue
		}
		if err := json.Unmarshal(p.stdout.Bytes(), &reps[i]); err != nil {
			errs = append(errs, fmt.Errorf("parsing the report of floor-peer %s %s: %w", specs[i].Kind, specs[i].Op, err))
			continue
		}
		if r := reps[i]; r.Bytes < 0 || r.User < 0 || r.System < 0 || r.Wall < 0 || math.IsNaN(r.CPU()) {
			errs = append(errs, fmt.Errorf("floor-peer %s %s reported %+v", specs[i].Kind, specs[i].Op, r))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return reps, nil
}
