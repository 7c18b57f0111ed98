package http

import (
	"net/url"
	"strings"
	"testing"
)

func TestRedactText(t *testing.T) {
	tests := []struct {
		name, id, in, want string
	}{
		{"url path end", "abc", `Put "https://h:54322/images/abc?flush=n": EOF`, `Put "https://h:54322/images/***?flush=n": EOF`},
		{"url path segment", "abc", "GET /images/abc/extents failed", "GET /images/***/extents failed"},
		{"end of text", "abc", "https://h/images/abc", "https://h/images/***"},
		{"daemon message", "abc", "You are not allowed to access this resource: No such ticket abc\n",
			"You are not allowed to access this resource: No such ticket ***\n"},
		{"word elsewhere", "disk", "disk full while writing /images/disk", "disk full while writing /images/***"},
		{"longer segment", "abc", "/images/abcdef and /images/abc-1", "/images/abcdef and /images/abc-1"},
		{"prefix of word", "abc", "No such ticket abcd", "No such ticket abcd"},
		{"several", "abc", "/abc /abc/x No such ticket abc.", "/*** /***/x No such ticket ***."},
		{"escaped", "a b", "GET /images/a%20b: No such ticket a b", "GET /images/***: No such ticket ***"},
		{"no id", "", "/images/abc", "/images/abc"},
		{"unrelated", "abc", "connection reset by peer", "connection reset by peer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := redactor{secret: tc.id}
			if got := r.text(tc.in); got != tc.want {
				t.Errorf("text(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"ticket", "https://u:p@h:54322/images/abc?x=1#f", "https://h:54322/images/***"},
		{"same as a directory", "https://h/images/images", "https://h/images/***"},
		{"trailing slash", "https://h/images/abc/", "https://h/images/***/"},
		{"no ticket", "https://h/", "https://h/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := newRedactor(u).url(u); got != tc.want {
				t.Errorf("url(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzRedactText checks that no ticket id is left where it names the
// ticket, whatever the message.
func FuzzRedactText(f *testing.F) {
	f.Add("abc", `Put "https://h/images/abc?flush=n": EOF`)
	f.Add("abc", "No such ticket abc\n/abc/abc")
	f.Add("a b", "/a%20b /a b")
	f.Fuzz(func(t *testing.T, id, msg string) {
		if id == "" || strings.Contains(id, "*") {
			return
		}
		got := redactor{secret: id}.text(msg)
		for _, prefix := range []string{"/", noSuchTicket} {
			for rest := got; ; {
				i := strings.Index(rest, prefix+id)
				if i < 0 {
					break
				}
				end := i + len(prefix) + len(id)
				if end == len(rest) || isBoundary(rest[end]) {
					t.Fatalf("text(%q) with id %q = %q: id left after %q", msg, id, got, prefix)
				}
				rest = rest[i+1:]
			}
		}
	})
}
