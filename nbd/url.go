package nbd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultPort is the IANA port of NBD, used when a URL names none.
const DefaultPort = "10809"

// ErrInvalidURL is wrapped by ParseURL errors.
var ErrInvalidURL = errors.New("invalid NBD URL")

// Address says where an NBD export is.
type Address struct {
	Network string // "unix" or "tcp"
	Addr    string // socket path, or "host:port" (IPv6 hosts in brackets)
	Export  string // export name; "" is the default export
}

// ParseURL parses an NBD URL in one of these forms:
//
//	nbd:unix:/path[:exportname=NAME]
//	nbd:HOST:PORT[:exportname=NAME]     (IPv6 HOST in brackets)
//	nbd://HOST[:PORT][/NAME]
//	nbd+unix:///[NAME]?socket=/path
func ParseURL(s string) (Address, error) {
	a, err := parseURL(s)
	if err != nil {
		return Address{}, fmt.Errorf("parsing %q: %w: %s", s, ErrInvalidURL, err.Error())
	}
	return a, nil
}

func parseURL(s string) (Address, error) {
	switch {
	case strings.HasPrefix(s, "nbd://"), strings.HasPrefix(s, "nbd+unix://"):
		return parseStandardURL(s)
	case strings.HasPrefix(s, "nbd:unix:"):
		path, export := splitExport(strings.TrimPrefix(s, "nbd:unix:"))
		if !strings.HasPrefix(path, "/") {
			return Address{}, errors.New("socket path must be absolute")
		}
		if strings.ContainsRune(path, 0) {
			return Address{}, errors.New("socket path contains NUL")
		}
		return Address{Network: "unix", Addr: path, Export: export}, nil
	case strings.HasPrefix(s, "nbd:"):
		hostport, export := splitExport(strings.TrimPrefix(s, "nbd:"))
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return Address{}, errors.New("want nbd:HOST:PORT")
		}
		if err := checkHostPort(host, port); err != nil {
			return Address{}, err
		}
		return Address{Network: "tcp", Addr: net.JoinHostPort(host, port), Export: export}, nil
	}
	return Address{}, errors.New("unknown scheme")
}

// splitExport splits "X:exportname=NAME" into X and NAME.
func splitExport(s string) (string, string) {
	const key = ":exportname="
	if i := strings.Index(s, key); i >= 0 {
		return s[:i], s[i+len(key):]
	}
	return s, ""
}

func checkHostPort(host, port string) error {
	if host == "" {
		return errors.New("empty host")
	}
	if strings.ContainsAny(host, "/?#@[] \t\r\n\x00") {
		return fmt.Errorf("bad host %q", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

func parseStandardURL(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Address{}, err
	}
	if u.User != nil {
		return Address{}, errors.New("user info is not supported")
	}
	if u.Fragment != "" {
		return Address{}, errors.New("fragment is not supported")
	}
	export := strings.TrimPrefix(u.Path, "/")
	q := u.Query()
	switch u.Scheme {
	case "nbd":
		if len(q) > 0 {
			return Address{}, errors.New("query parameters are not supported")
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = DefaultPort
		}
		if err := checkHostPort(host, port); err != nil {
			return Address{}, err
		}
		return Address{Network: "tcp", Addr: net.JoinHostPort(host, port), Export: export}, nil
	case "nbd+unix":
		if u.Host != "" {
			return Address{}, errors.New("nbd+unix URL must not name a host")
		}
		for k := range q {
			if k != "socket" {
				return Address{}, fmt.Errorf("query parameter %q is not supported", k)
			}
		}
		sock := q["socket"]
		if len(sock) != 1 || !strings.HasPrefix(sock[0], "/") {
			return Address{}, errors.New("want one absolute socket=PATH")
		}
		if strings.ContainsRune(sock[0], 0) {
			return Address{}, errors.New("socket path contains NUL")
		}
		return Address{Network: "unix", Addr: sock[0], Export: export}, nil
	}
	return Address{}, fmt.Errorf("unknown scheme %q", u.Scheme)
}

// URL returns the address in the form the reference daemon accepts:
// nbd:unix:/path[:exportname=NAME] or nbd:HOST:PORT[:exportname=NAME].
func (a Address) URL() string {
	var b strings.Builder
	b.WriteString("nbd:")
	if a.Network == "unix" {
		b.WriteString("unix:")
	}
	b.WriteString(a.Addr)
	if a.Export != "" {
		b.WriteString(":exportname=")
		b.WriteString(a.Export)
	}
	return b.String()
}

// String returns a.URL().
func (a Address) String() string { return a.URL() }
