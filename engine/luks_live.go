package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// LUKSLive is what an online conversion of a LUKS2 volume needs to know
// before it touches the device-mapper device serving it: which key the
// data segment maps now (proven by the header's digest, since a live
// table of stock cryptsetup names the key in the kernel keyring and does
// not hold it), and, for a conversion in progress, both keys and where its
// metadata lives.
type LUKSLive struct {
	UUID string
	// State is "none" (no conversion recorded), "converting" or "wiping".
	State string
	// Mapping (key included) is how segment 0 maps the data now, Offset
	// and Size in bytes; Digest is the digest that proved the key.
	Mapping      sectorcipher.Mapping
	Offset, Size int64
	Digest       int
	// Converting only: both keys (Mapping then holds the old one) and
	// the conversion's engine target.
	OldKey, NewKey []byte
	Target         Target
	wipe           func()
}

// Close wipes the keys.
func (l *LUKSLive) Close() {
	if l.wipe != nil {
		l.wipe()
	}
}

// OpenLUKS2Live unlocks a LUKS2 volume with the first passphrase that
// opens what its state needs: a keyslot of the data segment, or, in
// conversion, an old and a new keyslot. meta is the separate metadata of
// a conversion that has one.
func OpenLUKS2Live(dev, meta blockdev.Device, passes [][]byte) (*LUKSLive, error) {
	st, err := readLUKS(dev)
	if err != nil {
		return nil, err
	}
	out := &LUKSLive{UUID: st.v.UUID, State: "none"}
	if st.tok != nil {
		out.State = st.tok.State
	}
	if out.State == luksConverting {
		t, err := st.metaTarget(dev, meta)
		if err != nil {
			return nil, err
		}
		keys, err := st.unlockBoth(passes)
		if err != nil {
			return nil, err
		}
		m := keys.mapping
		out.Mapping, out.Offset, out.Size, out.Digest = m.Mapping, m.Offset, m.Size, keys.old.Digest
		out.OldKey, out.NewKey, out.Target, out.wipe = keys.old.Key.Bytes(), keys.new.Key.Bytes(), t, keys.wipe
		return out, nil
	}
	if len(passes) == 0 {
		return nil, fmt.Errorf("%w: give a keyslot's passphrase with --key-file", errclass.Usage)
	}
	var firstErr error
	for i, p := range passes {
		u, err := st.v.Unlock(p, luks.AnySlot)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("passphrase %d: %w", i+1, err)
			}
			continue
		}
		m, err := st.v.Mapping(u)
		if err != nil {
			u.Wipe()
			return nil, err
		}
		out.Mapping, out.Offset, out.Size, out.Digest, out.wipe = m.Mapping, m.Offset, m.Size, u.Digest, u.Wipe
		return out, nil
	}
	return nil, firstErr
}

// LUKS2Target is where the conversion recorded in dev's LUKS2 header
// keeps its metadata, without unlocking anything (an activation reads the
// keys once, and a KDF run costs seconds).
func LUKS2Target(dev, meta blockdev.Device) (Target, error) {
	st, err := readLUKS(dev)
	if err != nil {
		return Target{}, err
	}
	if st.tok == nil || st.tok.State != luksConverting {
		return Target{}, fmt.Errorf("%w: the LUKS2 volume has no cryptshift conversion in progress", errclass.Header)
	}
	return st.metaTarget(dev, meta)
}
