package luks

import (
	"fmt"
	"io"

	"github.com/cryptshift/cryptshift/errclass"
)

// Volume is a LUKS volume whose header was read and validated. Exactly one
// of V1 and V2 is set.
type Volume struct {
	Version int
	UUID    string
	V1      *LUKS1
	V2      *LUKS2
	// InConversion: the LUKS1 volume carries cryptshift's in-conversion
	// mark (OpenMarked; Open refuses such a volume with ErrInConversion).
	InConversion bool
	dev          io.ReaderAt
	size         int64
}

// Open reads and validates the LUKS header of a device of size bytes. A
// device without a LUKS header is an errclass.Device error; a LUKS header
// cryptsetup would refuse is errclass.Header. Open only reads.
func Open(dev io.ReaderAt, size int64) (*Volume, error) {
	b := make([]byte, binHeaderSize)
	n, err := readAt(dev, b, 0, size)
	if err != nil {
		return nil, err
	}
	v := &Volume{dev: dev, size: size}
	if n >= phdrSize && string(b[:6]) == string(magic1st) && b[6] == 0 && b[7] == 1 {
		if v.V1, err = parseLUKS1(b, size); err != nil {
			return nil, err
		}
		v.Version, v.UUID = 1, v.V1.UUID
		return v, nil
	}
	if n >= 8 && string(b[:6]) == string(magic1st) && b[6] == 0 && b[7] == 1 {
		return nil, fmt.Errorf("%w: device too small for a LUKS1 header", errclass.Device)
	}
	// cryptsetup reads the version before it looks for a LUKS2 secondary
	// copy: an unknown one ends the load.
	if n >= 8 && string(b[:6]) == string(magic1st) && (b[6] != 0 || b[7] != 2) {
		return nil, fmt.Errorf("%w: unsupported LUKS version %d", errclass.Header, int(b[6])<<8|int(b[7]))
	}
	if n >= 1024 && string(b[:6]) == string(magicReenc) && b[6] == 0 && b[7] == 1 {
		if markedBy(b) {
			return nil, fmt.Errorf("%w: %w (magic LUKS\\xde\\xad): stock cryptsetup does not open it; run cryptshift recover", errclass.Device, ErrInConversion)
		}
		return nil, fmt.Errorf("%w: LUKS1 volume in the middle of a cryptsetup-reencrypt run (magic LUKS\\xde\\xad): finish it with cryptsetup first", errclass.Device)
	}
	if string(b[:6]) != string(magic1st) {
		// No primary: LUKS2 only if a secondary copy is where one may be.
		sig, err := Detect(dev, size)
		if err != nil {
			return nil, err
		}
		if sig == nil || sig.Version != 2 || sig.Offset == 0 {
			return nil, fmt.Errorf("%w: no LUKS header", errclass.Device)
		}
	}
	if v.V2, err = readLUKS2(dev, size); err != nil {
		return nil, err
	}
	v.Version, v.UUID = 2, v.V2.UUID
	return v, nil
}

// UnknownRequirements lists the LUKS2 mandatory requirements cryptsetup
// 2.6 does not know. cryptsetup then refuses to activate the volume or
// change its header, and so must any writer here; reading and unlocking
// remain possible.
func (v *Volume) UnknownRequirements() []string {
	if v.V2 == nil {
		return nil
	}
	return unknownRequirements(v.V2.Meta)
}

// Requirements lists every LUKS2 mandatory requirement (none for LUKS1).
func (v *Volume) Requirements() []string {
	if v.V2 == nil {
		return nil
	}
	return append([]string(nil), v.V2.Meta.Config.Mandatory...)
}
