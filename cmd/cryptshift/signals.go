package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// interrupter turns the first SIGINT or SIGTERM into a cancelled context:
// the engine finishes the window in hand and records a clean pause. Later
// signals are reported and ignored, because aborting mid-window would
// leave it for recovery, and a clean pause is only moments away.
type interrupter struct {
	ctx     context.Context
	cancel  context.CancelFunc
	sigs    chan os.Signal
	handled chan int // count of signals handled so far, for the test hook
	done    chan struct{}
}

func watchSignals(parent context.Context, out io.Writer) *interrupter {
	ctx, cancel := context.WithCancel(parent)
	in := &interrupter{ctx: ctx, cancel: cancel, sigs: make(chan os.Signal, 4),
		handled: make(chan int, 8), done: make(chan struct{})}
	signal.Notify(in.sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		defer close(in.done)
		n := 0
		for sig := range in.sigs {
			n++
			if n == 1 {
				fmt.Fprintf(out, "\nReceived %v: finishing the current window, then pausing.\n", sig)
				cancel()
			} else {
				fmt.Fprintf(out, "\nReceived %v again: ignored; pausing as soon as the current window is safely written.\n", sig)
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
