// Command cryptshift re-encrypts a block device in place, crash-safe:
// from one dm-crypt mapping (or plaintext) to another, window by window,
// resumable after a pause and recoverable after a crash. Run
// `cryptshift --help` for the commands and the exit codes.
package main

import "os"

func main() {
	ignoreSIGPIPE()
	hardenProcess = true
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
