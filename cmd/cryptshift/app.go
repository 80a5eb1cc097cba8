package main

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/urfave/cli/v2"
)

// reported marks an error whose message was already printed (a pause
// explains itself), so run only turns it into an exit code.
type reported struct{ err error }

func (r reported) Error() string { return r.err.Error() }
func (r reported) Unwrap() error { return r.err }

// syncWriter serialises writes from the engine's progress callback and the
// signal watcher, which share stderr.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// run is main without the process exit, so tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, &syncWriter{w: stderr})
	err := app.Run(args)
	keysOf(app).wipe()
	if err == nil {
		return exitOK
	}
	var r reported
	if !errors.As(err, &r) {
		fmt.Fprintln(stderr, errorLine(err))
	}
	return exitCode(err)
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "cryptshift",
		Usage: "re-encrypt a block device in place, crash-safe",
		Description: "Converts a device from one dm-crypt mapping (or plaintext) to another while it is not\n" +
			"in use. The conversion records its progress on the device (or in --metadata) and can be\n" +
			"paused with Ctrl-C, resumed by running the same command again, and recovered after a crash.",
		Writer:                stdout,
		ErrWriter:             stderr,
		Version:               versionString(),
		CustomAppHelpTemplate: cli.AppHelpTemplate + "\n" + errclass.Help(),
		// Exit codes are cryptshift's own (see exitcodes.go): the library
		// must neither exit nor print usage errors itself.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErr("unknown command %q (see cryptshift --help)", c.Args().First())
			}
			_ = cli.ShowAppHelp(c)
			return usageErr("no command given")
		},
		Commands: []*cli.Command{
			convertCommand(stderr),
			recoverCommand(stderr),
			verifyCommand(),
			statusCommand(),
			demoCommand(stderr),
			benchCommand(stderr), benchChildCommand(),
			genDocsCommand(),
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = onUsageError
	}
	app.Metadata = map[string]any{keyFilesMeta: &keyFiles{warn: stderr}}
	return app
}

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return usageErr("%v", err)
}

// deviceArg returns the single DEVICE argument. Flags must come before it:
// the flag parser stops at the first argument, so a flag after DEVICE would
// silently not apply, and for a conversion that is not a detail.
func deviceArg(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 1:
		return c.Args().First(), nil
	case 0:
		return "", usageErr("%s: missing DEVICE", c.Command.Name)
	}
	return "", usageErr("%s: expected one DEVICE, got %q (options go before DEVICE)", c.Command.Name, c.Args().Slice())
}
