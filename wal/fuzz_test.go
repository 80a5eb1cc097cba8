package wal

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzLogScan scans arbitrary log area contents, from head 0 expecting
// sequence number 1. The area is as long as the input, so that areas of
// odd sizes are covered too. With reseal set, the first block gets a valid
// crc and MAC, so that the fuzzer gets past them to the field checks.
func FuzzLogScan(f *testing.F) {
	seed := func(sizes ...int) []byte {
		a := newArea(f, 12*BlockSize)
		l := a.log(testKey, 0, 1)
		for i, n := range sizes {
			if _, err := l.Append(TypeJournal, uint64(i), bytes.Repeat([]byte{byte(i + 1)}, n)); err != nil {
				f.Fatal(err)
			}
		}
		tail, _ := l.Tail()
		return bytes.Clone(a.bytes()[:tail+BlockSize])
	}
	f.Add(seed(0, 1), true, false)
	f.Add(seed(4096, 5), false, false)
	f.Add(seed(0)[:200], true, true)
	f.Fuzz(func(t *testing.T, data []byte, withKey, resealFirst bool) {
		size := int64(len(data))
		if resealFirst {
			size = max(size, 2*BlockSize) // zero-padded, so short inputs reach the checks
		}
		a := newArea(t, size)
		copy(a.bytes(), data)
		if resealFirst {
			reseal(a.bytes()[:BlockSize], testKey)
		}
		key := testKey
		if !withKey {
			key = nil
		}
		l := a.log(key, 0, 1)
		recs, err := l.Scan()
		if err != nil {
			t.Fatalf("Scan of a readable area: %v", err)
		}
		var pos int64
		for i, r := range recs {
			end := int64(r.Offset) + EncodedLen(int(r.PayloadLen))
			if int64(r.Offset) != pos || r.Seq != uint64(i)+1 || end > a.size {
				t.Fatalf("record %d: %+v in an area of %d bytes, expected at %d", i, r, a.size, pos)
			}
			if r.Authentic != withKey {
				t.Fatalf("record %d: Authentic %v with key %v", i, r.Authentic, withKey)
			}
			p, err := l.Payload(r)
			if err != nil || uint64(len(p)) != r.PayloadLen || withKey && l.payloadSum(r.Seq, p) != r.PayloadHash {
				t.Fatalf("record %d: payload does not match its hash: %v", i, err)
			}
			pos = end
		}
		if tail, seq := l.Tail(); tail != pos || seq != uint64(len(recs))+1 {
			t.Fatalf("Scan left the log at %d, seq %d, after %d records ending at %d", tail, seq, len(recs), pos)
		}
		if withKey {
			// A keyless reader sees at least what the keyed one does.
			keyless, err := a.log(nil, 0, 1).Scan()
			if err != nil || len(keyless) < len(recs) {
				t.Fatalf("keyless scan: %d records, %v; keyed: %d", len(keyless), err, len(recs))
			}
			for i := range recs {
				k := keyless[i]
				k.Authentic = true
				if !reflect.DeepEqual(k, recs[i]) {
					t.Fatalf("record %d differs between keyed and keyless scans", i)
				}
			}
		}
		a.guardsIntact(t)
	})
}
