package docgen

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func testApp() *cli.App {
	return &cli.App{
		Name:        "tool",
		Usage:       "do things",
		Description: "First paragraph\nwrapped.\n\n  NAME  DEVICE\n.dot at a line start",
		Commands: []*cli.Command{
			{
				Name: "convert", Usage: "convert it", ArgsUsage: "DEVICE",
				Description: "Uses `tool status` first.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key-file", Usage: "`PATH` of the key"},
					&cli.StringFlag{Name: "window", Value: "8M", Usage: "`SIZE` of a window"},
					&cli.BoolFlag{Name: "force", Usage: "do it [really]: 'now'"},
				},
			},
			{Name: "secret", Hidden: true, Usage: "not for users"},
			{Name: "status", Usage: "show it"},
		},
	}
}

func testDoc() Doc {
	return Doc{Section: "8", Manual: "System Administration",
		Sections: []Section{{Title: "EXIT STATUS", Items: []Item{{Term: "0", Text: "success"}, {Term: "7", Text: "I/O error"}}}},
		SeeAlso:  []string{"cryptsetup(8)"}}
}

func TestFilesPerVisibleCommand(t *testing.T) {
	files := Files(testApp(), testDoc())
	for _, want := range []string{"man/tool.8", "man/tool-convert.8", "man/tool-status.8", "completions/tool.bash", "completions/_tool", "completions/tool.fish"} {
		if _, ok := files[want]; !ok {
			t.Errorf("no %s", want)
		}
	}
	if len(files) != 6 {
		t.Errorf("%d files, want 6 (the hidden command has no page)", len(files))
	}
	for n, b := range files {
		if strings.Contains(string(b), "secret") {
			t.Errorf("%s mentions the hidden command", n)
		}
	}
}

func TestCommandPage(t *testing.T) {
	page := string(Files(testApp(), testDoc())["man/tool-convert.8"])
	for _, want := range []string{
		".TH TOOL\\-CONVERT 8",
		"tool\\-convert \\- convert it",
		"\\fB\\-\\-key\\-file\\fR \\fIPATH\\fR\nPATH of the key\n",
		"SIZE of a window (default: 8M)",
		"\\fB\\-\\-force\\fR\ndo it",
		"\\fB\\-\\-help\\fR, \\fB\\-h\\fR",
		"Uses \\fBtool status\\fR first.",
		".SH EXIT STATUS\n.TP\n\\fB0\\fR\nsuccess\n.TP\n\\fB7\\fR\nI/O error\n",
		"\\fBtool\\fR(8),\n\\fBtool\\-status\\fR(8),\n\\fBcryptsetup\\fR(8)\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("convert page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "tool\\-convert\\fR(8)") {
		t.Error("the page refers to itself")
	}
}

func TestAppPageText(t *testing.T) {
	page := string(Files(testApp(), testDoc())["man/tool.8"])
	for _, want := range []string{
		"First paragraph\nwrapped.\n.PP\n.RS\n.nf\nNAME  DEVICE\n.fi\n.RE\n\\&.dot at a line start\n",
		".TP\n\\fBconvert\\fR\nconvert it. See \\fBtool\\-convert\\fR(8).\n",
		"\\fB\\-\\-version\\fR, \\fB\\-v\\fR",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("program page lacks %q:\n%s", want, page)
		}
	}
}

// The pages must render without groff warnings (lintian reports them).
func TestManRenders(t *testing.T) {
	if _, err := exec.LookPath("groff"); err != nil {
		t.Skip("groff not installed")
	}
	for n, b := range Files(testApp(), testDoc()) {
		if !strings.HasPrefix(n, "man/") {
			continue
		}
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(string(b))
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("%s: groff: %v %s", n, err, out)
		}
	}
}

// bashComplete runs the generated completion function as bash would for
// the words typed so far (the last one being completed).
func bashComplete(t *testing.T, script string, words ...string) []string {
	t.Helper()
	var q []string
	for _, w := range words {
		q = append(q, "'"+w+"'")
	}
	prog := script + "\nCOMP_WORDS=(" + strings.Join(q, " ") + ")\nCOMP_CWORD=" +
		strconv.Itoa(len(words)-1) + "\n_tool\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	out, err := exec.Command("bash", "-c", prog).Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	return strings.Fields(string(out))
}

func TestBashCompletion(t *testing.T) {
	script := string(Files(testApp(), testDoc())["completions/tool.bash"])
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"tool", "co"}, "convert"},
		{[]string{"tool", "--v"}, "--version"},
		{[]string{"tool", "convert", "--k"}, "--key-file"},
		{[]string{"tool", "convert", "--window", "8"}, ""},
		{[]string{"tool", "status", "--"}, "--help"},
	}
	for _, c := range cases {
		got := strings.Join(bashComplete(t, script, c.words...), " ")
		if got != c.want {
			t.Errorf("completing %q: got %q, want %q", c.words, got, c.want)
		}
	}
	// A PATH value completes file names: the script's own directory has this file.
	if got := bashComplete(t, script, "tool", "convert", "--key-file", "docgen_te"); len(got) != 1 || got[0] != "docgen_test.go" {
		t.Errorf("--key-file completes %q, want docgen_test.go", got)
	}
}

func TestZshAndFishQuoting(t *testing.T) {
	files := Files(testApp(), testDoc())
	if z := string(files["completions/_tool"]); !strings.Contains(z, `'--force[do it \[really\]\: '\''now'\'']'`) {
		t.Errorf("zsh spec of --force not quoted:\n%s", z)
	}
	if f := string(files["completions/tool.fish"]); !strings.Contains(f, `-l key-file -r -F -d 'PATH of the key'`) ||
		!strings.Contains(f, `-l force -d 'do it [really]: \'now\''`) {
		t.Errorf("fish completions:\n%s", f)
	}
}

// The zsh and fish scripts parse, and fish completes from them (zsh's
// completion system needs a terminal to drive; its syntax check is what
// runs here). scripts/test.sh installs both shells (tests/vm/install-deps.sh).
func TestZshAndFishScripts(t *testing.T) {
	files := Files(testApp(), testDoc())
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, files["completions/"+name], 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	zsh, fish := write("_tool"), write("tool.fish")
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("zsh not installed")
	}
	if out, err := exec.Command("zsh", "-n", zsh).CombinedOutput(); err != nil {
		t.Errorf("zsh -n: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("fish"); err != nil {
		t.Skip("fish not installed")
	}
	for words, want := range map[string]string{
		"tool con":            "convert\tconvert it",
		"tool convert --k":    "--key-file\tPATH of the key",
		"tool convert --forc": "--force\tdo it [really]: 'now'",
	} {
		out, err := exec.Command("fish", "--no-config", "-c", "source "+fish+"; complete -C '"+words+"'").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("fish completes %q to %q (%v), want %q", words, out, err, want)
		}
	}
}
