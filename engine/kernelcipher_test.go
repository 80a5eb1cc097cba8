package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// failAfter is a cipher whose calls start failing, as a kernel cipher's
// can (kcipher): from call n on it scribbles on the buffer and reports
// the failure through Err.
type failAfter struct {
	sectorcipher.Cipher
	calls *atomic.Int64
	n     int64
	mu    sync.Mutex
	err   error
}

func (f *failAfter) run(buf []byte, sector uint64, enc bool) {
	if f.calls.Add(1) >= f.n {
		f.mu.Lock()
		f.err = errors.New("simulated kernel cipher failure")
		f.mu.Unlock()
		for i := range buf {
			buf[i] = 0xa5
		}
		return
	}
	if enc {
		f.Cipher.Encrypt(buf, sector)
	} else {
		f.Cipher.Decrypt(buf, sector)
	}
}

func (f *failAfter) Encrypt(buf []byte, s uint64) { f.run(buf, s, true) }
func (f *failAfter) Decrypt(buf []byte, s uint64) { f.run(buf, s, false) }
func (f *failAfter) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// TestFailingCipherWritesNothingWrong (K2 in docs/DESIGN.md): when the
// engine's cipher fails mid-conversion (first call, halfway, last call),
// Convert stops with an I/O error before it writes a window computed from
// the failed output, and a resume with working ciphers finishes with the
// right data. Resilience none is left out of the resume: an interrupted
// none window is reported as possibly damaged whatever happened to it.
func TestFailingCipherWritesNothingWrong(t *testing.T) {
	for _, mode := range []string{"journal", "checksum", "shift"} {
		// A clean run counts the cipher calls.
		var total atomic.Int64
		f := newFixture(t, sides[1], sides[2], 0, 5*testWindow+4096, 4<<20)
		if _, err := Convert(context.Background(), f.target(), f.config(mode), Options{Ciphers: failingMaker(&total, 1<<62)}); err != nil {
			t.Fatalf("%s: clean run: %v", mode, err)
		}
		for _, n := range []int64{1, total.Load() / 2, total.Load()} {
			t.Run(fmt.Sprintf("%s/%d-of-%d", mode, n, total.Load()), func(t *testing.T) {
				f := newFixture(t, sides[1], sides[2], 0, 5*testWindow+4096, 4<<20)
				var calls atomic.Int64
				_, err := Convert(context.Background(), f.target(), f.config(mode), Options{Ciphers: failingMaker(&calls, n)})
				if !errors.Is(err, errclass.IO) {
					t.Fatalf("convert with a failing cipher: %v", err)
				}
				res, err := Convert(context.Background(), f.target(), f.config(mode), Options{})
				if err != nil {
					t.Fatalf("resume with working ciphers: %v", err)
				}
				f.check(t, res.Header)
			})
		}
	}
}

// failingMaker makes ciphers that fail from the n-th call (counted over
// both) on.
func failingMaker(calls *atomic.Int64, n int64) CipherMaker {
	return func(m sectorcipher.Mapping, _ uint64) (sectorcipher.Cipher, error) {
		c, err := sectorcipher.New(m)
		if err != nil {
			return nil, err
		}
		return &failAfter{Cipher: c, calls: calls, n: n}, nil
	}
}
