package commands

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) { testutil.Main(m) }

// runApp runs the app on args (without the program name) the way main does
// and returns stdout, stderr and the exit status Report gives.
func runApp(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := App()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(ctx, Args(app, append([]string{"imageio"}, args...)))
	code = Report(&errOut, err)
	return out.String(), errOut.String(), code
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to make it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; run with -update if this is intended):\n%s", path, diff)
	}
}

func TestHelpGolden(t *testing.T) {
	cases := []struct {
		name string
		args []string
	}{
		{"app", []string{"--help"}},
		{"info", []string{"info", "--help"}},
		{"measure", []string{"measure", "--help"}},
		{"checksum", []string{"checksum", "--help"}},
		{"upload", []string{"upload", "--help"}},
		{"download", []string{"download", "--help"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runApp(t, context.Background(), tc.args...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			golden(t, "help-"+tc.name+".golden", stdout)
		})
	}
}

func TestHelpAfterArguments(t *testing.T) {
	a, _, _ := runApp(t, context.Background(), "upload", "--help")
	b, _, code := runApp(t, context.Background(), "upload", "disk.img", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if a != b {
		t.Errorf("upload disk.img --help differs from upload --help:\n%s", cmp.Diff(a, b))
	}
}

func TestVersion(t *testing.T) {
	old := Version
	Version = "1.2.3-test"
	defer func() { Version = old }()
	for _, args := range [][]string{{"--version"}, {"info", "x", "--version"}} {
		stdout, _, code := runApp(t, context.Background(), args...)
		if code != 0 || !strings.Contains(stdout, "1.2.3-test") {
			t.Errorf("%v: exit %d, stdout %q; want the version", args, code, stdout)
		}
	}
}

func TestArgs(t *testing.T) {
	app := App()
	cases := []struct {
		name string
		in   []string
		want []string
	}{
		{"no args", []string{}, []string{}},
		{"flags first", []string{"info", "--member", "d.qcow2", "vm.ova"}, []string{"info", "--member", "d.qcow2", "vm.ova"}},
		{"flags last", []string{"info", "vm.ova", "--member", "d.qcow2"}, []string{"info", "--member", "d.qcow2", "vm.ova"}},
		{"flag with =", []string{"info", "vm.ova", "--member=d.qcow2", "--json"}, []string{"info", "--member=d.qcow2", "--json", "vm.ova"}},
		{"bool flag does not eat", []string{"upload", "--verify", "disk", "--disk-id", "ID"}, []string{"upload", "--verify", "--disk-id", "ID", "disk"}},
		{"short alias", []string{"upload", "disk", "-s", "data1", "-c", "prod"}, []string{"upload", "-s", "data1", "-c", "prod", "disk"}},
		{"root flag hoisted", []string{"info", "x", "--debug"}, []string{"--debug", "info", "x"}},
		{"root flag before", []string{"--debug", "info", "x"}, []string{"--debug", "info", "x"}},
		{"dashdash", []string{"info", "--json", "--", "-odd-name", "--member"}, []string{"info", "--json", "--", "-odd-name", "--member"}},
		{"dashdash after positional", []string{"download", "URL", "--", "-file"}, []string{"download", "--", "URL", "-file"}},
		{"lone dash positional", []string{"info", "-", "--json"}, []string{"info", "--json", "-"}},
		{"unknown flag kept", []string{"info", "x", "--bogus"}, []string{"info", "--bogus", "x"}},
		{"unknown command", []string{"frob", "x", "--json"}, []string{"frob", "x", "--json"}},
		{"help after args", []string{"upload", "x", "-h"}, []string{"upload", "-h"}},
		{"value flag at end", []string{"info", "x", "--member"}, []string{"info", "--member", "x"}},
		{"command flag before command", []string{"-c", "prod", "upload", "disk", "-s", "data1"}, []string{"upload", "-c", "prod", "-s", "data1", "disk"}},
		{"command flags around root flag", []string{"-c=prod", "--debug", "--verify", "upload", "disk"}, []string{"--debug", "upload", "-c=prod", "--verify", "disk"}},
		{"root flag first, then command flag", []string{"--debug", "-c", "prod", "download", "--disk-id", "D", "f"}, []string{"--debug", "download", "-c", "prod", "--disk-id", "D", "f"}},
		{"section named like a command", []string{"-c", "upload", "upload", "disk"}, []string{"upload", "-c", "upload", "disk"}},
		{"flag of a later command", []string{"--storage-domain", "info", "upload", "disk"}, []string{"upload", "--storage-domain", "info", "disk"}},
		{"unknown flag before command", []string{"--bogus", "upload", "disk"}, []string{"--bogus", "upload", "disk"}},
		{"command flag, no command", []string{"-c", "prod"}, []string{"-c", "prod"}},
		{"command flag then dashdash", []string{"-c", "--", "upload"}, []string{"-c", "--", "upload"}},
		{"value would be the command", []string{"-c", "upload", "x"}, []string{"-c", "upload", "x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Args(app, append([]string{"imageio"}, tc.in...))
			if diff := cmp.Diff(append([]string{"imageio"}, tc.want...), got); diff != "" {
				t.Errorf("Args(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// TestFlagsAnywhere checks that the parsed options are the same whatever
// the order of flags and arguments.
func TestFlagsAnywhere(t *testing.T) {
	orders := [][]string{
		{"upload", "--disk-id", "D", "--max-workers", "9", "disk.qcow2"},
		{"upload", "disk.qcow2", "--disk-id", "D", "--max-workers", "9"},
		{"upload", "--disk-id=D", "disk.qcow2", "--max-workers=9"},
	}
	for _, args := range orders {
		_, stderr, code := runApp(t, context.Background(), args...)
		// --max-workers 9 is out of range: the error proves it was parsed.
		if code != ExitUsage || !strings.Contains(stderr, "--max-workers 9") {
			t.Errorf("%q: exit %d, stderr %q; want the --max-workers range error", args, code, stderr)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"frob"}, `unknown command "frob"`},
		{"help on unknown topic", []string{"help", "frob"}, `No help topic for 'frob'`},
		{"unknown flag", []string{"info", "x", "--frob"}, "flag provided but not defined"},
		{"info no file", []string{"info"}, "want one FILE"},
		{"info two files", []string{"info", "a", "b"}, "want one FILE"},
		{"measure no format", []string{"measure", "x"}, "--format is required"},
		{"measure bad format", []string{"measure", "x", "-f", "vmdk"}, `--format "vmdk"`},
		{"upload no target", []string{"upload", "x"}, "exactly one of"},
		{"upload two targets", []string{"upload", "x", "--disk-id", "D", "-s", "sd"}, "exactly one of"},
		{"upload name without sd", []string{"upload", "x", "--disk-id", "D", "--name", "n"}, "need --storage-domain"},
		{"upload url with engine", []string{"upload", "x", "--transfer-url", "https://h/images/t", "-c", "p"}, "does not use the engine"},
		{"upload proxy without url", []string{"upload", "x", "--disk-id", "D", "--proxy-url", "https://p"}, "--proxy-url goes with"},
		{"upload bad buffer", []string{"upload", "x", "--disk-id", "D", "--buffer-size", "1k"}, "--buffer-size 1k"},
		{"upload bad buffer syntax", []string{"upload", "x", "--disk-id", "D", "--buffer-size", "lots"}, "--buffer-size"},
		{"upload workers 0", []string{"upload", "x", "--disk-id", "D", "--max-workers", "0"}, "--max-workers 0"},
		{"download one arg", []string{"download", "https://h/images/t"}, "want URL FILE"},
		{"download not url", []string{"download", "h/images/t", "f"}, "not an http(s) URL"},
		{"download disk id two args", []string{"download", "--disk-id", "D", "a", "b"}, "want one FILE"},
		{"download backing raw", []string{"download", "https://h/i/t", "f", "-f", "raw", "--backing-file", "b"}, "needs --format qcow2"},
		{"checksum no file", []string{"checksum"}, "want one FILE or URL"},
		{"checksum bad block size", []string{"checksum", "x", "--block-size", "4x"}, "--block-size"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runApp(t, context.Background(), tc.args...)
			if code != ExitUsage {
				t.Errorf("exit status %d, want %d (stderr %q)", code, ExitUsage, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.want)
			}
			if !strings.HasPrefix(stderr, "imageio: ") || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr %q: want one line starting with \"imageio: \"", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"plain", errors.New("boom"), 1},
		{"usage", usageErrorf("bad"), 2},
		{"wrapped usage", fmt.Errorf("x: %w", usageErrorf("bad")), 2},
		{"sigint", &SignalError{Signal: syscall.SIGINT}, 130},
		{"sigterm", &SignalError{Signal: syscall.SIGTERM, Err: context.Canceled}, 143},
		{"wrapped signal", fmt.Errorf("uploading: %w", &SignalError{Signal: syscall.SIGTERM}), 143},
		{"bare canceled", fmt.Errorf("copying: %w", context.Canceled), 130},
		{"deadline", context.DeadlineExceeded, 1},
		{"qemu-img failed", fmt.Errorf("reading image info: %w", &exec.ExitError{ProcessState: &os.ProcessState{}}), 1},
	}
	cases = append(cases, verifyExitCases()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExitCode(tc.err); got != tc.want {
				t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestReport(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"one line", errors.New("reading \"x\": no such file"), "imageio: reading \"x\": no such file\n"},
		{"multi line", errors.New("qemu-img failed:\n  bad thing\n\n  worse\n"), "imageio: qemu-img failed:; bad thing; worse\n"},
		{"signal", &SignalError{Signal: syscall.SIGINT, Err: fmt.Errorf("uploading: %w", context.Canceled)}, "imageio: interrupted by SIGINT\n"},
		{"signal with more", &SignalError{Signal: syscall.SIGTERM, Err: errors.New("cancelling transfer: 500")}, "imageio: interrupted by SIGTERM: cancelling transfer: 500\n"},
		{"usage", &UsageError{Err: errors.New("bad flag"), Command: "info"}, "imageio: bad flag (see 'imageio info --help')\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			Report(&b, tc.err)
			if got := b.String(); got != tc.want {
				t.Errorf("Report(%v) wrote %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func TestSignalContext(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(signalName(sig), func(t *testing.T) {
			ctx, stop := SignalContext(context.Background())
			defer stop()
			if err := syscall.Kill(os.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			<-ctx.Done()
			err := withSignal(ctx, fmt.Errorf("copying: %w", ctx.Err()))
			if got, want := ExitCode(err), 128+int(sig); got != want {
				t.Errorf("exit status %d, want %d (err %v)", got, want, err)
			}
		})
	}
}

// FuzzArgs checks that Args only moves arguments: the program name stays
// first, and every argument is kept (unless help drops the positionals).
func FuzzArgs(f *testing.F) {
	app := App()
	for _, s := range []string{
		"upload disk.qcow2 --disk-id ID --verify",
		"info -- -x --json",
		"--debug download URL FILE -f raw",
		"upload x -h",
		"info x --member",
		"frob -x y",
		"-c prod upload disk -s data1",
		"--debug -c upload upload x --verify",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		in := append([]string{"imageio"}, strings.Fields(line)...)
		out := Args(app, in)
		if len(out) == 0 || out[0] != "imageio" {
			t.Fatalf("Args(%q) = %q: program name lost", in, out)
		}
		count := map[string]int{}
		for _, a := range out {
			count[a]++
		}
		help := false
		for _, a := range in {
			if a == "-h" || a == "--help" {
				help = true
			}
		}
		if help {
			if len(out) > len(in) {
				t.Fatalf("Args(%q) = %q: grew", in, out)
			}
			return
		}
		for _, a := range in {
			count[a]--
		}
		for a, n := range count {
			if n != 0 && !(a == "--" && n == 1) {
				t.Fatalf("Args(%q) = %q: %q count changed by %d", in, out, a, n)
			}
		}
	})
}
