package config

import (
	"fmt"
	"strings"
)

// section is one [name] block of an INI file, keys in file order.
type section struct {
	name  string
	items []item
}

type item struct {
	key, value string
}

// parseINI parses text with the rules of Python's RawConfigParser: sections
// in brackets; "key = value" or "key: value" (split at the first delimiter);
// keys lowercased; whole-line comments starting with '#' or ';'; indented
// lines continue the previous value; no interpolation and no inline
// comments. A section may appear more than once; a later key wins.
func parseINI(text string) ([]section, error) {
	var sections []section
	cur := -1
	lastItem := -1
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';' {
			// RawConfigParser keeps blank lines inside multi-line values
			// only when followed by more indented text; imageio configs
			// never rely on that, so a blank line ends the value.
			if trimmed == "" {
				lastItem = -1
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur >= 0 && lastItem >= 0 {
				it := &sections[cur].items[lastItem]
				it.value += "\n" + trimmed
				continue
			}
			// RawConfigParser treats an indented line with no value to
			// continue as a normal line.
		}
		if trimmed[0] == '[' {
			end := strings.IndexByte(trimmed, ']')
			if end < 0 {
				return nil, fmt.Errorf("line %d: invalid section header %q", n+1, trimmed)
			}
			sections = append(sections, section{name: trimmed[1:end]})
			cur = len(sections) - 1
			lastItem = -1
			continue
		}
		if cur < 0 {
			return nil, fmt.Errorf("line %d: key outside of a section: %q", n+1, trimmed)
		}
		i := strings.IndexAny(trimmed, "=:")
		if i <= 0 {
			return nil, fmt.Errorf("line %d: expecting 'key = value': %q", n+1, trimmed)
		}
		key := strings.ToLower(strings.TrimSpace(trimmed[:i]))
		value := strings.TrimSpace(trimmed[i+1:])
		s := &sections[cur]
		s.items = append(s.items, item{key: key, value: value})
		lastItem = len(s.items) - 1
	}
	return sections, nil
}
