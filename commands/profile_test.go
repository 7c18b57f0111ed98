package commands

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testProfiles = `
# profiles in ovirt-img.conf style
[prod]
engine_url = https://engine.example.com
username = admin@internal
password = pw;with#chars
cafile = /etc/pki/ca.pem
secure = yes

[lab]
engine_url = https://lab.example.com
username = lab@internal
secure = no
`

func TestResolveConn(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "imageio.conf"), []byte(testProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(extra map[string]string) func(string) string {
		return func(k string) string {
			if k == "XDG_CONFIG_HOME" {
				return dir
			}
			return extra[k]
		}
	}
	prompt := func(string) (string, error) { return "typed", nil }
	cases := []struct {
		name    string
		opts    connOptions
		env     map[string]string
		prompt  func(string) (string, error)
		want    engineConn
		wantErr bool
		usage   bool
	}{
		{
			name: "profile",
			opts: connOptions{Profile: "prod"},
			want: engineConn{URL: "https://engine.example.com", Username: "admin@internal", Password: "pw;with#chars", CAFile: "/etc/pki/ca.pem"},
		},
		{
			name: "flags override profile",
			opts: connOptions{Profile: "prod", EngineURL: "https://other", Username: "u@x", CAFile: "ca2.pem", Insecure: true, InsecureSet: true},
			want: engineConn{URL: "https://other", Username: "u@x", Password: "pw;with#chars", CAFile: "ca2.pem", Insecure: true},
		},
		{
			name:   "secure no, password prompted",
			opts:   connOptions{Profile: "lab"},
			prompt: prompt,
			want:   engineConn{URL: "https://lab.example.com", Username: "lab@internal", Password: "typed", Insecure: true},
		},
		{
			name: "insecure=false overrides secure=no",
			opts: connOptions{Profile: "lab", InsecureSet: true, PasswordFile: pwFile},
			want: engineConn{URL: "https://lab.example.com", Username: "lab@internal", Password: "from-file"},
		},
		{
			name: "password file beats env and profile",
			opts: connOptions{Profile: "prod", PasswordFile: pwFile},
			env:  map[string]string{PasswordEnv: "from-env"},
			want: engineConn{URL: "https://engine.example.com", Username: "admin@internal", Password: "from-file", CAFile: "/etc/pki/ca.pem"},
		},
		{
			name: "env beats profile",
			opts: connOptions{Profile: "prod"},
			env:  map[string]string{PasswordEnv: "from-env"},
			want: engineConn{URL: "https://engine.example.com", Username: "admin@internal", Password: "from-env", CAFile: "/etc/pki/ca.pem"},
		},
		{
			name: "flags only",
			opts: connOptions{EngineURL: "https://e", Username: "u"},
			env:  map[string]string{PasswordEnv: "p"},
			want: engineConn{URL: "https://e", Username: "u", Password: "p"},
		},
		{name: "missing section", opts: connOptions{Profile: "nope"}, wantErr: true, usage: true},
		{name: "no url", opts: connOptions{Username: "u"}, wantErr: true, usage: true},
		{name: "no user", opts: connOptions{EngineURL: "https://e"}, wantErr: true, usage: true},
		{name: "no password and no terminal", opts: connOptions{EngineURL: "https://e", Username: "u"}, wantErr: true, usage: true},
		{name: "missing password file", opts: connOptions{EngineURL: "https://e", Username: "u", PasswordFile: filepath.Join(dir, "none")}, wantErr: true},
		{
			name:    "prompt fails",
			opts:    connOptions{EngineURL: "https://e", Username: "u"},
			prompt:  func(string) (string, error) { return "", errors.New("no tty") },
			wantErr: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveConn(tc.opts, resolver{Getenv: env(tc.env), Prompt: tc.prompt})
			if tc.wantErr {
				var u *UsageError
				if err == nil {
					t.Fatalf("got %+v, want an error", got)
				}
				if errors.As(err, &u) != tc.usage {
					t.Errorf("error %v: usage error %v, want %v", err, !tc.usage, tc.usage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestProfilePath(t *testing.T) {
	got, _ := profilePath(func(k string) string { return map[string]string{"HOME": "/home/u"}[k] })
	if want := "/home/u/.config/imageio.conf"; got != want {
		t.Errorf("without XDG_CONFIG_HOME: %q, want %q", got, want)
	}
	got, _ = profilePath(func(k string) string { return map[string]string{"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}[k] })
	if want := "/x/imageio.conf"; got != want {
		t.Errorf("with XDG_CONFIG_HOME: %q, want %q", got, want)
	}
}

func TestMissingProfileFile(t *testing.T) {
	dir := t.TempDir()
	_, err := resolveConn(connOptions{Profile: "prod"}, resolver{Getenv: func(k string) string {
		if k == "XDG_CONFIG_HOME" {
			return dir
		}
		return ""
	}})
	var u *UsageError
	if !errors.As(err, &u) {
		t.Errorf("got %v, want a usage error", err)
	}
}

// FuzzParseProfile checks that any profiles file either parses or fails
// with an error, never a panic, and that a section found has the keys.
func FuzzParseProfile(f *testing.F) {
	f.Add([]byte(testProfiles), "prod")
	f.Add([]byte(testProfiles), "lab")
	f.Add([]byte("[a]\nsecure = maybe\n"), "a")
	f.Add([]byte("[a\nengine_url"), "a")
	f.Add([]byte("engine_url = x\n"), "DEFAULT")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		p, err := parseProfile(data, "imageio.conf", name)
		if err != nil {
			return
		}
		_ = p.EngineURL + p.Username + p.Password + p.CAFile
	})
}

func TestProfilePermissionWarning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "imageio.conf")
	env := func(k string) string {
		if k == "XDG_CONFIG_HOME" {
			return dir
		}
		return ""
	}
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o644, true}, {0o640, true}} {
		if err := os.WriteFile(path, []byte(testProfiles), tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, tc.mode)
		var warnings []string
		if _, err := resolveConn(connOptions{Profile: "prod"}, resolver{Getenv: env, Warn: func(m string) { warnings = append(warnings, m) }}); err != nil {
			t.Fatal(err)
		}
		if got := len(warnings) > 0; got != tc.warn {
			t.Errorf("mode %o: warnings %q, want a warning: %v", tc.mode, warnings, tc.warn)
		}
	}
}
