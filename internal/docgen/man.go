package docgen

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

func appPage(app *cli.App, d Doc) string {
	var b strings.Builder
	header(&b, app.Name, d)
	section(&b, "NAME")
	fmt.Fprintf(&b, "%s \\- %s\n", esc(app.Name), esc(app.Usage))
	section(&b, "SYNOPSIS")
	fmt.Fprintf(&b, "\\fB%s\\fR [\\fB\\-\\-help\\fR] [\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]\n", esc(app.Name))
	if app.Description != "" {
		section(&b, "DESCRIPTION")
		text(&b, app.Description, ".PP")
	}
	section(&b, "COMMANDS")
	for _, c := range visibleCommands(app) {
		b.WriteString(".TP\n")
		fmt.Fprintf(&b, "\\fB%s\\fR\n%s. See \\fB%s\\-%s\\fR(%s).\n", esc(c.Name), esc(c.Usage), esc(app.Name), esc(c.Name), d.Section)
	}
	section(&b, "OPTIONS")
	options(&b, appFlags(app))
	tail(&b, app, d, "")
	return b.String()
}

func commandPage(app *cli.App, c *cli.Command, d Doc) string {
	var b strings.Builder
	page := app.Name + "-" + c.Name
	header(&b, page, d)
	section(&b, "NAME")
	fmt.Fprintf(&b, "%s \\- %s\n", esc(page), esc(c.Usage))
	section(&b, "SYNOPSIS")
	fmt.Fprintf(&b, "\\fB%s %s\\fR [\\fIOPTIONS\\fR]", esc(app.Name), esc(c.Name))
	if c.ArgsUsage != "" {
		fmt.Fprintf(&b, " \\fI%s\\fR", esc(c.ArgsUsage))
	}
	b.WriteString("\n")
	if c.Description != "" {
		section(&b, "DESCRIPTION")
		text(&b, c.Description, ".PP")
	}
	section(&b, "OPTIONS")
	b.WriteString("Options go before the arguments.\n")
	options(&b, commandFlags(c))
	tail(&b, app, d, page)
	return b.String()
}

func header(b *strings.Builder, page string, d Doc) {
	fmt.Fprintf(b, ".\\\" Generated from the command definitions; do not edit.\n")
	fmt.Fprintf(b, ".TH %s %s \"\" \"%s\" \"%s\"\n", strings.ToUpper(esc(page)), d.Section, "cryptshift", d.Manual)
}

func section(b *strings.Builder, title string) {
	fmt.Fprintf(b, ".SH %s\n", title)
}

func options(b *strings.Builder, fs []flag) {
	for _, f := range fs {
		b.WriteString(".TP\n")
		for i, n := range f.names {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(b, "\\fB%s\\fR", esc(n))
		}
		if f.placeholder != "" {
			fmt.Fprintf(b, " \\fI%s\\fR", esc(f.placeholder))
		}
		b.WriteString("\n")
		b.WriteString(esc(f.usage))
		if f.def != "" {
			fmt.Fprintf(b, " (default: %s)", esc(f.def))
		}
		b.WriteString("\n")
	}
}

// tail writes the shared sections and SEE ALSO, leaving out the page itself.
func tail(b *strings.Builder, app *cli.App, d Doc, self string) {
	for _, s := range d.Sections {
		section(b, s.Title)
		for _, it := range s.Items {
			fmt.Fprintf(b, ".TP\n\\fB%s\\fR\n", esc(it.Term))
			text(b, it.Text, ".IP")
		}
	}
	var refs []string
	if self != "" {
		refs = append(refs, fmt.Sprintf("\\fB%s\\fR(%s)", esc(app.Name), d.Section))
	}
	for _, c := range visibleCommands(app) {
		if p := app.Name + "-" + c.Name; p != self {
			refs = append(refs, fmt.Sprintf("\\fB%s\\fR(%s)", esc(p), d.Section))
		}
	}
	for _, r := range d.SeeAlso {
		name, sec, _ := strings.Cut(strings.TrimSuffix(r, ")"), "(")
		refs = append(refs, fmt.Sprintf("\\fB%s\\fR(%s)", esc(name), sec))
	}
	section(b, "SEE ALSO")
	b.WriteString(strings.Join(refs, ",\n") + "\n")
}

// text renders help text written for a terminal: blank lines separate
// paragraphs (sep starts the next one), indented lines are shown as they are (a file format, a
// command), other lines are filled. `code` is set in bold.
func text(b *strings.Builder, s, sep string) {
	paras := strings.Split(strings.TrimSpace(s), "\n\n")
	for i, p := range paras {
		if i > 0 {
			b.WriteString(sep + "\n")
		}
		inVerbatim := false
		for _, line := range strings.Split(p, "\n") {
			verbatim := strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")
			if verbatim != inVerbatim {
				if verbatim {
					b.WriteString(".RS\n.nf\n")
				} else {
					b.WriteString(".fi\n.RE\n")
				}
				inVerbatim = verbatim
			}
			if verbatim {
				line = strings.TrimSpace(line)
			}
			b.WriteString(code(esc(line)) + "\n")
		}
		if inVerbatim {
			b.WriteString(".fi\n.RE\n")
		}
	}
}

// code turns `x` into bold x.
func code(s string) string {
	parts := strings.Split(s, "`")
	if len(parts)%2 == 0 { // unbalanced: leave as typed
		return s
	}
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 1 {
			b.WriteString("\\fB" + p + "\\fR")
		} else {
			b.WriteString(p)
		}
	}
	return b.String()
}

// esc makes s safe as roff text: backslashes and hyphens (so that options
// print as ASCII minus signs and can be searched for), and a leading dot
// or quote that would start a request.
func esc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
