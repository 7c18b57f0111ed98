package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// writeConf writes files (name -> content) into dir/conf.d.
func writeConf(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, "conf.d", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  func(*Config)
	}{
		{
			name:  "empty file keeps defaults",
			files: map[string]string{"50-empty.conf": "# nothing\n"},
			want:  func(*Config) {},
		},
		{
			name: "types and delimiters",
			files: map[string]string{"50-x.conf": `
[daemon]
max_connections = 4
poll_interval: 0.5
drop_privileges = off
; comment
[tls]
enable = no
key_file = /etc/pki/key.pem
[remote]
Host = 127.0.0.1
port = 0
[control]
transport = tcp
port = 54324
prefer_ipv4 = false
`},
			want: func(c *Config) {
				c.Daemon.MaxConnections = 4
				c.Daemon.PollInterval = 0.5
				c.Daemon.DropPrivileges = false
				c.TLS.Enable = false
				c.TLS.KeyFile = "/etc/pki/key.pem"
				c.Remote.Host = "127.0.0.1"
				c.Remote.Port = 0
				c.Control.Transport = "tcp"
				c.Control.Port = 54324
				c.Control.PreferIPv4 = false
			},
		},
		{
			name: "later file wins by base name",
			files: map[string]string{
				"99-user.conf":   "[remote]\nport = 3\n",
				"50-vdsm.conf":   "[remote]\nport = 1\n[local]\nenable = false\n",
				"75-vendor.conf": "[remote]\nport = 2\n[local]\nenable = true\n",
			},
			want: func(c *Config) { c.Remote.Port = 3 },
		},
		{
			name: "unknown sections and keys ignored, no interpolation",
			files: map[string]string{"50-x.conf": `
[handler_logfile]
args = ('/var/log/ovirt-imageio/daemon.log',)
[backend_http]
ca_file = %(here)s/ca.pem
unknown = 1
`},
			want: func(c *Config) { c.BackendHTTP.CAFile = "%(here)s/ca.pem" },
		},
		{
			name:  "bool spellings",
			files: map[string]string{"50-x.conf": "[local]\nenable = 0\n[control]\nenable = Off\n[tls]\nenable_tls1_1 = YES\n"},
			want: func(c *Config) {
				c.Local.Enable = false
				c.Control.Enable = false
				c.TLS.EnableTLS11 = true
			},
		},
		{
			name:  "empty value",
			files: map[string]string{"50-x.conf": "[local]\nsocket =\n"},
			want:  func(c *Config) { c.Local.Socket = "" },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Load(writeConf(t, tc.files))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tc.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"bad int", map[string]string{"a.conf": "[remote]\nport = x\n"}},
		{"bad bool", map[string]string{"a.conf": "[tls]\nenable = maybe\n"}},
		{"bad float", map[string]string{"a.conf": "[daemon]\npoll_interval = fast\n"}},
		{"key outside section", map[string]string{"a.conf": "port = 1\n"}},
		{"no delimiter", map[string]string{"a.conf": "[remote]\nport\n"}},
		{"bad header", map[string]string{"a.conf": "[remote\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Load(writeConf(t, tc.files)); err == nil {
				t.Fatal("Load succeeded, want error")
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load = %v, want ErrNotFound", err)
	}
	want := "could not find " + filepath.Join(dir, "conf.d", "*.conf") + ": no configuration files"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestDefaultJSONGolden(t *testing.T) {
	got, err := Default().JSON()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "default.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)+"\n"); diff != "" {
		t.Errorf("JSON mismatch (-want +got):\n%s", diff)
	}
}

func TestParseINIContinuation(t *testing.T) {
	s, err := parseINI("[a]\nk = one\n  two\n[b]\nx=1\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []section{{name: "a", items: []item{{"k", "one\ntwo"}}}, {name: "b", items: []item{{"x", "1"}}}}
	if diff := cmp.Diff(want, s, cmp.AllowUnexported(section{}, item{})); diff != "" {
		t.Errorf("sections (-want +got):\n%s", diff)
	}
}
