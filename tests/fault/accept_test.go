package fault

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/header"
)

// TestCrashAcceptDamage crashes the two writes that accept a window as it
// is (docs/DESIGN.md, "Accepting damage"): recover --accept-damage of the
// window resilience none had in flight, and of a converted window changed
// while paused. At every crash point of the accepting recovery, the state
// it leaves must either be accepted again by a rerun or already be
// accepted; the accepted window must keep exactly the bytes it had, and
// the resumed conversion must convert every other window and never that
// one.
func TestCrashAcceptDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sc     scenario
		change func(f *fixture, img []byte) // makes the state to accept
	}{
		{"none-in-flight", scenario{mode: "none", old: xts512, nw: essiv512, window: 12 * kib, windows: 3}, func(f *fixture, img []byte) {
			// Window 1 was in flight: its first half converted.
			half := bytes.Clone(f.plain[12*kib : 18*kib])
			f.newC.Encrypt(half, 12*kib/512)
			copy(img[12*kib:], half)
		}},
		{"changed-while-paused", scenario{mode: "journal", old: xts512, nw: xts4096, sepMeta: true, window: 12 * kib, windows: 3}, func(f *fixture, img []byte) {
			img[12*kib+100] ^= 0x40 // in window 1, the last converted
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.sc)
			imgs := f.images()
			tgt := f.memTarget(imgs)
			stopAt := uint64(2)
			ctx, cancel := context.WithCancel(context.Background())
			hooks := &engine.Hooks{AfterWindow: func(done uint64) {
				if done == stopAt {
					if tc.sc.mode == "none" {
						panic(errStop) // a crash after window 0 and 1
					}
					cancel() // a clean pause after windows 0 and 1
				}
			}}
			if tc.sc.mode == "none" {
				stopAt = 1
			}
			func() {
				defer func() {
					if r := recover(); r != nil && r != errStop {
						panic(r)
					}
				}()
				engine.Convert(ctx, tgt, f.cfg, f.options(nil, hooks))
			}()
			cancel()
			tc.change(f, imgs[0])
			w := int64(1)
			accepted := bytes.Clone(imgs[0][f.oldOff+w*tc.sc.window : f.oldOff+(w+1)*tc.sc.window])

			check := func(hooks *engine.Hooks) (int, error) {
				dom, rt := f.domainTarget(imgs)
				res, err := engine.Recover(context.Background(), rt, f.sc.old.key(), f.sc.nw.key(), engine.RecoverOptions{AcceptDamage: true}, f.options(nil, hooks))
				if err != nil || res.Damaged == nil || res.Header.Done != 2 {
					return 0, fmt.Errorf("accepting recover: %+v, %v", res, err)
				}
				states := 0
				for k := 1; k <= dom.Ops(); k++ {
					sts, err := dom.States(k, EnumOptions{Torn: true})
					if err != nil {
						return states, err
					}
					for _, st := range sts {
						states++
						img2, err := dom.Image(k, st.Choice)
						if err != nil {
							return states, err
						}
						if err := resumeAccepted(f, img2, tc.sc.window, w, accepted); err != nil {
							return states, fmt.Errorf("%s: %w", st.Desc, err)
						}
					}
				}
				return states, nil
			}
			states, err := check(nil)
			if err != nil {
				t.Fatal(err)
			}
			// The same recovery without the flush that must precede its
			// checkpoint is caught. (Accepting a changed window commits
			// nothing after its entry: losing the entry only makes the
			// next run refuse again, so that flush has no mutant.)
			if tc.sc.mode == "none" {
				if _, err := check(&engine.Hooks{DropFlush: map[string]bool{"accept-damage": true}}); err == nil {
					t.Fatal("dropping flush accept-damage went unnoticed")
				}
			}
			if states == 0 {
				t.Fatal("no crash state")
			}
			t.Logf("fault: accept/%s: %d crash states", tc.name, states)
		})
	}
}

// resumeAccepted reruns the accepting recovery on a crash state, resumes
// the conversion, and checks every window: the accepted one (w) as it was
// accepted, the others converted.
func resumeAccepted(f *fixture, imgs [][]byte, window, w int64, accepted []byte) error {
	t2 := f.memTarget(imgs)
	r2, err := engine.Recover(context.Background(), t2, f.sc.old.key(), f.sc.nw.key(), engine.RecoverOptions{AcceptDamage: true}, f.options(nil, nil))
	if err != nil || r2.Header.Done != 2 {
		return fmt.Errorf("rerun of the accepting recover: %v", err)
	}
	cres, err := engine.Convert(context.Background(), t2, f.cfg, f.options(nil, nil))
	if err != nil || cres.Header.State != header.StateComplete {
		return fmt.Errorf("resume after accepting: %v", err)
	}
	for win := int64(0); win < int64(f.windows); win++ {
		lo := int64(cres.Header.NewOffset) + win*window
		got := imgs[0][lo : lo+window]
		if win == w {
			if !bytes.Equal(got, accepted) {
				return fmt.Errorf("the accepted window was changed")
			}
			continue
		}
		p := bytes.Clone(got)
		f.newC.Decrypt(p, uint64(win*window)/512)
		if !bytes.Equal(p, f.plain[win*window:(win+1)*window]) {
			return fmt.Errorf("window %d lost", win)
		}
	}
	return nil
}

type stop struct{}

var errStop = stop{}
