package commands

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
)

// Go's flag package and urfave/cli word their parse errors for Go
// programmers ("invalid value "5" for flag -timeout: parse error", single
// dash, no hint). usageMessage rewords them for the person at the prompt:
// the flag as it is typed, what kind of value it takes, and a suggestion
// for a misspelt name. usagePatterns matches those messages; it is
// compiled on the first usage error, not at every start.
var usagePatterns = sync.OnceValue(func() *flagMessages {
	return &flagMessages{
		undefined: regexp.MustCompile(`^flag provided but not defined: -(.+)$`),
		badValue:  regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): (.*)$`),
		badBool:   regexp.MustCompile(`^invalid boolean value "(.*)" for -([^:]+): `),
		noValue:   regexp.MustCompile(`^flag needs an argument: -(.+)$`),
		twoForms:  regexp.MustCompile(`^Cannot use two forms of the same flag: (\S+) (\S+)$`),
	}
})

// flagMessages are the patterns of the flag package's parse errors.
type flagMessages struct {
	undefined, badValue, badBool, noValue, twoForms *regexp.Regexp
}

// usageMessage is err, a flag parse error, reworded for flags.
func usageMessage(flags []cli.Flag, err error) string {
	msg := err.Error()
	re := usagePatterns()
	if m := re.undefined.FindStringSubmatch(msg); m != nil {
		s := "unknown flag " + dashed(m[1])
		if sug := suggest(m[1], flagNames(flags)); sug != "" {
			s += ": did you mean " + dashed(sug) + "?"
		}
		return s
	}
	if m := re.badValue.FindStringSubmatch(msg); m != nil {
		value, name, reason := m[1], m[2], m[3]
		switch lookupFlag(flags, name).(type) {
		case *cli.DurationFlag:
			reason = "use a duration such as " + durationExample(value)
		case *cli.IntFlag, *cli.UintFlag, *cli.Int64Flag, *cli.Uint64Flag:
			reason = "use a whole number"
		}
		return fmt.Sprintf("invalid value %q for %s: %s", value, dashed(name), reason)
	}
	if m := re.badBool.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("invalid value %q for %s: it takes no value (%s, or %s=false)", m[1], dashed(m[2]), dashed(m[2]), dashed(m[2]))
	}
	if m := re.noValue.FindStringSubmatch(msg); m != nil {
		return dashed(m[1]) + " needs a value"
	}
	if m := re.twoForms.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s and %s are the same flag: give it once", dashed(m[1]), dashed(m[2]))
	}
	return msg
}

// durationExample turns a value such as "5" into the duration meant, "5s".
func durationExample(value string) string {
	if n, err := strconv.ParseFloat(value, 64); err == nil && n > 0 {
		return strconv.FormatFloat(n, 'f', -1, 64) + "s"
	}
	return "5s or 2m"
}

// dashed is a flag name as typed: -o, --output.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// flagNames are the names of the visible flags, and help.
func flagNames(flags []cli.Flag) []string {
	names := []string{"help"}
	for _, f := range flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		names = append(names, f.Names()...)
	}
	return names
}

// commandNames are the names and aliases of the visible commands, and help.
func commandNames(cmds []*cli.Command) []string {
	names := []string{"help"}
	for _, c := range cmds {
		if !c.Hidden {
			names = append(names, c.Names()...)
		}
	}
	return names
}

// suggest returns the candidate that typed most likely misspells, or ""
// when none is close: at most one edit (a letter added, dropped, changed,
// or two swapped) for short words, two for longer ones; or typed is the
// start of the candidate (--brid for --bridge). Unlike urfave/cli's
// Suggest, which always names the nearest flag however far ("--bogus":
// did you mean --all?) and prints it on stdout, it stays quiet when
// nothing is close.
func suggest(typed string, candidates []string) string {
	if len(typed) < 3 {
		return "" // -v is one edit from every one-letter flag
	}
	limit := 1
	if len(typed) > 4 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, c := range candidates {
		d := editDistance(typed, c)
		if strings.HasPrefix(c, typed) {
			d = min(d, 1)
		}
		if d < bestD && d > 0 {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and swaps of adjacent letters.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// parseWait reads a --wait value: a duration (5s, 1m), or whole seconds
// as iptables -w takes them. It returns whole seconds, rounded up, since
// iptables waits in seconds.
func parseWait(flag, value string) (int, error) {
	d, err := time.ParseDuration(value)
	if err != nil {
		n, nerr := strconv.Atoi(value)
		if nerr != nil {
			return 0, fmt.Errorf("invalid value %q for %s: use a duration such as 5s", value, flag)
		}
		d = time.Duration(n) * time.Second
	}
	if d < time.Second {
		return 0, fmt.Errorf("%s %s: give at least 1 second", flag, value)
	}
	return int((d + time.Second - 1) / time.Second), nil
}
