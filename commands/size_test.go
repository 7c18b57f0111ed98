package commands

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"65536", 65536, false},
		{"64k", 64 << 10, false},
		{"64K", 64 << 10, false},
		{"4m", 4 << 20, false},
		{"4M", 4 << 20, false},
		{"4MiB", 4 << 20, false},
		{"4mb", 4 << 20, false},
		{"1g", 1 << 30, false},
		{"512b", 512, false},
		{" 8m ", 8 << 20, false},
		{"", 0, true},
		{"m", 0, true},
		{"kb", 0, true},
		{"-1m", 0, true},
		{"+1m", 0, true},
		{"1.5m", 0, true},
		{"4x", 0, true},
		{"4ib", 0, true},
		{"4t", 0, true},
		{"99999999999999g", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Errorf("parseSize(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0 bytes"},
		{1023, "1023 bytes"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{4 << 20, "4 MiB"},
		{1<<30 + 1<<29, "1.5 GiB"},
		{6 << 40, "6 TiB"},
	}
	for _, tc := range cases {
		if got := formatSize(tc.in); got != tc.want {
			t.Errorf("formatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParseSize checks that parseSize never panics, never returns a
// negative size, and that every accepted size formats and parses back.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4m", "64k", "1g", "4MiB", "512b", "65536", "", "-1", "9223372036854775807", "8589934592g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if n != 0 {
				t.Errorf("parseSize(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("parseSize(%q) = %d, negative", s, n)
		}
		if _, err := parseSize(formatInt(n)); err != nil && !errors.Is(err, errBadSize) {
			t.Errorf("parseSize(%d) failed: %v", n, err)
		}
	})
}

func formatInt(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
