package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/control"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/ticket"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// startControl runs a control service on a Unix socket and writes a
// configuration directory pointing at it.
func startControl(t *testing.T) (confDir string, store *ticket.Store) {
	t.Helper()
	confDir = t.TempDir()
	sock := filepath.Join(confDir, "control.sock")
	os.MkdirAll(filepath.Join(confDir, "conf.d"), 0o755)
	conf := fmt.Sprintf("[control]\ntransport = unix\nsocket = %s\n", sock)
	if err := os.WriteFile(filepath.Join(confDir, "conf.d", "99-test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := control.Listen(config.Control{Transport: "unix", Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	store = ticket.NewStore(ticket.Config{})
	srv := control.NewServer(control.ServerConfig{Tickets: store, Parse: ticket.ParseOptions{InactivityTimeout: 60}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return confDir, store
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCommands(t *testing.T) {
	confDir, store := startControl(t)
	ticketFile := filepath.Join(t.TempDir(), "ticket.json")
	os.WriteFile(ticketFile, []byte(`{"uuid": "ctl-ticket-00001", "size": 1024, "url": "nbd:unix:/x.sock", "ops": ["read"], "timeout": 300, "transfer_id": "tr-1"}`), 0o644)

	if code, _, errs := runCmd("-c", confDir, "add-ticket", ticketFile); code != 0 {
		t.Fatalf("add-ticket = %d %s", code, errs)
	}
	if store.Len() != 1 {
		t.Fatalf("store has %d tickets", store.Len())
	}
	code, out, errs := runCmd("show-ticket", "ctl-ticket-00001", "--conf-dir", confDir)
	if code != 0 {
		t.Fatalf("show-ticket = %d %s", code, errs)
	}
	if !strings.HasPrefix(out, "{\n  \"active\": false,\n  \"canceled\": false,\n") {
		t.Errorf("show-ticket output not indented by 2:\n%s", out)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil || st["transfer_id"] != "tr-1" {
		t.Errorf("show-ticket output = %s (%v)", out, err)
	}
	// Flags after the arguments, and before.
	if code, _, errs := runCmd("mod-ticket", "ctl-ticket-00001", "--timeout", "900", "-c", confDir); code != 0 {
		t.Fatalf("mod-ticket = %d %s", code, errs)
	}
	if code, _, errs := runCmd("-c="+confDir, "--timeout=10", "mod-ticket", "ctl-ticket-00001"); code != 0 {
		t.Fatalf("mod-ticket with flags first = %d %s", code, errs)
	}
	if code, _, errs := runCmd("-c", confDir, "del-ticket", "ctl-ticket-00001"); code != 0 {
		t.Fatalf("del-ticket = %d %s", code, errs)
	}
	code, out, errs = runCmd("-c", confDir, "show-ticket", "ctl-ticket-00001")
	if code != 1 || out != "" || errs != "imageioctl: server error: 404 No such ticket 'ctl-ticket-00001'\n" {
		t.Errorf("show-ticket of deleted ticket = %d %q %q", code, out, errs)
	}
	// add-ticket from stdin.
	var o, e bytes.Buffer
	code = run(context.Background(), []string{"-c", confDir, "add-ticket", "-"},
		strings.NewReader(`{"uuid": "ctl-ticket-00002", "size": "x", "url": "nbd:x", "ops": ["read"], "timeout": 1}`), &o, &e)
	want := "imageioctl: server error: 400 Invalid ticket: Invalid value for 'size': 'x': expecting a <class 'int'> value\n"
	if code != 1 || e.String() != want {
		t.Errorf("add-ticket of invalid ticket = %d %q, want %q", code, e.String(), want)
	}
}

func TestUsageErrors(t *testing.T) {
	confDir, _ := startControl(t)
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"no command", []string{"-c", confDir}, "missing command"},
		{"unknown command", []string{"-c", confDir, "frob", "x"}, `unknown command "frob"`},
		{"missing id", []string{"-c", confDir, "show-ticket"}, "show-ticket takes exactly one argument"},
		{"mod without timeout", []string{"-c", confDir, "mod-ticket", "x"}, "mod-ticket needs --timeout N"},
		{"bad timeout", []string{"-c", confDir, "mod-ticket", "x", "--timeout", "soon"}, "expecting a number of seconds"},
		{"timeout elsewhere", []string{"-c", confDir, "del-ticket", "x", "--timeout", "1"}, "--timeout is for mod-ticket only"},
		{"unknown flag", []string{"--frob", "show-ticket", "x"}, "flag provided but not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(tc.args...)
			if code != 2 || out != "" || !strings.Contains(errs, tc.msg) || !strings.Contains(errs, "usage: imageioctl") {
				t.Errorf("got %d %q %q, want 2 and %q", code, out, errs, tc.msg)
			}
		})
	}
	if code, out, _ := runCmd("--help"); code != 0 || !strings.HasPrefix(out, "usage: imageioctl") {
		t.Errorf("--help = %d %q", code, out)
	}
	code, _, errs := runCmd("-c", t.TempDir(), "show-ticket", "x")
	if code != 1 || !strings.Contains(errs, "could not find") {
		t.Errorf("missing config = %d %q", code, errs)
	}
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		in, flags, pos []string
	}{
		{[]string{"mod-ticket", "x", "--timeout", "5"}, []string{"--timeout", "5"}, []string{"mod-ticket", "x"}},
		{[]string{"-c", "d", "show-ticket", "x"}, []string{"-c", "d"}, []string{"show-ticket", "x"}},
		{[]string{"show-ticket", "--", "-x"}, nil, []string{"show-ticket", "-x"}},
		{[]string{"add-ticket", "-"}, nil, []string{"add-ticket", "-"}},
		{[]string{"--timeout=5", "mod-ticket", "x"}, []string{"--timeout=5"}, []string{"mod-ticket", "x"}},
	}
	for _, tc := range tests {
		f, p := splitArgs(tc.in)
		if diff := cmp.Diff(tc.flags, f); diff != "" {
			t.Errorf("splitArgs(%q) flags (-want +got):\n%s", tc.in, diff)
		}
		if diff := cmp.Diff(tc.pos, p); diff != "" {
			t.Errorf("splitArgs(%q) positional (-want +got):\n%s", tc.in, diff)
		}
	}
}
