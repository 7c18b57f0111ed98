package nbd

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name, in string
		want     Address
		url      string
	}{
		{"unix", "nbd:unix:/run/x.sock", Address{"unix", "/run/x.sock", ""}, "nbd:unix:/run/x.sock"},
		{"unix export", "nbd:unix:/run/x.sock:exportname=sda", Address{"unix", "/run/x.sock", "sda"}, "nbd:unix:/run/x.sock:exportname=sda"},
		{"unix export with colon", "nbd:unix:/s:exportname=a:b", Address{"unix", "/s", "a:b"}, "nbd:unix:/s:exportname=a:b"},
		{"tcp", "nbd:localhost:10809", Address{"tcp", "localhost:10809", ""}, "nbd:localhost:10809"},
		{"tcp export", "nbd:127.0.0.1:2000:exportname=e", Address{"tcp", "127.0.0.1:2000", "e"}, "nbd:127.0.0.1:2000:exportname=e"},
		{"tcp ipv6", "nbd:[::1]:2000:exportname=e", Address{"tcp", "[::1]:2000", "e"}, "nbd:[::1]:2000:exportname=e"},
		{"uri", "nbd://example.com:2000/exp", Address{"tcp", "example.com:2000", "exp"}, "nbd:example.com:2000:exportname=exp"},
		{"uri default port", "nbd://example.com", Address{"tcp", "example.com:10809", ""}, "nbd:example.com:10809"},
		{"uri ipv6", "nbd://[::1]:3000/a%20b", Address{"tcp", "[::1]:3000", "a b"}, "nbd:[::1]:3000:exportname=a b"},
		{"unix uri", "nbd+unix:///exp?socket=/run/s", Address{"unix", "/run/s", "exp"}, "nbd:unix:/run/s:exportname=exp"},
		{"unix uri no export", "nbd+unix://?socket=/run/s", Address{"unix", "/run/s", ""}, "nbd:unix:/run/s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseURL(tc.in)
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("ParseURL(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if u := got.URL(); u != tc.url {
				t.Errorf("URL() = %q, want %q", u, tc.url)
			}
			again, err := ParseURL(got.URL())
			if err != nil || again != got {
				t.Errorf("ParseURL(URL()) = %+v, %v, want %+v", again, err, got)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, in := range []string{
		"", "http://x", "nbd:", "nbd:unix:", "nbd:unix:relative", "nbd:host", "nbd:host:port",
		"nbd:host:0", "nbd:host:70000", "nbd::10809", "nbd://", "nbd://h:x/", "nbd+unix:///e",
		"nbd+unix:///e?socket=rel", "nbd+unix://host/e?socket=/s", "nbd://u@h/e", "nbd://h/e?x=1",
		"nbd:::1:10809",
	} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseURL(in)
			if !errors.Is(err, ErrInvalidURL) {
				t.Errorf("ParseURL(%q) error = %v, want ErrInvalidURL", in, err)
			}
		})
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"nbd:unix:/run/x.sock:exportname=sda", "nbd:[::1]:2000:exportname=e", "nbd://h:1/e",
		"nbd+unix:///exp?socket=/run/s", "nbd:host:10809", "nbd://[fe80::1%25eth0]:1/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseURL(s)
		if err != nil {
			return
		}
		if a.Network != "unix" && a.Network != "tcp" {
			t.Fatalf("ParseURL(%q) network %q", s, a.Network)
		}
		// The canonical form must parse back to the same address unless the
		// export name holds a separator the short form cannot carry.
		if strings.Contains(a.Addr, ":exportname=") {
			return
		}
		b, err := ParseURL(a.URL())
		if err != nil {
			t.Fatalf("ParseURL(%q).URL() = %q does not parse: %v", s, a.URL(), err)
		}
		if b.Network != a.Network || b.Addr != a.Addr {
			t.Fatalf("round trip of %q: %+v != %+v", s, b, a)
		}
	})
}
