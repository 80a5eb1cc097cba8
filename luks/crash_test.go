package luks

import (
	"bytes"
	"encoding/json"
	"fmt"
	mrand "math/rand"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/tests/fault"
)

// crashBase is a small LUKS2 image (16 KiB copies, 1 MiB of keyslots, data
// at 1.5 MiB) with two keyslots, and how its copies start out before the
// commit under test.
type crashBase struct {
	name string
	// prepare edits the image's copies before the commit: a stale copy
	// holds an older header (other JSON, lower seqid), a damaged one fails
	// its checksum.
	prepare func(t *testing.T, b []byte)
}

func crashBases() []crashBase {
	older := func(t *testing.T, b []byte, off int) {
		t.Helper()
		js := bytes.TrimRight(b[off+binHeaderSize:off+hdrSizeOf(b)], "\x00")
		tok, _ := marshalPlain(map[string]any{"type": "x-older-header", "keyslots": []string{}})
		js, err := editJSON(js, []string{"tokens", "9"}, tok)
		if err != nil {
			t.Fatal(err)
		}
		setCopy(t, b, off, js, 0)
	}
	bump := func(t *testing.T, b []byte, off int) {
		t.Helper()
		setCopy(t, b, off, nil, binaryU64(b[off+16:])+1)
	}
	return []crashBase{
		{"both current", func(*testing.T, []byte) {}},
		// cryptsetup repairs a stale copy on every load, so it rarely
		// writes over one; this writer must not assume that.
		{"secondary stale", func(t *testing.T, b []byte) { older(t, b, hdrSizeOf(b)); bump(t, b, 0) }},
		{"primary stale", func(t *testing.T, b []byte) { older(t, b, 0); bump(t, b, hdrSizeOf(b)) }},
		{"primary damaged", func(t *testing.T, b []byte) { b[binHeaderSize+5] ^= 0x40 }},
		{"secondary damaged", func(t *testing.T, b []byte) { b[hdrSizeOf(b)+binHeaderSize+5] ^= 0x40 }},
	}
}

func binaryU64(b []byte) uint64 {
	var n uint64
	for _, c := range b[:8] {
		n = n<<8 | uint64(c)
	}
	return n
}

// crashOp is a header rewrite on dev: it returns the passphrases that must
// open a keyslot under the new header and under the old one.
type crashOp struct {
	name string
	run  func(t *testing.T, dev blockdev.Device, h *LUKS2, vk []byte) (newPass, oldPass [][]byte)
}

