package commands

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

var errBadSize = errors.New("want a number of bytes with an optional k, m or g suffix (powers of 1024), like 64k or 4m")

// parseSize parses a size such as "4m", "64K", "1g", "4MiB" or "65536".
// Suffixes are binary (k = 1024) and case-insensitive; "b", "ib" after the
// letter are allowed.
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, suf := range []string{"ib", "b"} {
		if strings.HasSuffix(t, suf) && len(t) > len(suf) {
			c := t[len(t)-len(suf)-1]
			if c == 'k' || c == 'm' || c == 'g' || suf == "b" {
				t = strings.TrimSuffix(t, suf)
				break
			}
		}
	}
	if t != "" {
		switch t[len(t)-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	if t == "" || t[0] == '+' || t[0] == '-' {
		return 0, fmt.Errorf("parsing size %q: %w", s, errBadSize)
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing size %q: %w", s, errBadSize)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("parsing size %q: too large", s)
	}
	return n * mult, nil
}

// formatSize formats n bytes for people: "4 MiB", "1.5 GiB", "512 bytes".
func formatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTPE"[exp]) + "iB"
}
