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
