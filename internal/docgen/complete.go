package docgen

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// The completions are static: they list commands and flags and complete
// file names where a flag takes a PATH (or the command a DEVICE), without
// running the program, so they work for a binary that is not installed
// yet and cost nothing at the prompt.

const generated = "# Generated from the command definitions; do not edit.\n"

func flagNames(fs []flag) []string {
	var ns []string
	for _, f := range fs {
		ns = append(ns, f.names...)
	}
	return ns
}

func bash(app *cli.App) string {
	var b strings.Builder
	fn := "_" + strings.ReplaceAll(app.Name, "-", "_")
	fmt.Fprintf(&b, "# bash completion for %s\n%s", app.Name, generated)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString("\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd= i\n")
	b.WriteString("\tfor ((i = 1; i < COMP_CWORD; i++)); do\n")
	b.WriteString("\t\tcase ${COMP_WORDS[i]} in\n\t\t-*) ;;\n\t\t*) cmd=${COMP_WORDS[i]}; break ;;\n\t\tesac\n\tdone\n")
	b.WriteString("\tcase $cmd in\n")
	var names []string
	for _, c := range visibleCommands(app) {
		names = append(names, c.Names()...)
	}
	fmt.Fprintf(&b, "\t'') COMPREPLY=($(compgen -W '%s' -- \"$cur\")); return ;;\n", strings.Join(append(names, flagNames(appFlags(app))...), " "))
	for _, c := range visibleCommands(app) {
		fs := commandFlags(c)
		fmt.Fprintf(&b, "\t%s)\n", strings.Join(c.Names(), "|"))
		var paths, values []string
		for _, f := range fs {
			switch {
			case f.takesPath():
				paths = append(paths, f.names...)
			case f.placeholder != "":
				values = append(values, f.names...)
			}
		}
		b.WriteString("\t\tcase $prev in\n")
		if len(paths) > 0 {
			fmt.Fprintf(&b, "\t\t%s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", strings.Join(paths, "|"))
		}
		if len(values) > 0 {
			fmt.Fprintf(&b, "\t\t%s) COMPREPLY=(); return ;;\n", strings.Join(values, "|"))
		}
		b.WriteString("\t\tesac\n")
		fmt.Fprintf(&b, "\t\tcase $cur in\n\t\t-*) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(flagNames(fs), " "))
		if c.ArgsUsage != "" {
			b.WriteString("\t\t*) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n")
		}
		b.WriteString("\t\tesac\n\t\t;;\n")
	}
	b.WriteString("\tesac\n}\n")
	fmt.Fprintf(&b, "complete -o filenames -F %s %s\n", fn, app.Name)
	return b.String()
}

// zq quotes s for a zsh _arguments spec inside single quotes: the
// description must not close the brackets or the quote.
func zq(s string) string {
	r := strings.NewReplacer("'", `'\''`, "[", `\[`, "]", `\]`, ":", `\:`)
	return r.Replace(s)
}

func zsh(app *cli.App) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#compdef %s\n%s", app.Name, generated)
	fn := "_" + strings.ReplaceAll(app.Name, "-", "_")
	fmt.Fprintf(&b, "%s() {\n\tlocal curcontext=$curcontext state line\n\tlocal -a commands\n\tcommands=(\n", fn)
	for _, c := range visibleCommands(app) {
		fmt.Fprintf(&b, "\t\t'%s:%s'\n", c.Name, zq(c.Usage))
	}
	b.WriteString("\t)\n\t_arguments -C \\\n")
	for _, f := range appFlags(app) {
		for _, n := range f.names {
			fmt.Fprintf(&b, "\t\t'(- *)%s[%s]' \\\n", n, zq(f.usage))
		}
	}
	b.WriteString("\t\t'1: :->command' \\\n\t\t'*:: :->args'\n")
	b.WriteString("\tcase $state in\n\tcommand) _describe -t commands command commands ;;\n\targs)\n\t\tcase $words[1] in\n")
	for _, c := range visibleCommands(app) {
		fmt.Fprintf(&b, "\t\t%s)\n\t\t\t_arguments \\\n", strings.Join(c.Names(), "|"))
		for _, f := range commandFlags(c) {
			for _, n := range f.names {
				switch {
				case f.placeholder == "":
					fmt.Fprintf(&b, "\t\t\t\t'%s[%s]' \\\n", n, zq(f.usage))
				case f.takesPath():
					fmt.Fprintf(&b, "\t\t\t\t'%s=[%s]:%s:_files' \\\n", n, zq(f.usage), f.placeholder)
				default:
					fmt.Fprintf(&b, "\t\t\t\t'%s=[%s]:%s: ' \\\n", n, zq(f.usage), f.placeholder)
				}
			}
		}
		if c.ArgsUsage != "" {
			fmt.Fprintf(&b, "\t\t\t\t'*:%s:_files'\n", zq(c.ArgsUsage))
		} else {
			b.WriteString("\t\t\t\t'*: :'\n")
		}
		b.WriteString("\t\t\t;;\n")
	}
	b.WriteString("\t\tesac\n\t\t;;\n\tesac\n}\n")
	fmt.Fprintf(&b, "%s \"$@\"\n", fn)
	return b.String()
}

// fq quotes s for fish inside single quotes.
func fq(s string) string {
	return strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s)
}

func fish(app *cli.App) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# fish completion for %s\n%s", app.Name, generated)
	var names []string
	for _, c := range visibleCommands(app) {
		names = append(names, c.Names()...)
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "complete -c %s -f\n", app.Name)
	top := "__fish_use_subcommand"
	for _, f := range appFlags(app) {
		fmt.Fprintf(&b, "complete -c %s -n %s%s -d '%s'\n", app.Name, top, fishNames(f), fq(f.usage))
	}
	for _, c := range visibleCommands(app) {
		fmt.Fprintf(&b, "complete -c %s -n %s -a %s -d '%s'\n", app.Name, top, c.Name, fq(c.Usage))
	}
	for _, c := range visibleCommands(app) {
		cond := "'__fish_seen_subcommand_from " + strings.Join(c.Names(), " ") + "'"
		for _, f := range commandFlags(c) {
			arg := ""
			switch {
			case f.takesPath():
				arg = " -r -F"
			case f.placeholder != "":
				arg = " -x"
			}
			fmt.Fprintf(&b, "complete -c %s -n %s%s%s -d '%s'\n", app.Name, cond, fishNames(f), arg, fq(f.usage))
		}
		if c.ArgsUsage != "" {
			fmt.Fprintf(&b, "complete -c %s -n %s -F\n", app.Name, cond)
		}
	}
	return b.String()
}

func fishNames(f flag) string {
	var s string
	for _, n := range f.names {
		if strings.HasPrefix(n, "--") {
			s += " -l " + n[2:]
		} else {
			s += " -s " + n[1:]
		}
	}
	return s
}
