package testutil

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Relay is a loopback TCP relay in front of a server that cuts every
// connection after a number of bytes in either direction, to test retries.
type Relay struct {
	ln    net.Listener
	limit int64
	cuts  atomic.Int64
	wg    sync.WaitGroup
}

// StartRelay listens on 127.0.0.1 and relays each connection to target
// until limit bytes have moved on it, then resets both sides. The relay
// stops, and waits for its connections, when the test ends.
func StartRelay(t testing.TB, target string, limit int64) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, limit: limit}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c, target)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

// Addr returns the host:port the relay listens on.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Cuts returns how many connections the relay has cut.
func (r *Relay) Cuts() int64 { return r.cuts.Load() }

func (r *Relay) serve(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	var moved atomic.Int64
	cut := make(chan struct{})
	var once sync.Once
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if moved.Add(int64(n)) > r.limit {
					once.Do(func() { r.cuts.Add(1); close(cut) })
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	done := make(chan struct{}, 2)
	go func() { pipe(u, c); done <- struct{}{} }()
	go func() { pipe(c, u); done <- struct{}{} }()
	left := 2
	select {
	case <-done:
		left--
	case <-cut:
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
	u.Close()
	for ; left > 0; left-- {
		<-done
	}
}