func crashOps() []crashOp {
	return []crashOp{
		{"add digest", func(t *testing.T, dev blockdev.Device, h *LUKS2, vk []byte) ([][]byte, [][]byte) {
			d := mustDraft(t, h)
			if _, err := d.AddDigest([]byte("another volume key"), "sha256", 1000); err != nil {
				t.Fatal(err)
			}
			if err := CommitLUKS2(dev, d); err != nil {
				t.Fatal(err)
			}
			return [][]byte{[]byte("crash 0")}, [][]byte{[]byte("crash 0")}
		}},
		{"add keyslot", func(t *testing.T, dev blockdev.Device, h *LUKS2, vk []byte) ([][]byte, [][]byte) {
			d := mustDraft(t, h)
			mat, err := d.AddKeyslot(AnySlot, vk, []byte("added"), h.Meta.Keyslots[0].Spec(), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer mat.Wipe()
			if err := WriteKeyslotMaterial(dev, mat); err != nil {
				t.Fatal(err)
			}
			if err := CommitLUKS2(dev, d); err != nil {
				t.Fatal(err)
			}
			return [][]byte{[]byte("added"), []byte("crash 1")}, [][]byte{[]byte("crash 1")}
		}},
		{"remove and wipe keyslot", func(t *testing.T, dev blockdev.Device, h *LUKS2, vk []byte) ([][]byte, [][]byte) {
			d := mustDraft(t, h)
			area, err := d.RemoveKeyslot(1)
			if err != nil {
				t.Fatal(err)
			}
			if err := CommitLUKS2(dev, d); err != nil {
				t.Fatal(err)
			}
			if err := WipeKeyslotArea(dev, area); err != nil {
				t.Fatal(err)
			}
			return [][]byte{[]byte("crash 0")}, [][]byte{[]byte("crash 0"), []byte("crash 1")}
		}},
	}
}

func mustDraft(t *testing.T, h *LUKS2) *Draft2 {
	t.Helper()
	d, err := h.Draft()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pick is the header a reader selected: its seqid and JSON text.
type pick struct {
	seq  uint64
	json string
}

// TestLUKS2CommitCrash crashes every header rewrite at every write and
// flush, with every subset of the pending writes and a sample of torn and
// shorn sectors, for copies that start current, stale or damaged. In each
// crash state the reader picks the old header or the new one, never a mix
// or an older one; the new one whenever a complete new copy reached the
// medium; and the keyslots of the header it picks open (their material is
// durable first, and a wipe comes only after the commit). A sample of the
// states goes to stock cryptsetup, which must pick the same header.
func TestLUKS2CommitCrash(t *testing.T) {
	im := format(t, 2<<20, "crash 0", join([]string{"--type", "luks2", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m", "--offset", "3072"}, pbkdf2Cheap)...)
	writeFile(t, im.pass+"1", []byte("crash 1"))
	runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, im.pass + "1"})...)
	fresh := readImage(t, im.path)
	vk := unlockKey(t, im.path, []byte("crash 0"))
	opts := fault.EnumOptions{MaxStates: 96, MaxSubset: 5, Torn: true, Shorn: true, Seed: 10}
	torn, stride := 16, 7
	if testing.Short() {
		opts.MaxStates, torn, stride = 24, 4, 13
	}
	var states, stock int
	for _, base := range crashBases() {
		for _, op := range crashOps() {
			t.Run(base.name+"/"+op.name, func(t *testing.T) {
				img := bytes.Clone(fresh)
				base.prepare(t, img)
				v, err := openBytes(t, img)
				if err != nil {
					t.Fatalf("base image: %v", err)
				}
				old := pick{v.V2.SeqID, string(v.V2.Meta.Raw)}
				dom := fault.NewDomain()
				disk := dom.NewDisk(img)
				newPass, oldPass := op.run(t, disk, v.V2, vk)
				after, err := openBytes(t, disk.Contents())
				if err != nil {
					t.Fatal(err)
				}
				nw := pick{after.V2.SeqID, string(after.V2.Meta.Raw)}
				if nw.seq != old.seq+1 || nw.json == old.json {
					t.Fatalf("the operation made seqid %d from %d, JSON changed: %v", nw.seq, old.seq, nw.json != old.json)
				}
				hs := int(after.V2.HdrSize)
				newCopies := [2][]byte{disk.Contents()[:hs], disk.Contents()[hs : 2*hs]}
				sampled := 0
				for i, st := range crashStates(t, dom, opts, torn) {
					imgs, err := dom.Image(st.K, st.Choice)
					if err != nil {
						t.Fatal(err)
					}
					b := imgs[0]
					states++
					got, err := checkCrashState(t, b, old, nw, newCopies, hs, newPass, oldPass)
					if err != nil {
						t.Fatalf("%s: %v", st.Desc, err)
					}
					// A sample, torn states among them, to stock cryptsetup.
					if i%stride == 0 {
						stock++
						sampled++
						checkStockPick(t, b, got, fmt.Sprintf("%s-%d", filepath.Base(t.Name()), i), st.Desc)
					}
				}
				if sampled == 0 {
					t.Fatal("no crash state went to cryptsetup")
				}
			})
		}
	}
	t.Logf("%d crash states, %d of them judged by stock cryptsetup", states, stock)
}

func checkCrashState(t *testing.T, b []byte, old, nw pick, newCopies [2][]byte, hs int, newPass, oldPass [][]byte) (pick, error) {
	t.Helper()
	v, err := openBytes(t, b)
	if err != nil {
		return pick{}, fmt.Errorf("no header readable after the crash: %w", err)
	}
	got := pick{v.V2.SeqID, string(v.V2.Meta.Raw)}
	if got != old && got != nw {
		return got, fmt.Errorf("the reader picked seqid %d, neither the old header (%d) nor the new one (%d)", got.seq, old.seq, nw.seq)
	}
	for i, c := range newCopies {
		if bytes.Equal(b[i*hs:(i+1)*hs], c) && got != nw {
			return got, fmt.Errorf("copy %d holds the complete new header, but the reader picked the old one", i)
		}
	}
	passes := oldPass
	if got == nw {
		passes = newPass
	}
	for _, p := range passes {
		u, err := v.Unlock(p, AnySlot)
		if err != nil {
			return got, fmt.Errorf("passphrase %q opens nothing under the header with seqid %d: %w", p, got.seq, err)
		}
		u.Wipe()
	}
	return got, nil
}

// crashStates lists the enumerator's states at every crash point and, for
// each pending write, a bounded sample of random torn-sector mixes of it
// (the others persisted, or lost).
func crashStates(t *testing.T, dom *fault.Domain, opts fault.EnumOptions, torn int) []fault.State {
	t.Helper()
	rng := mrand.New(mrand.NewSource(int64(opts.Seed)))
	var out []fault.State
	for _, cp := range dom.CrashPoints() {
		sts, err := dom.States(cp.K, opts)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sts...)
		pending, err := dom.Pending(cp.K)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range pending {
			op := dom.Op(w)
			ns := int((op.Off+int64(len(op.Data))-1)/fault.SectorSize - op.Off/fault.SectorSize + 1)
			for n := 0; n < torn && ns > 1; n++ {
				var nw []int
				for s := 0; s < ns; s++ {
					if rng.Intn(2) == 0 {
						nw = append(nw, s)
					}
				}
				var ws []fault.Persist
				for j, o := range pending {
					switch {
					case j == i:
						ws = append(ws, fault.Persist{Op: o, Torn: true, New: nw})
					case n%2 == 0:
						ws = append(ws, fault.Persist{Op: o})
					}
				}
				out = append(out, fault.State{K: cp.K, Choice: fault.Choice{Writes: ws}, Desc: dom.Describe(cp.K, fault.Choice{Writes: ws})})
			}
		}
	}
	return out
}

// checkStockPick writes the crash state to an image and asks stock
// cryptsetup which header is current.
func checkStockPick(t *testing.T, b []byte, want pick, name, desc string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".img")
	writeImage(t, p, b)
	f := dumpFields(runCS(t, "luksDump", p))
	if f["Epoch"] != strconv.FormatUint(want.seq, 10) {
		t.Fatalf("%s: cryptsetup's epoch %s, the reader's seqid %d", desc, f["Epoch"], want.seq)
	}
	var x, y any
	if err := json.Unmarshal([]byte(runCS(t, "luksDump", "--dump-json-metadata", p)), &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want.json), &y); err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, mustJSON(t, x), mustJSON(t, y)) {
		t.Fatalf("%s: cryptsetup's metadata differs from the header the reader picked", desc)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLUKS2CommitCrashMutants: the crash check of TestLUKS2CommitCrash
// finds the faults this writer's order avoids: cryptsetup's fixed
// primary-first order over a stale secondary (a torn primary rolls back to
// the stale header), keyslot material not flushed before the header that
// points at it, and a wipe before the commit that drops the keyslot.
func TestLUKS2CommitCrashMutants(t *testing.T) {
	im := format(t, 2<<20, "crash 0", join([]string{"--type", "luks2", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m", "--offset", "3072"}, pbkdf2Cheap)...)
	writeFile(t, im.pass+"1", []byte("crash 1"))
	runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, im.pass + "1"})...)
	fresh := readImage(t, im.path)
	vk := unlockKey(t, im.path, []byte("crash 0"))
	bases := crashBases()
	mutants := []struct {
		name    string
		base    crashBase
		newPass [][]byte
		oldPass [][]byte
		run     func(t *testing.T, dev blockdev.Device, h *LUKS2)
	}{
		{"primary first over a stale secondary", bases[1], nil, nil, func(t *testing.T, dev blockdev.Device, h *LUKS2) {
			d := mustDraft(t, h)
			if _, err := d.AddDigest([]byte("another volume key"), "sha256", 1000); err != nil {
				t.Fatal(err)
			}
			copies, err := EncodeLUKS2(d, h.SeqID+1)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range copies {
				dev.WriteAt(c, int64(i)*int64(h.HdrSize))
				dev.Flush()
			}
		}},
		{"material not flushed", bases[0], [][]byte{[]byte("added")}, nil, func(t *testing.T, dev blockdev.Device, h *LUKS2) {
			d := mustDraft(t, h)
			mat, err := d.AddKeyslot(AnySlot, vk, []byte("added"), h.Meta.Keyslots[0].Spec(), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer mat.Wipe()
			dev.WriteAt(mat.Bytes(), mat.Offset)
			if err := CommitLUKS2(dev, d); err != nil {
				t.Fatal(err)
			}
		}},
		{"wipe before commit", bases[0], nil, [][]byte{[]byte("crash 1")}, func(t *testing.T, dev blockdev.Device, h *LUKS2) {
			d := mustDraft(t, h)
			area, err := d.RemoveKeyslot(1)
			if err != nil {
				t.Fatal(err)
			}
			if err := WipeKeyslotArea(dev, area); err != nil {
				t.Fatal(err)
			}
			if err := CommitLUKS2(dev, d); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			img := bytes.Clone(fresh)
			m.base.prepare(t, img)
			v, err := openBytes(t, img)
			if err != nil {
				t.Fatal(err)
			}
			old := pick{v.V2.SeqID, string(v.V2.Meta.Raw)}
			dom := fault.NewDomain()
			disk := dom.NewDisk(img)
			m.run(t, disk, v.V2)
			after, err := openBytes(t, disk.Contents())
			if err != nil {
				t.Fatal(err)
			}
			nw := pick{after.V2.SeqID, string(after.V2.Meta.Raw)}
			hs := int(after.V2.HdrSize)
			newCopies := [2][]byte{disk.Contents()[:hs], disk.Contents()[hs : 2*hs]}
			for _, st := range crashStates(t, dom, fault.EnumOptions{MaxStates: 96, Torn: true, Shorn: true, Seed: 10}, 16) {
				imgs, err := dom.Image(st.K, st.Choice)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := checkCrashState(t, imgs[0], old, nw, newCopies, hs, m.newPass, m.oldPass); err != nil {
					t.Logf("caught: %s: %v", st.Desc, err)
					return
				}
			}
			t.Fatal("no crash state shows the fault")
		})
	}
}
