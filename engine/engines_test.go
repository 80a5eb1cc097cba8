package engine

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// The header records which engines converted windows: userspace for
// sectorcipher's ciphers, kernel for ones that can fail as the kernel's do,
// only the ciphered sides, and both after a resume under the other engine.
func TestHeaderRecordsEngines(t *testing.T) {
	kernelish := func() CipherMaker {
		var calls atomic.Int64
		return failingMaker(&calls, 1<<62)
	}
	for _, tc := range []struct {
		name     string
		old, new side
		ciphers  CipherMaker
		want     header.Engines
	}{
		{"userspace", sides[1], sides[2], nil, header.EngineUserspace},
		{"kernel", sides[1], sides[5], kernelish(), header.EngineKernel},
		{"plaintext side counts for nothing", sides[0], sides[2], kernelish(), header.EngineKernel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.old, tc.new, 0, 5*testWindow+4096, 4<<20)
			res, err := Convert(context.Background(), f.target(), f.config("journal"), Options{Ciphers: tc.ciphers})
			if err != nil {
				t.Fatal(err)
			}
			f.check(t, res.Header)
			st, err := ReadStatus(f.target())
			if err != nil {
				t.Fatal(err)
			}
			if res.Header.Engines != tc.want || st.Header.Engines != tc.want {
				t.Fatalf("engines %v in the result, %v on disk; want %v", res.Header.Engines, st.Header.Engines, tc.want)
			}
		})
	}
	t.Run("resumed under the other engine", func(t *testing.T) {
		f := newFixture(t, sides[1], sides[2], 0, 9*testWindow, 4<<20)
		var total atomic.Int64
		probe := newFixture(t, sides[1], sides[2], 0, 9*testWindow, 4<<20)
		if _, err := Convert(context.Background(), probe.target(), probe.config("shift"), Options{Ciphers: failingMaker(&total, 1<<62)}); err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int64
		_, err := Convert(context.Background(), f.target(), f.config("shift"), Options{Ciphers: failingMaker(&calls, total.Load()*2/3)})
		if !errors.Is(err, errclass.IO) {
			t.Fatalf("kernel-like run: %v, want its cipher to fail", err)
		}
		st, err := ReadStatus(f.target())
		if err != nil {
			t.Fatal(err)
		}
		if st.Header.Engines != header.EngineKernel {
			t.Fatalf("after the failed run: engines %v, want kernel", st.Header.Engines)
		}
		res, err := Convert(context.Background(), f.target(), f.config("shift"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		f.check(t, res.Header)
		if want := header.EngineUserspace | header.EngineKernel; res.Header.Engines != want {
			t.Fatalf("engines %v after the userspace resume, want %v", res.Header.Engines, want)
		}
	})
}
