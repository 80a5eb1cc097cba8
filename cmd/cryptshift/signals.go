package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// pauseSignals are the signals that pause a conversion. SIGHUP is among
// them because a closed SSH session or terminal sends it, and dying
// mid-window there is a crash the user did not ask for; a process started
// with SIGHUP ignored (nohup) keeps ignoring it.
func pauseSignals() []os.Signal {
	sigs := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	return sigs
}

// ignoreSIGPIPE makes a write to a closed pipe (`| head`, a `| tee` that
// died of the same Ctrl-C) fail with EPIPE instead of killing the
// process: progress and pause messages are not worth a window.
func ignoreSIGPIPE() { signal.Ignore(syscall.SIGPIPE) }

// interrupter turns the first SIGINT, SIGTERM or SIGHUP into a cancelled
// context: the engine finishes the window in hand and records a clean
// pause. Later signals are reported and ignored, because aborting
// mid-window would leave it for recovery, and a clean pause is only
// moments away.
type interrupter struct {
	ctx     context.Context
	cancel  context.CancelFunc
	sigs    chan os.Signal
	handled chan int // count of signals handled so far, for the test hook
	done    chan struct{}
}

// watchSignals reports signals as plain lines on out.
func watchSignals(parent context.Context, out io.Writer) *interrupter {
	return watchSignalsTo(parent, func(msg string) { fmt.Fprintf(out, "\n%s\n", msg) })
}

// watchSignalsTo reports each signal through say, which renders it in
// the progress format in use (one JSON record with --progress json).
// Write errors are the writer's business: a closed pipe must not stop
// the pause.
func watchSignalsTo(parent context.Context, say func(msg string)) *interrupter {
	ctx, cancel := context.WithCancel(parent)
	in := &interrupter{ctx: ctx, cancel: cancel, sigs: make(chan os.Signal, 4),
		handled: make(chan int, 8), done: make(chan struct{})}
	signal.Notify(in.sigs, pauseSignals()...)
	go func() {
		defer close(in.done)
		n := 0
		for sig := range in.sigs {
			n++
			if n == 1 {
				// Cancel before saying so: the message may block on a full
				// pipe whose reader is gone, and the pause must not wait.
				cancel()
				say(fmt.Sprintf("Received %v: finishing the current window, then pausing.", sig))
			} else {
				say(fmt.Sprintf("Received %v again: ignored; pausing as soon as the current window is safely written.", sig))
			}
			select {
			case in.handled <- n:
			default:
			}
		}
	}()
	return in
}

// stop restores default signal handling and waits for the watcher to exit.
func (in *interrupter) stop() {
	signal.Stop(in.sigs)
	close(in.sigs)
	<-in.done
	in.cancel()
}
