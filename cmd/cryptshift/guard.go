package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/online"
)

// onlineWorkerEnv marks the process that runs an online conversion under
// a guard (guardOnline); it is set by the guard, never by users.
const onlineWorkerEnv = "CRYPTSHIFT_ONLINE_WORKER"

// errWorkerKilled: the online worker died from a signal (OOM killer, kill
// -9); the guard recovered the device, and the same command resumes.
var errWorkerKilled = errors.New("the conversion process was killed")

// guardOnline runs an online conversion in a child process and stays
// behind it. A process killed while it holds a window leaves application
// I/O to that window waiting, for as long as nobody runs `recover
// --activate`: on a server, a hung filesystem. The guard does that at
// once. It locks its memory first, so that it never needs a page from the
// filesystem it may be converting, and forwards SIGINT and SIGTERM (the
// worker is in its own process group, so a terminal's Ctrl-C reaches it
// once, through the guard). Only a guard killed together with its worker
// leaves the window to `recover --activate`.
func guardOnline(c *cli.Context, stderr io.Writer, name, dev string) error {
	if _, err := dm.Table(name); err != nil {
		return fmt.Errorf("%w: --online %s: %w", errclass.Device, name, err)
	}
	if err := dm.LockMemory(); err != nil {
		return fmt.Errorf("%w: lock memory (needed so the tool cannot stall on the window it holds): %w", errclass.Device, err)
	}
	defer dm.UnlockMemory()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("online: find own executable: %w", err)
	}
	cmd := workerCommand(exe, os.Args[1:], os.Environ())
	// The process's own files, not the app's writers: the worker decides
	// from them whether it draws a progress bar on a terminal.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("online: start the worker: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
wait:
	for {
		select {
		case s := <-sigs:
			// The worker pauses at the first and says so; a hangup
			// means the same as a terminate to it.
			if s == syscall.SIGHUP {
				s = syscall.SIGTERM
			}
			_ = cmd.Process.Signal(s)
		case werr = <-done:
			break wait
		}
	}
	var ee *exec.ExitError
	if !errors.As(werr, &ee) {
		if werr != nil {
			return fmt.Errorf("online: worker: %w", werr)
		}
		return nil
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		// The worker reported its own outcome; exit as it did.
		return reported{exitCodeError(ee.ExitCode())}
	}
	fmt.Fprintf(stderr, "cryptshift: the conversion process was killed (%v); recovering %s so that I/O waiting on it goes on\n", ws.Signal(), name)
	msg, herr := healOnline(c, name, dev)
	if herr != nil {
		return fmt.Errorf("%w (%v), and recovering %s failed: %w; run `cryptshift recover --activate %s` with both keys", errWorkerKilled, ws.Signal(), name, herr, name)
	}
	return fmt.Errorf("%w (%v); %s; run the same command to resume", errWorkerKilled, ws.Signal(), msg)
}

// healOnline is `recover --activate NAME` for a worker that just died,
// with the keys found as a resume finds them (online.Heal).
func healOnline(c *cli.Context, name, dev string) (string, error) {
	if luksVolume(dev) != nil {
		return healLUKS(c, name, dev)
	}
	cfg, err := configFromFlags(c)
	if err != nil {
		return "", err
	}
	return online.Heal(c.Context, onlineRequest(c, c.App.ErrWriter, name, dev, 0, cfg), cfg)
}

// workerCommand is the online worker: the guard's own arguments and
// environment, plus the worker mark, and nothing else. Keys never travel
// this way: argv and the environment are readable by other processes
// (/proc/PID/cmdline is world-readable, environ to the same user); the
// worker reads the key files itself, as the guard would.
func workerCommand(exe string, args, env []string) *exec.Cmd {
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append([]string(nil), env...), onlineWorkerEnv+"=1")
	return cmd
}

// exitCodeError carries a worker's exit status through the guard.
type exitCodeError int

func (e exitCodeError) Error() string { return "exit status " + strconv.Itoa(int(e)) }
