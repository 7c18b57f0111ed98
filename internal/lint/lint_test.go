package lint

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/imageio/imageio"

type pkg struct {
	ImportPath string
	Doc        string
	Name       string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func TestEveryPackageHasDoc(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}

// forbidden maps a package prefix (relative to the module) to the prefixes
// it must not import.
var forbidden = map[string][]string{
	"backend":   {"transfer", "commands", "daemon", "engine", "enginesim", "github.com/cheggaaa/pb", "github.com/urfave/cli"},
	"nbd":       {"backend", "transfer", "commands", "daemon"},
	"transfer":  {"commands", "daemon", "github.com/cheggaaa/pb", "github.com/urfave/cli"},
	"engine":    {"commands", "daemon", "github.com/cheggaaa/pb", "github.com/urfave/cli"},
	"ticket":    {"net/http", "daemon", "commands"},
	"daemon":    {"commands", "transfer", "engine", "github.com/cheggaaa/pb", "github.com/urfave/cli"},
	"control":   {"commands", "transfer", "github.com/cheggaaa/pb", "github.com/urfave/cli"},
	"enginesim": {"commands", "transfer", "github.com/cheggaaa/pb", "github.com/urfave/cli"},
	"qemuimg":   {"commands", "transfer", "daemon"},
	"ova":       {"commands", "transfer", "daemon"},
	"nbdlocal":  {"commands", "transfer", "daemon"},
}

func rel(path string) string {
	if path == module {
		return ""
	}
	return strings.TrimPrefix(path, module+"/")
}

func hasPrefix(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func TestLayering(t *testing.T) {
	for _, p := range listPackages(t) {
		r := rel(p.ImportPath)
		for owner, bans := range forbidden {
			if !hasPrefix(r, owner) {
				continue
			}
			for _, imp := range p.Imports {
				ir := imp
				if strings.HasPrefix(imp, module+"/") {
					ir = rel(imp)
				}
				for _, ban := range bans {
					if hasPrefix(ir, ban) {
						t.Errorf("%s imports %s, which %s/... must not import", p.ImportPath, imp, owner)
					}
				}
			}
		}
	}
}
