package commands

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"
	"gopkg.in/ini.v1"
)

// PasswordEnv is the environment variable read for the engine password.
const PasswordEnv = "IMAGEIO_PASSWORD"

// connOptions are the engine connection flags shared by upload and download.
type connOptions struct {
	Profile      string // -c SECTION
	EngineURL    string
	Username     string
	PasswordFile string
	CAFile       string
	Insecure     bool
	InsecureSet  bool // --insecure was given (it overrides the profile's secure)
	UseProxy     bool // --use-proxy

	InactivityTimeout int // --inactivity-timeout, seconds
}

// engineConn is a resolved engine connection.
type engineConn struct {
	URL      string
	Username string
	Password string
	CAFile   string
	Insecure bool
}

// profile is one section of the profiles file.
type profile struct {
	EngineURL string
	Username  string
	Password  string
	CAFile    string
	Secure    *bool
}

// profilePath returns $XDG_CONFIG_HOME/imageio.conf, or
// ~/.config/imageio.conf when XDG_CONFIG_HOME is not set.
func profilePath(getenv func(string) string) (string, error) {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "imageio.conf"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("finding the profiles file: %w", err)
		}
	}
	return filepath.Join(home, ".config", "imageio.conf"), nil
}

// loadProfile reads section name of the INI profiles file at path. The keys
// are those of ovirt-img.conf: engine_url, username, password, cafile and
// secure (yes/no, true/false, on/off, 1/0). A missing file or section is a
// usage error.
func loadProfile(path, name string) (profile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return profile{}, usageErrorf("profile %q: %s does not exist", name, path)
	}
	if err != nil {
		return profile{}, fmt.Errorf("reading profiles: %w", err)
	}
	return parseProfile(data, path, name)
}

// parseProfile reads section name of the profiles file data (read from
// path, which is only used in messages).
func parseProfile(data []byte, path, name string) (profile, error) {
	f, err := ini.LoadSources(ini.LoadOptions{Insensitive: false, IgnoreInlineComment: true}, data)
	if err != nil {
		return profile{}, fmt.Errorf("parsing profiles file %s: %w", path, err)
	}
	if !f.HasSection(name) || name == ini.DefaultSection {
		return profile{}, usageErrorf("profile %q: no such section in %s", name, path)
	}
	sec := f.Section(name)
	p := profile{
		EngineURL: sec.Key("engine_url").String(),
		Username:  sec.Key("username").String(),
		Password:  sec.Key("password").String(),
		CAFile:    sec.Key("cafile").String(),
	}
	if sec.HasKey("secure") {
		b, err := sec.Key("secure").Bool()
		if err != nil {
			return profile{}, fmt.Errorf("profile %q in %s: secure = %q is not yes or no", name, path, sec.Key("secure").String())
		}
		p.Secure = &b
	}
	return p, nil
}

// resolver supplies what resolveConn reads from outside: the environment
// and a password prompt (nil when there is no terminal).
type resolver struct {
	Getenv func(string) string
	Prompt func(prompt string) (string, error)
	// Warn receives warnings for the user (nil drops them).
	Warn func(msg string)
}

// resolveConn merges the profile named by -c (if any) with the flags, flags
// winning, and finds the password: --password-file, then $IMAGEIO_PASSWORD,
// then the profile, then a prompt on the terminal. The password is never
// taken from a flag, so it never shows in the process list.
func resolveConn(o connOptions, r resolver) (engineConn, error) {
	var p profile
	if o.Profile != "" {
		path, err := profilePath(r.Getenv)
		if err != nil {
			return engineConn{}, err
		}
		if p, err = loadProfile(path, o.Profile); err != nil {
			return engineConn{}, err
		}
		if st, err := os.Stat(path); err == nil && p.Password != "" && st.Mode().Perm()&0o077 != 0 && r.Warn != nil {
			r.Warn(fmt.Sprintf("%s holds a password and can be read by other users; chmod 600 it", path))
		}
	}
	c := engineConn{URL: p.EngineURL, Username: p.Username, CAFile: p.CAFile}
	if p.Secure != nil {
		c.Insecure = !*p.Secure
	}
	if o.EngineURL != "" {
		c.URL = o.EngineURL
	}
	if o.Username != "" {
		c.Username = o.Username
	}
	if o.CAFile != "" {
		c.CAFile = o.CAFile
	}
	if o.InsecureSet {
		c.Insecure = o.Insecure
	}
	if c.URL == "" {
		return engineConn{}, usageErrorf("no engine: give --engine-url or -c SECTION")
	}
	if c.Username == "" {
		return engineConn{}, usageErrorf("no engine user: give --username or set username in the profile")
	}
	switch {
	case o.PasswordFile != "":
		pw, err := readPasswordFile(o.PasswordFile)
		if err != nil {
			return engineConn{}, err
		}
		c.Password = pw
	case r.Getenv(PasswordEnv) != "":
		c.Password = r.Getenv(PasswordEnv)
	case p.Password != "":
		c.Password = p.Password
	case r.Prompt != nil:
		pw, err := r.Prompt(fmt.Sprintf("Password for %s at %s: ", c.Username, c.URL))
		if err != nil {
			return engineConn{}, err
		}
		c.Password = pw
	default:
		return engineConn{}, usageErrorf("no engine password: give --password-file, set %s or password in the profile, or run on a terminal", PasswordEnv)
	}
	if c.Password == "" {
		return engineConn{}, usageErrorf("the engine password is empty")
	}
	return c, nil
}

// readPasswordFile reads a password file: its whole content without one
// trailing newline.
func readPasswordFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading password file: %w", err)
	}
	s := strings.TrimSuffix(string(data), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// ttyPrompt asks for a password on /dev/tty without echo. It returns nil
// when there is no controlling terminal.
func ttyPrompt() func(string) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil
	}
	tty.Close()
	return func(prompt string) (string, error) {
		tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
		if err != nil {
			return "", fmt.Errorf("opening the terminal: %w", err)
		}
		defer tty.Close()
		if !term.IsTerminal(int(tty.Fd())) {
			return "", errors.New("reading the password: /dev/tty is not a terminal")
		}
		io.WriteString(tty, prompt)
		pw, err := term.ReadPassword(int(tty.Fd()))
		io.WriteString(tty, "\n")
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return string(pw), nil
	}
}
