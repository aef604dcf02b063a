//go:build !urfave_cli_no_docs

package commands

import (
	_ "embed"
	"regexp"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
)

// manSections are the hand-written parts of hairpinctl(8): exit status,
// files, examples from the runbook, see also.
//
//go:embed man/sections.md
var manSections string

// manDate is the .TH date: fixed, so regenerating the page is
// reproducible; bump it when the page changes materially.
const manDate = "2026-11-26"

// examplesBlock matches an "EXAMPLES:" block of a command's Description,
// so the man page can set it as a literal block instead of a paragraph.
var examplesBlock = regexp.MustCompile(`(?m)^EXAMPLES:\n((?:   .*\n?)+)`)

// ManPage renders hairpinctl(8) from the CLI definitions (urfave/cli's
// markdown, as ToMan does) followed by the hand-written sections. The
// shipped binary is built without the generator (urfave_cli_no_docs); a
// test regenerates man/hairpinctl.8 and fails on drift.
func ManPage() string {
	app := NewApp("")
	md, err := app.ToMarkdown()
	if err != nil {
		// ToMarkdown fails only on a broken built-in template.
		panic(err)
	}
	md = examplesBlock.ReplaceAllStringFunc(md, func(block string) string {
		body := strings.TrimPrefix(block, "EXAMPLES:\n")
		return "Examples:\n\n```\n" + strings.TrimRight(dedent(body), "\n") + "\n```\n"
	})
	md = "% hairpinctl 8 " + manDate + " hairpinctl\n\n" + md + "\n" + manSections
	return string(md2man.Render([]byte(md)))
}

func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "   ")
	}
	return strings.Join(lines, "\n")
}
