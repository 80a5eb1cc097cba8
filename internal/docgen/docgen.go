// Package docgen writes manual pages and shell completions from a
// urfave/cli command tree, so that they cannot drift from the flags: the
// command definitions are the only source, and CI regenerates and diffs.
// Output is deterministic (no dates, no versions) for the same reason.
package docgen

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Section is an extra manual page section (EXIT STATUS, FILES), the same
// on every page.
type Section struct {
	Title string
	Items []Item
}

// Item is one tagged paragraph of a Section.
type Item struct {
	Term, Text string
}

// Doc is what the pages need beyond the command tree.
type Doc struct {
	Section  string // manual section, "8"
	Manual   string // the centre header, "System Administration"
	Sections []Section
	SeeAlso  []string // other pages, "cryptsetup(8)"
}

// Files returns every generated file by its path under the output folder:
// man/NAME.SECTION for the program and each visible command, and
// completions/ for bash, zsh and fish.
func Files(app *cli.App, d Doc) map[string][]byte {
	files := map[string][]byte{
		"man/" + app.Name + "." + d.Section: []byte(appPage(app, d)),
		"completions/" + app.Name + ".bash": []byte(bash(app)),
		"completions/_" + app.Name:          []byte(zsh(app)),
		"completions/" + app.Name + ".fish": []byte(fish(app)),
	}
	for _, c := range visibleCommands(app) {
		files["man/"+app.Name+"-"+c.Name+"."+d.Section] = []byte(commandPage(app, c, d))
	}
	return files
}

func visibleCommands(app *cli.App) []*cli.Command {
	var cs []*cli.Command
	for _, c := range app.Commands {
		if !c.Hidden && c.Name != "help" {
			cs = append(cs, c)
		}
	}
	return cs
}

// flag is what the generators need of one cli.Flag.
type flag struct {
	names       []string // as typed: "--old-key-file", "-h"
	placeholder string   // "PATH", "" for a switch
	usage       string
	def         string // default shown, "" for none
}

func flagsOf(fs []cli.Flag) []flag {
	var out []flag
	for _, f := range fs {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		var fl flag
		for _, n := range f.Names() {
			if len(n) == 1 {
				fl.names = append(fl.names, "-"+n)
			} else {
				fl.names = append(fl.names, "--"+n)
			}
		}
		if d, ok := f.(cli.DocGenerationFlag); ok {
			fl.placeholder, fl.usage = unquoteUsage(d.GetUsage())
			if d.TakesValue() {
				if fl.placeholder == "" {
					fl.placeholder = "VALUE"
				}
				if def := strings.Trim(d.GetDefaultText(), `"`); def != "" {
					fl.def = def
				}
			} else {
				fl.placeholder = ""
			}
		}
		out = append(out, fl)
	}
	return out
}

// takesPath says whether a flag's value is best completed with file names.
func (f flag) takesPath() bool {
	switch f.placeholder {
	case "PATH", "FILE", "DEVICE", "DIR":
		return true
	}
	return false
}

// helpFlag is the --help every command has (urfave/cli adds it at run time).
var helpFlag = flag{names: []string{"--help", "-h"}, usage: "show help"}

func commandFlags(c *cli.Command) []flag {
	return append(flagsOf(c.Flags), helpFlag)
}

func appFlags(app *cli.App) []flag {
	fs := append(flagsOf(app.Flags), helpFlag)
	if !app.HideVersion {
		fs = append(fs, flag{names: []string{"--version", "-v"}, usage: "print the version"})
	}
	return fs
}

// unquoteUsage splits "`PATH` of the key" into its placeholder and the
// text without the backquotes, the convention urfave/cli's help follows.
func unquoteUsage(usage string) (placeholder, text string) {
	before, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok := strings.Cut(rest, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}
