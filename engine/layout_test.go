package engine

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/wal"
)

func off(n int64) *int64 { return &n }

func TestPlanLayout(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name string
		r    layoutRequest
		want error // class, or nil
		chk  func(t *testing.T, l layout)
	}{
		{"metadata at the end", layoutRequest{DevSize: 256 * mib, MetaOnData: true, OldSector: 512, NewSector: 512, Mode: header.ModeJournal}, nil,
			func(t *testing.T, l layout) {
				if l.MetaOff != 256*mib-DefaultMetaSize || l.DataSize != l.MetaOff || l.OldOff != 0 || l.NewOff != 0 || l.Window != DefaultWindow {
					t.Errorf("%+v", l)
				}
			}},
		{"shift down", layoutRequest{DevSize: 64 * mib, MetaOnData: true, MetaSize: 4 * mib, OldSector: 512, NewSector: 4096, Mode: header.ModeShift, Window: mib, DataOffset: off(8 * mib)}, nil,
			func(t *testing.T, l layout) {
				if l.NewOff != 7*mib || l.Descending || l.DataSize != 60*mib-8*mib {
					t.Errorf("%+v", l)
				}
			}},
		{"shift up without --data-size", layoutRequest{DevSize: 64 * mib, MetaOnData: true, MetaSize: 4 * mib, OldSector: 512, NewSector: 512, Mode: header.ModeShift, Window: mib}, errclass.Device, nil},
		{"shift up with --data-size", layoutRequest{DevSize: 64 * mib, MetaOnData: true, MetaSize: 4 * mib, OldSector: 512, NewSector: 512, Mode: header.ModeShift, Window: mib, DataSize: 50 * mib}, nil,
			func(t *testing.T, l layout) {
				if l.NewOff != mib || !l.Descending || l.DataSize != 50*mib {
					t.Errorf("%+v", l)
				}
			}},
		{"separate metadata, odd device", layoutRequest{DevSize: 64*mib + 512, MetaDevSize: 4 * mib, OldSector: 512, NewSector: 512, Mode: header.ModeChecksum, Window: mib}, errclass.Device, nil},
		{"separate metadata, odd device, --data-size", layoutRequest{DevSize: 64*mib + 512, MetaDevSize: 4 * mib, OldSector: 512, NewSector: 512, Mode: header.ModeChecksum, Window: mib, DataSize: 64 * mib}, nil,
			func(t *testing.T, l layout) {
				if l.MetaOff != 0 || l.MetaSize != 4*mib || l.DataSize != 64*mib {
					t.Errorf("%+v", l)
				}
			}},
		{"unaligned data offset", layoutRequest{DevSize: 64 * mib, MetaOnData: true, MetaSize: 4 * mib, OldSector: 512, NewSector: 512, Mode: header.ModeJournal, Window: mib, DataOffset: off(1536)}, errclass.Device, nil},
		{"data offset beyond the end", layoutRequest{DevSize: 64 * mib, MetaOnData: true, MetaSize: 4 * mib, OldSector: 512, NewSector: 512, Mode: header.ModeJournal, Window: mib, DataOffset: off(100 * mib)}, errclass.Usage, nil},
		{"window not a multiple of the sector", layoutRequest{DevSize: 64 * mib, MetaOnData: true, OldSector: 4096, NewSector: 512, Mode: header.ModeJournal, Window: 6144}, errclass.Usage, nil},
		{"metadata area too small", layoutRequest{DevSize: 64 * mib, MetaOnData: true, MetaSize: 4096, OldSector: 512, NewSector: 512, Mode: header.ModeJournal}, errclass.Usage, nil},
		{"metadata device too small", layoutRequest{DevSize: 64 * mib, MetaDevSize: 4096, OldSector: 512, NewSector: 512, Mode: header.ModeJournal}, errclass.Device, nil},
		{"device smaller than the metadata area", layoutRequest{DevSize: 8 * mib, MetaOnData: true, OldSector: 512, NewSector: 512, Mode: header.ModeJournal}, errclass.Device, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := planLayout(tc.r)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("want %v, got %v", tc.want, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkLayout(t, tc.r, l)
			tc.chk(t, l)
		})
	}
}

// TestPlanLayoutProperties: every layout planned for random requests keeps
// the data inside the device and clear of the metadata area, converts up
// to the end of what it may (no silent remainder), and fits its log.
func TestPlanLayoutProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 12))
	sizes := []int{512, 1024, 2048, 4096}
	modes := []header.Mode{header.ModeJournal, header.ModeChecksum, header.ModeShift, header.ModeNone}
	planned := 0
	for i := 0; i < 5000; i++ {
		req := layoutRequest{DevSize: int64(r.IntN(512)+1) << 20, MetaOnData: r.IntN(2) == 0,
			OldSector: sizes[r.IntN(4)], NewSector: sizes[r.IntN(4)], Mode: modes[r.IntN(4)]}
		req.DevSize += int64(r.IntN(8)) * 512
		if !req.MetaOnData {
			req.MetaDevSize = int64(r.IntN(64)+1) << 20
		} else if r.IntN(2) == 0 {
			req.MetaSize = int64(r.IntN(32)+1) << 20
		}
		if r.IntN(2) == 0 {
			req.Window = int64(r.IntN(16)+1) << 16
		}
		if r.IntN(2) == 0 {
			req.DataOffset = off(int64(r.IntN(64)) * 4096)
		}
		l, err := planLayout(req)
		if err != nil {
			continue
		}
		planned++
		checkLayout(t, req, l)
	}
	if planned < 500 {
		t.Fatalf("only %d of 5000 random requests planned", planned)
	}
}

func checkLayout(t *testing.T, r layoutRequest, l layout) {
	t.Helper()
	unit := int64(max(r.OldSector, r.NewSector, 4096))
	limit := r.DevSize
	if r.MetaOnData {
		limit = l.MetaOff
		if l.MetaOff+l.MetaSize != r.DevSize {
			t.Errorf("%+v -> %+v: metadata area does not end the device", r, l)
		}
	} else if l.MetaOff+l.MetaSize > r.MetaDevSize {
		t.Errorf("%+v -> %+v: metadata area beyond its device", r, l)
	}
	for _, o := range []int64{l.OldOff, l.NewOff} {
		if o < 0 || o+l.DataSize > limit {
			t.Errorf("%+v -> %+v: data [%d, %d) beyond %d", r, l, o, o+l.DataSize, limit)
		}
	}
	if l.DataSize%unit != 0 || l.Window%unit != 0 {
		t.Errorf("%+v -> %+v: sizes not multiples of %d", r, l, unit)
	}
	if r.DataSize == 0 && max(l.OldOff, l.NewOff)+l.DataSize != limit {
		t.Errorf("%+v -> %+v: without --data-size the data stops short of %d", r, l, limit)
	}
	nWin := (l.DataSize + l.Window - 1) / l.Window
	if l.DigestSize < nWin*header.DigestEntrySize || l.LogOff != l.MetaOff+l.DigestSize ||
		l.LogOff+l.LogSize > l.MetaOff+l.MetaSize-2*header.Size || l.LogSize < 2*wal.EncodedLen(0) {
		t.Errorf("%+v -> %+v: digest table or log misplaced", r, l)
	}
}
