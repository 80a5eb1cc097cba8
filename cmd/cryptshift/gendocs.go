package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/docgen"
)

// genDocsCommand writes the manual pages and shell completions into
// DIR/man and DIR/completions (dist/ in the repository), replacing what
// is there. It is hidden: it serves the build (`go run ./cmd/cryptshift
// gen-docs dist`), not the admin, and lives here because the pages are made
// from this binary's own command tree. Its code is a few kilobytes; the
// roff it writes needs no library.
func genDocsCommand() *cli.Command {
	return &cli.Command{
		Name:      "gen-docs",
		Hidden:    true,
		Usage:     "write manual pages and shell completions from the command definitions",
		ArgsUsage: "DIR",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr("gen-docs: expected one DIR")
			}
			return writeDocs(c.Args().First(), docgen.Files(newApp(io.Discard, io.Discard), manDoc()))
		},
	}
}

// manDoc is what the pages say beyond the flags: exit codes and files.
func manDoc() docgen.Doc {
	exit := docgen.Section{Title: "EXIT STATUS", Items: []docgen.Item{
		{Term: strconv.Itoa(exitOK), Text: "success"},
		{Term: strconv.Itoa(exitInternal), Text: "internal error (a bug, an error of no known class, or an online conversion process killed by a signal)"},
	}}
	for _, e := range errclass.Table {
		exit.Items = append(exit.Items, docgen.Item{Term: strconv.Itoa(e.Code), Text: e.What})
	}
	files := docgen.Section{Title: "FILES", Items: []docgen.Item{
		{Term: defaultTab, Text: "The conversions `recover --all` finishes and activates at boot, one per line:\n" +
			"  NAME  DEVICE  OLD-KEY-FILE  NEW-KEY-FILE  [metadata=PATH]\n" +
			"with - as the key file of a plaintext side. The systemd unit cryptshift-recover.service and the initramfs-tools hook read it."},
		{Term: "/etc/crypttab", Text: "While a device is being converted its line must be disabled (noauto) or removed: cryptsetup would set it up with one key for all of it. " +
			"When the conversion is complete, `cryptshift status` prints the options of the new line."},
	}}
	return docgen.Doc{
		Section:  "8",
		Manual:   "System Administration",
		Sections: []docgen.Section{exit, files},
		SeeAlso:  []string{"cryptsetup(8)", "crypttab(5)", "dmsetup(8)"},
	}
}

// writeDocs replaces DIR/man and DIR/completions with files: they are
// generated whole, so a page of a command that no longer exists goes too.
func writeDocs(dir string, files map[string][]byte) error {
	for _, sub := range []string{"man", "completions"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return fmt.Errorf("gen-docs: %w", err)
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("gen-docs: %w", err)
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return fmt.Errorf("gen-docs: %w", err)
		}
	}
	return nil
}
