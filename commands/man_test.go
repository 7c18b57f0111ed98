package commands

import (
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// manText returns man/imageio.1 with roff dash escapes undone.
func manText(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../man/imageio.1")
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(data), `\-`, "-")
}

// TestManCoversApp checks that the man page mentions every command and
// every flag (each name and alias) of App().
func TestManCoversApp(t *testing.T) {
	man := manText(t)
	app := App()
	app.Setup()
	mentions := func(flag string) bool {
		re := regexp.MustCompile(regexp.QuoteMeta(flag) + `([^a-z0-9-]|$)`)
		return re.MatchString(man)
	}
	dash := func(n string) string {
		if len(n) == 1 {
			return "-" + n
		}
		return "--" + n
	}
	checkFlags := func(where string, flags []cli.Flag) {
		for _, f := range flags {
			for _, n := range f.Names() {
				if !mentions(dash(n)) {
					t.Errorf("man page does not mention %s of %s", dash(n), where)
				}
			}
		}
	}
	checkFlags("imageio", app.Flags)
	for _, c := range app.Commands {
		if c.Hidden || c.Name == "help" {
			continue
		}
		if !strings.Contains(man, ".SS \""+c.Name) {
			t.Errorf("man page has no section for command %s", c.Name)
		}
		checkFlags(c.Name, c.Flags)
	}
	for _, s := range []string{"EXIT STATUS", "PROFILES", "JSON OUTPUT", "IMAGEIO_PASSWORD"} {
		if !strings.Contains(man, s) {
			t.Errorf("man page lacks %s", s)
		}
	}
}

// TestManRenders checks the page with groff's warnings, when installed.
func TestManRenders(t *testing.T) {
	if _, err := exec.LookPath("groff"); err != nil {
		t.Skip("groff is not installed")
	}
	out, err := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", "../man/imageio.1").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
}

// TestJSONDocumented checks that every --json field of the progress and
// result objects, and every phase, is described in the JSON OUTPUT section
// of the man page and in the field tables of docs/cli.md.
func TestJSONDocumented(t *testing.T) {
	man := manText(t)
	if i := strings.Index(man, ".SH JSON OUTPUT"); i >= 0 {
		man = man[i:]
		if j := strings.Index(man[1:], ".SH "); j >= 0 {
			man = man[:j+1]
		}
	} else {
		t.Fatal("man page has no JSON OUTPUT section")
	}
	data, err := os.ReadFile("../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	var fields []string
	for _, v := range []any{progressStep{}, uploadResult{}, checksumResult{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			fields = append(fields, name)
		}
	}
	for _, f := range fields {
		if !regexp.MustCompile(`(?m)^\.BR? .*\b`+f+`\b`).MatchString(man) && !strings.Contains(man, `\(dq`+f+`\(dq`) {
			t.Errorf("man page JSON OUTPUT does not describe field %q", f)
		}
		if !strings.Contains(doc, "| `"+f+"` |") && !strings.Contains(doc, `"`+f+`"`) {
			t.Errorf("docs/cli.md does not describe field %q", f)
		}
	}
	for _, p := range []string{phaseInspecting, phaseCreatingDisk, phaseCreatingTransfer, phaseUploading, phaseDownloading,
		phaseComputing, phaseFlushing, phaseVerifying, phaseFinalizing, phaseCancelling, phaseDone} {
		if !regexp.MustCompile(`(?m)^\.BR? "?` + regexp.QuoteMeta(p) + `"?( ,| \.)?$`).MatchString(man) {
			t.Errorf("man page JSON OUTPUT does not list phase %q", p)
		}
		if !strings.Contains(doc, "`"+p+"`") {
			t.Errorf("docs/cli.md does not list phase %q", p)
		}
	}
}
