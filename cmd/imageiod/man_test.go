package main

import (
	"flag"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestManPage checks that man/imageiod.8 names every flag and that groff
// reads it without warnings.
func TestManPage(t *testing.T) {
	data, err := os.ReadFile("../../man/imageiod.8")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), `\-`, "-")
	var opts options
	newFlagSet(&opts, io.Discard).VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		if !strings.Contains(text, dash+f.Name) {
			t.Errorf("man page does not mention %s%s", dash, f.Name)
		}
	})
	if _, err := exec.LookPath("groff"); err != nil {
		t.Skip("groff is not installed")
	}
	out, err := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", "../../man/imageiod.8").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
}
