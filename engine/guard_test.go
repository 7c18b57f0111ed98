package engine

import (
	"encoding/xml"
	"testing"
)

func TestHasElement(t *testing.T) {
	tests := []struct {
		name string
		body string
		want bool
	}{
		{"empty", "", false},
		{"blank", " \n", false},
		{"text", "Service Unavailable", false},
		{"element", "<action><status>complete</status></action>", true},
		{"header", `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>` + "\n<disk id=\"x\"/>", true},
		{"html page", "<html><head><title>Error</title></head><body>invalid_grant: expired.</body></html>", true},
		{"truncated", "<disk><name>x</na", false},
		{"unclosed", "<disk>", false},
		{"html void tag", "<html><body>a<br>b</body></html>", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hasElement([]byte(tc.body)); got != tc.want {
				t.Errorf("hasElement(%q) = %v, want %v", tc.body, got, tc.want)
			}
		})
	}
}

// FuzzHasElement checks that whatever hasElement accepts is a well-formed
// document with an element, so the SDK's reader never fails on it.
func FuzzHasElement(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("<fault><reason>r</reason><detail>d</detail></fault>"))
	f.Add([]byte("<html><body>x</body></html>"))
	f.Add([]byte("<?xml version=\"1.0\"?>\n<a/>"))
	f.Add([]byte("<a><b></a>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !hasElement(b) {
			return
		}
		var v struct {
			XMLName xml.Name
		}
		if err := xml.Unmarshal(b, &v); err != nil {
			t.Fatalf("hasElement accepted %q, which does not parse: %v", b, err)
		}
	})
}

func TestPageText(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"engine 401", "<html><head><title>Error</title></head><body>invalid_grant: The provided authorization grant for the auth code has expired.</body></html>",
			"Error invalid_grant: The provided authorization grant for the auth code has expired."},
		{"plain", "  Unauthorized\n", "Unauthorized"},
		{"entities and void tags", "<html><body>a &amp; b<br>c</body></html>", "a & b c"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := pageText([]byte(tc.body)); got != tc.want {
				t.Errorf("pageText(%q) = %q, want %q", tc.body, got, tc.want)
			}
		})
	}
}

func TestRootElement(t *testing.T) {
	tests := []struct{ body, want string }{
		{"<fault><reason>r</reason></fault>", "fault"},
		{`<?xml version="1.0"?><action/>`, "action"},
		{"<html><body>x</body></html>", "html"},
		{"text", ""},
	}
	for _, tc := range tests {
		if got := rootElement([]byte(tc.body)); got != tc.want {
			t.Errorf("rootElement(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

// FuzzPageText checks that the text of any error page makes a fault
// document that the guard passes on as it is.
func FuzzPageText(f *testing.F) {
	f.Add([]byte("<html><head><title>Error</title></head><body>invalid_grant: expired.</body></html>"))
	f.Add([]byte("Unauthorized"))
	f.Add([]byte("<a><b></a>&bogus;"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := pageText(b)
		if len(s) > 203 {
			t.Fatalf("pageText returned %d bytes, want at most 203", len(s))
		}
		if doc := faultDocument("Unauthorized", s); rootElement(doc) != "fault" || !hasElement(doc) {
			t.Fatalf("fault document for %q is not a well-formed <fault>: %q", s, doc)
		}
		if doc := faultDocument(string(b), string(b)); !hasElement(doc) {
			t.Fatalf("fault document for raw %q is not well formed: %q", b, doc)
		}
	})
}
