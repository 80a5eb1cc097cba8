package kcipher

import (
	"bytes"
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// kmsg follows the kernel log from the moment it is opened, to give the
// kernel's own reason when it refuses a table: the ioctl only says EINVAL,
// and device-mapper logs why ("device-mapper: table: 253:3: crypt: Error
// allocating crypto tfm (-ENOENT)").
// It uses the raw descriptor: an os.File would park a non-blocking read
// in the poller instead of returning EAGAIN at the end of the log.
type kmsg struct{ fd int }

// maxRecords bounds how many log records reason reads.
const maxRecords = 256

func openKmsg() *kmsg {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &kmsg{fd: -1} // best effort: no reason, only the ioctl's error
	}
	if _, err := unix.Seek(fd, 0, 2); err != nil { // SEEK_END: only what comes next
		unix.Close(fd)
		return &kmsg{fd: -1}
	}
	return &kmsg{fd: fd}
}

// reason returns device-mapper's table messages logged since openKmsg,
// joined, without their prefixes; "" when there are none.
func (k *kmsg) reason() string {
	if k.fd < 0 {
		return ""
	}
	var out []string
	buf := make([]byte, 8192)
	// Bounded: a busy log, or one that keeps reporting overwritten
	// records (EPIPE), must not keep the refusal waiting.
	for range maxRecords {
		n, err := unix.Read(k.fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records were overwritten meanwhile; go on
		}
		if err != nil || n <= 0 {
			break
		}
		rec := buf[:n]
		// "<prio>,<seq>,<usec>,<flags>[,...];<message>\n[continuation]"
		if i := bytes.IndexByte(rec, ';'); i >= 0 {
			rec = rec[i+1:]
		}
		msg := strings.TrimSpace(string(bytes.SplitN(rec, []byte{'\n'}, 2)[0]))
		if rest, ok := strings.CutPrefix(msg, "device-mapper: table: "); ok {
			// Drop the "253:3: " device number.
			if i := strings.Index(rest, ": "); i >= 0 {
				rest = rest[i+2:]
			}
			out = append(out, rest)
		}
	}
	return strings.Join(out, "; ")
}

func (k *kmsg) close() {
	if k.fd >= 0 {
		unix.Close(k.fd)
	}
}
