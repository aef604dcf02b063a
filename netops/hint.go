package netops

import "strings"

// HairpinctlCmd is a hairpinctl command line, for a fix or a hint, that
// acts on netns, the --netns value ("" for the caller's own namespace).
func HairpinctlCmd(netns, args string) string {
	if netns == "" {
		return "hairpinctl " + args
	}
	return "hairpinctl " + args + " --netns " + ShellQuote(netns)
}

// ShellQuote quotes s for a POSIX shell when it needs it.
func ShellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
