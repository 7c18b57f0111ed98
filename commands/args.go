package commands

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Args returns the command line args (args[0] is the program name) with the
// flags moved ahead of the positional arguments, so that flags may be typed
// anywhere, as in "imageio upload disk.qcow2 --disk-id ID". urfave/cli v2
// stops reading flags at the first positional argument; this undoes that.
//
// Root flags (--debug) found after the command name move before it; the
// command's own flags move before its positional arguments, each with its
// value when it takes one, and so do the command's flags typed before the
// command name ("imageio -c prod upload disk.qcow2 ..."). Everything after
// "--" stays positional. Unknown flags are kept in place among the flags
// so that the parser reports them.
func Args(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	rootFlags := flagArity(app.Flags)
	if !app.HideVersion {
		rootFlags["version"], rootFlags["v"] = false, false
	}
	args = liftCommandFlags(app, rootFlags, args)
	out := []string{args[0]}
	var hoisted []string
	i := 1
	// Root flags before the command name.
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || !isFlag(a) {
			break
		}
		out = append(out, a)
		if takesValue, ok := rootFlags[flagName(a)]; ok && takesValue && !strings.Contains(a, "=") && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	if i >= len(args) || args[i] == "--" {
		return append(out, args[i:]...)
	}
	cmd := app.Command(args[i])
	if cmd == nil || cmd.SkipFlagParsing || len(cmd.Subcommands) > 0 {
		return append(out, args[i:]...)
	}
	name := args[i]
	cmdFlags := flagArity(cmd.Flags)
	var flags, positional []string
	dashdash := false
	for i++; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			dashdash = true
			positional = append(positional, args[i+1:]...)
			break
		}
		if !isFlag(a) {
			positional = append(positional, a)
			continue
		}
		n := flagName(a)
		takesValue, isCmd := cmdFlags[n]
		rootTakes, isRoot := rootFlags[n]
		dst := &flags
		if !isCmd && isRoot {
			dst = &hoisted
			takesValue = rootTakes
		}
		*dst = append(*dst, a)
		if takesValue && !strings.Contains(a, "=") && i+1 < len(args) {
			i++
			*dst = append(*dst, args[i])
		}
	}
	out = append(out, hoisted...)
	out = append(out, name)
	out = append(out, flags...)
	for _, f := range flags {
		if n := flagName(f); n == "h" || n == "help" {
			// urfave would take the first argument for a subcommand name.
			return out
		}
	}
	if dashdash {
		out = append(out, "--")
	}
	return append(out, positional...)
}

// liftCommandFlags moves the flags of a command that come before its name
// to just after it: "imageio --debug -c prod upload x" becomes
// "imageio --debug upload -c prod x". Whether a flag takes a value is only
// known once the command is, so the command name is the first argument
// that names a command and that the flags before it, read with the
// command's (or the root's) flags, end exactly at. When there is no such
// command, args are returned as they are (and the parser reports the
// flag).
func liftCommandFlags(app *cli.App, rootFlags map[string]bool, args []string) []string {
	start := 1
	for start < len(args) && isFlag(args[start]) && args[start] != "--" {
		takes, ok := rootFlags[flagName(args[start])]
		if !ok {
			break
		}
		if takes && !strings.Contains(args[start], "=") {
			start++
		}
		start++
	}
	if start >= len(args) || !isFlag(args[start]) || args[start] == "--" {
		return args // no command flag before the command name
	}
candidates:
	for j := start + 1; j < len(args); j++ {
		if args[j] == "--" {
			return args
		}
		cmd := app.Command(args[j])
		if cmd == nil || cmd.SkipFlagParsing || len(cmd.Subcommands) > 0 {
			continue
		}
		cmdFlags := flagArity(cmd.Flags)
		var root, own []string
		i := start
		for i < j && isFlag(args[i]) {
			n := flagName(args[i])
			takes, isCmd := cmdFlags[n]
			rootTakes, isRoot := rootFlags[n]
			if !isCmd && !isRoot {
				continue candidates // perhaps a flag of a later command
			}
			dst := &own
			if isRoot {
				dst, takes = &root, rootTakes
			}
			*dst = append(*dst, args[i])
			if takes && !strings.Contains(args[i], "=") {
				if i+1 >= j {
					break // the value would be the command name
				}
				i++
				*dst = append(*dst, args[i])
			}
			i++
		}
		if i != j {
			continue
		}
		out := make([]string, 0, len(args))
		out = append(out, args[:start]...)
		out = append(out, root...)
		out = append(out, args[j])
		out = append(out, own...)
		return append(out, args[j+1:]...)
	}
	return args
}

// isFlag reports whether a looks like a flag: "-x", "--name", "--name=v".
// A lone "-" (stdin by convention) is positional.
func isFlag(a string) bool {
	return len(a) > 1 && a[0] == '-'
}

// flagName returns the name of a flag argument without dashes or value.
func flagName(a string) string {
	n := strings.TrimLeft(a, "-")
	if k := strings.IndexByte(n, '='); k >= 0 {
		n = n[:k]
	}
	return n
}

// flagArity maps every name of every flag to whether it takes a value.
// The help flag, which urfave adds to every command, is included.
func flagArity(flags []cli.Flag) map[string]bool {
	m := map[string]bool{"help": false, "h": false}
	for _, f := range flags {
		takes := true
		if d, ok := f.(cli.DocGenerationFlag); ok {
			takes = d.TakesValue()
		}
		for _, n := range f.Names() {
			m[n] = takes
		}
	}
	return m
}
