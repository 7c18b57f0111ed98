package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// ErrNotFound is returned by Load when CONF_DIR has no conf.d/*.conf file.
var ErrNotFound = errors.New("no configuration files")

// Config is the merged daemon configuration. Field tags name the INI
// section and key; values are typed like the defaults.
type Config struct {
	Daemon      Daemon      `ini:"daemon" json:"daemon"`
	TLS         TLS         `ini:"tls" json:"tls"`
	BackendFile Backend     `ini:"backend_file" json:"backend_file"`
	BackendNBD  Backend     `ini:"backend_nbd" json:"backend_nbd"`
	BackendHTTP BackendHTTP `ini:"backend_http" json:"backend_http"`
	Remote      Remote      `ini:"remote" json:"remote"`
	Local       Local       `ini:"local" json:"local"`
	Control     Control     `ini:"control" json:"control"`
	Profile     Profile     `ini:"profile" json:"profile"`
}

// Daemon is the [daemon] section.
type Daemon struct {
	PollInterval float64 `ini:"poll_interval" json:"poll_interval"`
	// MaxConnections is the number of connections one ticket may use; it
	// caps max_readers and max_writers.
	MaxConnections int `ini:"max_connections" json:"max_connections"`
	// InactivityTimeout is the default inactivity_timeout of tickets.
	InactivityTimeout int    `ini:"inactivity_timeout" json:"inactivity_timeout"`
	RunDir            string `ini:"run_dir" json:"run_dir"`
	DropPrivileges    bool   `ini:"drop_privileges" json:"drop_privileges"`
	UserName          string `ini:"user_name" json:"user_name"`
	GroupName         string `ini:"group_name" json:"group_name"`
	SystemdEnable     bool   `ini:"systemd_enable" json:"systemd_enable"`
}

// TLS is the [tls] section of the remote service.
type TLS struct {
	Enable      bool   `ini:"enable" json:"enable"`
	KeyFile     string `ini:"key_file" json:"key_file"`
	CertFile    string `ini:"cert_file" json:"cert_file"`
	CAFile      string `ini:"ca_file" json:"ca_file"`
	EnableTLS11 bool   `ini:"enable_tls1_1" json:"enable_tls1_1"`
}

// Backend is the [backend_file] and [backend_nbd] section.
type Backend struct {
	BufferSize int `ini:"buffer_size" json:"buffer_size"`
}

// BackendHTTP is the [backend_http] section of the proxy backend.
type BackendHTTP struct {
	BufferSize int `ini:"buffer_size" json:"buffer_size"`
	// CAFile verifies the upstream daemon; "" falls back to [tls] ca_file.
	CAFile string `ini:"ca_file" json:"ca_file"`
}

// Remote is the [remote] section: the HTTPS images service.
type Remote struct {
	Host string `ini:"host" json:"host"`
	Port int    `ini:"port" json:"port"`
}

// Local is the [local] section: the images service on a Unix socket.
type Local struct {
	Enable bool `ini:"enable" json:"enable"`
	// Socket is a path, an abstract name starting with "\x00", or "" for a
	// random abstract name.
	Socket string `ini:"socket" json:"socket"`
}

// Control is the [control] section: the tickets API.
type Control struct {
	Enable        bool   `ini:"enable" json:"enable"`
	Transport     string `ini:"transport" json:"transport"`
	Socket        string `ini:"socket" json:"socket"`
	Port          int    `ini:"port" json:"port"`
	PreferIPv4    bool   `ini:"prefer_ipv4" json:"prefer_ipv4"`
	RemoveTimeout int    `ini:"remove_timeout" json:"remove_timeout"`
}

// Profile is the [profile] section (kept for compatibility; imageiod has no
// profiler).
type Profile struct {
	Filename string `ini:"filename" json:"filename"`
}

// Default returns the configuration used when no file sets a key.
func Default() Config {
	return Config{
		Daemon: Daemon{
			PollInterval:      1.0,
			MaxConnections:    8,
			InactivityTimeout: 60,
			RunDir:            "/run/ovirt-imageio",
			DropPrivileges:    true,
			UserName:          "ovirtimg",
			GroupName:         "ovirtimg",
			SystemdEnable:     true,
		},
		TLS:         TLS{Enable: true},
		BackendFile: Backend{BufferSize: 8 << 20},
		BackendNBD:  Backend{BufferSize: 16 << 20},
		BackendHTTP: BackendHTTP{BufferSize: 8 << 20},
		Remote:      Remote{Host: "::", Port: 54322},
		Local:       Local{Enable: true, Socket: "\x00/org/ovirt/imageio"},
		Control: Control{
			Enable:        true,
			Transport:     "unix",
			Socket:        "/run/ovirt-imageio/sock",
			Port:          -1,
			PreferIPv4:    true,
			RemoveTimeout: 60,
		},
		Profile: Profile{Filename: "/run/ovirt-imageio/profile"},
	}
}

// Load reads confDir/conf.d/*.conf over the defaults.
func Load(confDir string) (Config, error) {
	pattern := filepath.Join(confDir, "conf.d", "*.conf")
	files, err := filepath.Glob(pattern)
	if err != nil {
		return Config{}, fmt.Errorf("listing %s: %w", pattern, err)
	}
	if len(files) == 0 {
		return Config{}, fmt.Errorf("could not find %s: %w", pattern, ErrNotFound)
	}
	return LoadFiles(files...)
}

// LoadFiles reads the named files over the defaults, in order of their base
// names (a later file wins).
func LoadFiles(files ...string) (Config, error) {
	files = append([]string(nil), files...)
	sort.SliceStable(files, func(i, j int) bool {
		return filepath.Base(files[i]) < filepath.Base(files[j])
	})
	cfg := Default()
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return Config{}, fmt.Errorf("reading config: %w", err)
		}
		sections, err := parseINI(string(data))
		if err != nil {
			return Config{}, fmt.Errorf("parsing %s: %w", name, err)
		}
		if err := cfg.apply(sections); err != nil {
			return Config{}, fmt.Errorf("loading %s: %w", name, err)
		}
	}
	return cfg, nil
}

// JSON returns the configuration as a JSON object of sections, for
// --show-config.
func (c Config) JSON() ([]byte, error) {
	return json.MarshalIndent(c, "", "    ")
}

// apply sets the known keys of sections on c.
func (c *Config) apply(sections []section) error {
	cv := reflect.ValueOf(c).Elem()
	ct := cv.Type()
	for _, s := range sections {
		for i := 0; i < ct.NumField(); i++ {
			if ct.Field(i).Tag.Get("ini") != s.name {
				continue
			}
			sv := cv.Field(i)
			st := sv.Type()
			for _, kv := range s.items {
				for j := 0; j < st.NumField(); j++ {
					if st.Field(j).Tag.Get("ini") != kv.key {
						continue
					}
					if err := setValue(sv.Field(j), kv.value); err != nil {
						return fmt.Errorf("invalid value for [%s] %s: %w", s.name, kv.key, err)
					}
				}
			}
		}
	}
	return nil
}

func setValue(v reflect.Value, s string) error {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("expecting an integer: %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("expecting a number: %q", s)
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := parseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// parseBool accepts the values of Python's RawConfigParser.getboolean.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("expecting a boolean: %q", s)
}
