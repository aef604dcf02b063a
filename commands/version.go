package commands

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the version",
	Description: `EXAMPLES:
   hairpinctl version
   hairpinctl version -o json`,
	Flags: []cli.Flag{outputFlag()},
	Action: func(c *cli.Context) error {
		if c.NArg() > 0 {
			return usageErrorf("version: takes no arguments (got %q)", c.Args().First())
		}
		return printVersion(c)
	},
}

// printVersion is the version command's output, and --version's.
func printVersion(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	v := struct {
		Version   string `json:"version"`
		GoVersion string `json:"goVersion"`
		Platform  string `json:"platform"`
	}{c.App.Version, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}
	if format == "json" {
		return writeJSON(c.App.Writer, v)
	}
	_, err = fmt.Fprintf(c.App.Writer, "hairpinctl %s (%s %s)\n", v.Version, v.GoVersion, v.Platform)
	return err
}
