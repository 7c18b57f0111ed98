package commands

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// defaults returns transfer options as the flags' defaults set them.
func defaults() transferOptions {
	return transferOptions{MaxWorkers: defWorkers, BufferSize: defBufferSize}
}

// TestRunUploadDownloadChecks calls runUpload and runDownload directly
// with option structs that cannot run and checks the usage errors.
func TestRunUploadDownloadChecks(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		run  func() error
		want string
	}{
		{"upload no file", func() error {
			return runUpload(ctx, uploadOptions{transferOptions: defaults(), DiskID: "D"}, nil, io.Discard, io.Discard)
		}, "want one FILE"},
		{"upload transfer url not http", func() error {
			return runUpload(ctx, uploadOptions{transferOptions: defaults(), TransferURL: "ftp://x"}, []string{"f"}, io.Discard, io.Discard)
		}, "not an http(s) URL"},
		{"upload use-proxy without proxy", func() error {
			return runUpload(ctx, uploadOptions{transferOptions: defaults(), TransferURL: "https://h/images/t", Conn: connOptions{UseProxy: true}}, []string{"f"}, io.Discard, io.Discard)
		}, "needs --proxy-url"},
		{"upload negative inactivity", func() error {
			return runUpload(ctx, uploadOptions{transferOptions: defaults(), DiskID: "D", Conn: connOptions{InactivityTimeout: -1}}, []string{"f"}, io.Discard, io.Discard)
		}, "--inactivity-timeout"},
		{"upload huge buffer", func() error {
			o := defaults()
			o.BufferSize = "64m"
			return runUpload(ctx, uploadOptions{transferOptions: o, DiskID: "D"}, []string{"f"}, io.Discard, io.Discard)
		}, "--buffer-size 64m"},
		{"download url with engine flags", func() error {
			return runDownload(ctx, downloadOptions{transferOptions: defaults(), Format: "qcow2", Conn: connOptions{Profile: "p"}}, []string{"https://h/images/t", "f"}, io.Discard, io.Discard)
		}, "does not use the engine"},
		{"download bad format", func() error {
			return runDownload(ctx, downloadOptions{transferOptions: defaults(), Format: "vmdk"}, []string{"https://h/images/t", "f"}, io.Discard, io.Discard)
		}, `--format "vmdk"`},
		{"download proxy with disk id", func() error {
			return runDownload(ctx, downloadOptions{transferOptions: defaults(), Format: "raw", DiskID: "D", ProxyURL: "https://p"}, []string{"f"}, io.Discard, io.Discard)
		}, "--proxy-url goes with"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			var u *UsageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a usage error with %q", err, tc.want)
			}
		})
	}
}

func TestNewUUID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := newUUID()
		if len(id) != 36 || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) || strings.Count(id, "-") != 4 {
			t.Fatalf("newUUID() = %q, not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("newUUID() repeated %q", id)
		}
		seen[id] = true
	}
}
