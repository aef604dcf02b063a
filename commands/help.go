package commands

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// helpWidth is the width --help fits: a terminal over SSH.
const helpWidth = 80

// urfave/cli's help sets each flag as "--bridge BR, -b BR [ --bridge BR,
// -b BR ]  usage (default: false)" on one line however long, and the
// commands' usages unwrapped: lines of up to 163 columns. hairpinctl's
// templates set names and usages in two columns, the usage wrapped to
// 80, a flag's names once, and a default only when it says something.

var appHelpTemplate = `NAME:
{{helpName .Name .Usage}}

USAGE:
   {{.Name}} [global options] command [command options] [arguments...]

DESCRIPTION:
{{indent 3 .Description}}

COMMANDS:
{{commandsHelp .VisibleCommands}}

GLOBAL OPTIONS:
{{flagsHelp .VisibleFlags}}

` + exitCodeHelp + `
`

var commandHelpTemplate = `NAME:
{{helpName .HelpName .Usage}}

USAGE:
   {{.HelpName}}{{if .VisibleFlags}} [options]{{end}}{{if .ArgsUsage}} {{.ArgsUsage}}{{end}}{{if .Description}}

DESCRIPTION:
{{indent 3 .Description}}{{end}}{{if .VisibleFlags}}

OPTIONS:
{{flagsHelp .VisibleFlags}}{{end}}
`

// printHelp is cli.HelpPrinter with hairpinctl's template functions.
func printHelp(w io.Writer, templ string, data any) {
	cli.HelpPrinterCustom(w, templ, data, map[string]any{
		"helpName":     helpName,
		"commandsHelp": commandsHelp,
		"flagsHelp":    flagsHelp,
		"indent":       indentLines,
	})
}

func helpName(name, usage string) string {
	if usage == "" {
		return "   " + name
	}
	return columns([][2]string{{name, "- " + usage}}, 0)
}

func indentLines(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

func commandsHelp(cmds []*cli.Command) string {
	var rows [][2]string
	for _, c := range cmds {
		rows = append(rows, [2]string{strings.Join(c.Names(), ", "), c.Usage})
	}
	return columns(rows, 16)
}

func flagsHelp(flags []cli.Flag) string {
	var rows [][2]string
	for _, f := range flags {
		rows = append(rows, [2]string{flagNamesHelp(f), flagUsageHelp(f)})
	}
	return columns(rows, 24)
}

// flagNamesHelp is "--bridge BR, -b BR": each name with the placeholder
// the usage names in backquotes, once.
func flagNamesHelp(f cli.Flag) string {
	arg := ""
	if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() {
		arg, _ = unquoteUsage(df.GetUsage())
		if arg == "" {
			arg = "VALUE"
		}
		arg = " " + arg
	}
	var names []string
	for _, n := range f.Names() {
		names = append(names, dashed(n)+arg)
	}
	return strings.Join(names, ", ")
}

// flagUsageHelp is the usage, and the default when there is one worth
// saying: not for a switch (false), an empty value or a zero duration.
func flagUsageHelp(f cli.Flag) string {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return ""
	}
	_, usage := unquoteUsage(df.GetUsage())
	if !df.TakesValue() {
		return usage
	}
	def := df.GetDefaultText()
	switch def {
	case "", `""`, "0", "0s", "[]":
		return usage
	}
	return fmt.Sprintf("%s (default: %s)", usage, strings.Trim(def, `"`))
}

// columns sets rows as "   NAME  TEXT", TEXT wrapped to helpWidth in a
// column after the widest name up to limit; a longer name puts its text on
// the next line. limit 0 puts the text right after the name.
func columns(rows [][2]string, limit int) string {
	col := 0
	for _, r := range rows {
		if n := len(r[0]); n <= limit && n > col {
			col = n
		}
	}
	const indent = 3
	var b strings.Builder
	for _, r := range rows {
		start := indent + col + 2
		b.WriteString(strings.Repeat(" ", indent) + r[0])
		if limit == 0 {
			start = indent + len(r[0]) + 1
			b.WriteByte(' ')
		} else if len(r[0]) > col {
			b.WriteString("\n" + strings.Repeat(" ", start))
		} else {
			b.WriteString(strings.Repeat(" ", start-indent-len(r[0])))
		}
		lines := wrapText(r[1], helpWidth-start, "")
		b.WriteString(strings.Join(lines, "\n"+strings.Repeat(" ", start)))
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// unquoteUsage returns the placeholder a usage names in backquotes
// ("only ports of bridge `+"`BR`"+`" names BR) and the usage without them.
func unquoteUsage(usage string) (name, text string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	name = usage[i+1 : i+1+j]
	return name, usage[:i] + name + usage[i+1+j+1:]
}
