package transfer

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestUploadMissingFileFirst checks that a missing local file is reported
// before the daemon is contacted.
func TestUploadMissingFileFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "missing.qcow2")
	_, err = Upload(ctx, UploadOptions{Path: missing, URL: "https://" + ln.Addr().String() + "/images/ticket"})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Upload of a missing file: %v, want an error wrapping fs.ErrNotExist", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the daemon was contacted %d times before the missing file was noticed", n)
	}
}
