package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestManPage checks that man/imageioctl.8 names every command and flag
// of the usage text and that groff reads it without warnings.
func TestManPage(t *testing.T) {
	data, err := os.ReadFile("../../man/imageioctl.8")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), `\-`, "-")
	for _, word := range []string{"add-ticket", "show-ticket", "mod-ticket", "del-ticket", "-c", "--conf-dir", "--timeout", "--help"} {
		if !strings.Contains(usage, word) {
			t.Errorf("usage does not mention %s", word)
		}
		if !strings.Contains(text, word) {
			t.Errorf("man page does not mention %s", word)
		}
	}
	for name := range valueFlags {
		if !strings.Contains(text, "-"+name) {
			t.Errorf("man page does not mention flag %s", name)
		}
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Skip("groff is not installed")
	}
	out, err := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", "../../man/imageioctl.8").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
}
